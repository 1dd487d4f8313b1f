"""CIFAR-100 loading and the tf.data input pipeline.

Training batches are a pure function of (seed, epoch, step): shuffling and
every augmentation (vit.augment) use stateless random ops, so a run resumed
from a checkpoint sees exactly the batches the uninterrupted run would have
seen.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from vit import augment as aug
from vit.config import AUGMENT_POLICIES

ENV_DATA_DIR = "CIFAR100_DIR"
# the archive keras.datasets.cifar100 downloads, and its sha256 as Keras checks it
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_SHA256 = "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"

# The 100 fine label names, in label order (as in the dataset's `meta` file),
# for models that come without a labels.json.
CIFAR100_LABELS = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can",
    "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud",
    "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant",
    "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree",
    "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate",
    "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"
]


class DataUnavailableError(RuntimeError):
    """CIFAR-100 is neither on disk nor downloadable; the message says what to do."""


@dataclass
class Cifar100:
    x_train: np.ndarray  # (50000, 32, 32, 3) uint8
    y_train: np.ndarray  # (50000,) int64 fine labels
    x_test: np.ndarray
    y_test: np.ndarray
    label_names: list


class _ArrayUnpickler(pickle.Unpickler):
    """Only rebuilds NumPy arrays: the CIFAR pickles need nothing else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _read_pickle(path: str) -> dict:
    with open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="latin1").load()


def read_cifar100_dir(data_dir: str) -> Cifar100:
    """Read the original python layout: `train`, `test`, `meta` pickles."""
    missing = [n for n in ("train", "test", "meta")
               if not os.path.isfile(os.path.join(data_dir, n))]
    if missing:
        raise DataUnavailableError(
            f"{data_dir} is not a CIFAR-100 python folder (missing {', '.join(missing)})")

    def split(name):
        d = _read_pickle(os.path.join(data_dir, name))
        x = np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), np.asarray(d["fine_labels"], np.int64)

    x_train, y_train = split("train")
    x_test, y_test = split("test")
    names = list(_read_pickle(os.path.join(data_dir, "meta"))["fine_label_names"])
    return Cifar100(x_train, y_train, x_test, y_test, names)


def load_cifar100(data_dir: str | None = None) -> Cifar100:
    """From `data_dir` (or $CIFAR100_DIR), else downloaded as Keras does.

    Raises DataUnavailableError with a one-line fix when offline.
    """
    data_dir = data_dir or os.environ.get(ENV_DATA_DIR)
    if data_dir:
        if os.path.isdir(os.path.join(data_dir, "cifar-100-python")):
            data_dir = os.path.join(data_dir, "cifar-100-python")
        return read_cifar100_dir(data_dir)
    import keras

    try:
        # what keras.datasets.cifar100.load_data fetches, but keeping the path Keras chose
        # (~/.keras, $KERAS_HOME, or /tmp/.keras when home is read-only) and reading once
        cache = keras.utils.get_file(fname="cifar-100-python-target", origin=CIFAR100_URL,
                                     extract=True, file_hash=CIFAR100_SHA256)
    except Exception as exc:  # noqa: BLE001 - urllib/socket errors vary by platform
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataUnavailableError(
            f"could not download CIFAR-100 ({reason}); pass --data-dir DIR (or set {ENV_DATA_DIR}) "
            "pointing at an extracted cifar-100-python folder") from None
    return read_cifar100_dir(os.path.join(cache, "cifar-100-python"))


def train_val_split(x, y, validation_split: float, seed: int = 0):
    """A fixed random hold-out carved from train (the test split stays untouched)."""
    n_val = int(round(len(x) * validation_split))
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def train_dataset(x, y, *, num_classes, batch_size, seed, start_epoch, epochs,
                  augment="basic", augment_ops=1, mixup_alpha=0.0, cutmix_alpha=0.0,
                  resample_prob=0.0):
    """Batches for epochs [start_epoch, epochs): (float32 pixels 0-255, one-hot).

    augment: "none", "basic" (crop + flip) or "trivial" (crop + flip, then
    `augment_ops` TrivialAugment ops per image). drop_remainder keeps shapes
    static (steps_per_epoch = len(x) // batch_size).
    """
    if augment not in AUGMENT_POLICIES:
        raise ValueError(f"unknown augment {augment!r} ({' | '.join(AUGMENT_POLICIES)})")
    n = len(x)
    images = tf.constant(x)
    onehot = tf.one_hot(tf.constant(y), num_classes)
    strong_ops = aug.trivial_augment_ops() if augment == "trivial" else None

    def batch_fn(epoch, step, idx):
        s = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + epoch, step])
        xb = tf.cast(tf.gather(images, idx), tf.float32)
        yb = tf.gather(onehot, idx)
        if augment != "none":
            xb = aug.random_crop_flip(xb, s)
        if strong_ops is not None:
            xb = aug.trivial_augment(xb, s, strong_ops, augment_ops)
        xb = aug.random_resample(xb, s, resample_prob)
        return aug.mix_batch(xb, yb, s, mixup_alpha, cutmix_alpha)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        idx = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)
        return idx.enumerate().map(lambda step, i: batch_fn(epoch, step, i),
                                   num_parallel_calls=tf.data.AUTOTUNE)

    return (tf.data.Dataset.range(start_epoch, epochs).flat_map(one_epoch)
            .prefetch(tf.data.AUTOTUNE))


def recipe_dataset(x, y, config, *, seed, start_epoch=0):
    """`train_dataset` with every recipe field taken from a `ViTConfig`.

    The one place that maps config to pipeline, so that train.py and the
    throughput benchmark cannot drift apart (a field passed in one and
    forgotten in the other trains a different recipe).
    """
    return train_dataset(x, y, num_classes=config.arch.num_classes, batch_size=config.recipe.batch_size,
                         seed=seed, start_epoch=start_epoch, epochs=config.recipe.epochs,
                         augment=config.recipe.augment, augment_ops=config.recipe.augment_ops,
                         mixup_alpha=config.recipe.mixup_alpha,
                         cutmix_alpha=config.recipe.cutmix_alpha,
                         resample_prob=config.recipe.resample_prob)


def eval_dataset(x, y, *, num_classes, batch_size):
    """Un-augmented batches in order, with one-hot labels."""
    onehot = tf.one_hot(y, num_classes)
    return (tf.data.Dataset.from_tensor_slices((x.astype(np.float32), onehot))
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))
