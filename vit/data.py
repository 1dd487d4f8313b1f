"""CIFAR-100 loading and the tf.data input pipeline.

Training batches are a pure function of (seed, epoch, step): shuffling and
augmentation use stateless random ops, so a run resumed from a checkpoint
sees exactly the batches the uninterrupted run would have seen. That holds
for augment="strong" too: Keras' RandAugment is fed per-batch seeds
(`BatchSeeds`) instead of its own stateful generator.

Beware that Keras' RandAugment is much harsher than the paper's policy at the
same "factor": at factor=0.5 it rotates by up to +-180 degrees, translates by
up to half the image, posterizes to 1-3 bits, and applies the same two ops to
a whole batch (their strengths vary per image).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

ENV_DATA_DIR = "CIFAR100_DIR"

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
        keras.datasets.cifar100.load_data()  # downloads + extracts into the Keras cache
    except Exception as exc:  # noqa: BLE001 - urllib/socket errors vary by platform
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataUnavailableError(
            f"could not download CIFAR-100 ({reason}); pass --data-dir DIR (or set {ENV_DATA_DIR}) "
            "pointing at an extracted cifar-100-python folder") from None
    cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")),
                         "datasets", "cifar-100-python-target", "cifar-100-python")
    return read_cifar100_dir(cache)


def train_val_split(x, y, validation_split: float, seed: int = 0):
    """A fixed random hold-out carved from train (the test split stays untouched)."""
    n_val = int(round(len(x) * validation_split))
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


# --------------------------------------------------------------------------
# augmentation (batched, stateless: every random draw is keyed by a seed)

def _seed(base, k):
    return tf.stack([base[0], base[1] * 16 + k])


def random_crop_flip(images, seed, pad=4):
    """Zero-pad by `pad`, crop back at a random offset per image, random h-flip."""
    b = tf.shape(images)[0]
    size = images.shape[1]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform((2, b), _seed(seed, 0), 0, 2 * pad + 1, tf.int32)
    grid = tf.range(size)
    rows = offsets[0][:, None] + grid
    cols = offsets[1][:, None] + grid
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform((b, 1, 1, 1), _seed(seed, 1)) < 0.5
    return tf.where(flip, tf.reverse(out, axis=[2]), out)


def random_resample(images, seed, prob, max_factor=8.0):
    """With probability `prob` per image, the round trip an upload goes through.

    Users' files are large photos that the app shrinks to 32x32 with an
    antialiased filter; a model that has only seen CIFAR's own pixels loses
    ~2 points on test images merely upscaled and shrunk back (README,
    "Uploads"). Here the chosen images are upscaled by a random factor in
    [2, max_factor] (bicubic) and shrunk back with antialiased Lanczos, as
    `vit.images.to_model_input` does, so the blur becomes familiar.
    """
    if prob <= 0:
        return images
    b = tf.shape(images)[0]
    size = images.shape[1]
    factor = tf.random.stateless_uniform((), _seed(seed, 7), 2.0, max_factor)
    big = tf.cast(tf.round(factor * size), tf.int32)
    resampled = tf.image.resize(images, tf.stack([big, big]), method="bicubic")
    resampled = tf.image.resize(resampled, (size, size), method="lanczos3", antialias=True)
    resampled = tf.clip_by_value(tf.round(resampled), 0.0, 255.0)
    chosen = tf.random.stateless_uniform((b, 1, 1, 1), _seed(seed, 8)) < prob
    return tf.where(chosen, resampled, images)


class BatchSeeds:
    """Stand-in for a Keras SeedGenerator whose draws depend only on `seed`.

    A Keras random layer draws from its SeedGenerator: a variable that every
    call advances, so under tf.data's parallel map the draws depend on thread
    timing and a resumed run cannot replay them. This one returns the k-th
    draw site's seed as fold_in(batch seed, k), with k counted while tracing:
    the same (seed, epoch, step) always gives the same augmentation.
    """

    def __new__(cls, seed):
        import keras

        # a SeedGenerator to Keras' isinstance checks, without its state variable
        generator_cls = type("BatchSeeds", (cls, keras.random.SeedGenerator), {})
        return object.__new__(generator_cls)

    def __init__(self, seed):
        self.base = tf.cast(seed, tf.int64)
        self.draws = 0

    def next(self, ordered=True):
        self.draws += 1
        return tf.random.experimental.stateless_fold_in(self.base, self.draws)


def seeded_rand_augment(layer, images, seed):
    """Apply a keras.layers.RandAugment with every random draw keyed by `seed`."""
    own = layer.generator
    # what RandAugment hands to each of its ops; object.__setattr__ keeps it
    # out of the layer's tracked (saved, reseeded) state
    object.__setattr__(layer, "generator", BatchSeeds(seed))
    try:
        return layer(images, training=True)
    finally:
        object.__setattr__(layer, "generator", own)


def _beta(alpha, seed):
    a = tf.random.stateless_gamma((), _seed(seed, 2), alpha=alpha)
    b = tf.random.stateless_gamma((), _seed(seed, 3), alpha=alpha)
    return a / (a + b)


def mix_batch(images, labels, seed, mixup_alpha=0.0, cutmix_alpha=0.0):
    """Mixup or CutMix with the reversed batch (one of them per batch, 50/50)."""
    images = tf.cast(images, tf.float32)
    partner_x, partner_y = tf.reverse(images, [0]), tf.reverse(labels, [0])
    use_cutmix = cutmix_alpha > 0 and (
        mixup_alpha <= 0 or tf.random.stateless_uniform((), _seed(seed, 4)) < 0.5)

    def mixup():
        lam = _beta(mixup_alpha, seed)
        return lam * images + (1 - lam) * partner_x, lam

    def cutmix():
        lam = _beta(cutmix_alpha, seed)
        h, w = images.shape[1], images.shape[2]
        cut = tf.sqrt(1.0 - lam)
        ch, cw = tf.cast(cut * h, tf.int32), tf.cast(cut * w, tf.int32)
        cy = tf.random.stateless_uniform((), _seed(seed, 5), 0, h, tf.int32)
        cx = tf.random.stateless_uniform((), _seed(seed, 6), 0, w, tf.int32)
        y0, y1 = tf.maximum(cy - ch // 2, 0), tf.minimum(cy + ch // 2, h)
        x0, x1 = tf.maximum(cx - cw // 2, 0), tf.minimum(cx + cw // 2, w)
        ys, xs = tf.range(h)[:, None], tf.range(w)[None, :]
        box = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
        box = tf.cast(box, tf.float32)[None, :, :, None]
        lam = 1.0 - tf.reduce_sum(box) / (h * w)
        return images * (1 - box) + partner_x * box, lam

    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, labels
    mixed, lam = tf.cond(use_cutmix, cutmix, mixup) if isinstance(use_cutmix, tf.Tensor) \
        else (cutmix() if use_cutmix else mixup())
    return mixed, lam * labels + (1 - lam) * partner_y


def train_dataset(x, y, *, num_classes, batch_size, seed, start_epoch, epochs,
                  augment="basic", mixup_alpha=0.0, cutmix_alpha=0.0, resample_prob=0.0):
    """Batches for epochs [start_epoch, epochs): (float32 pixels 0-255, one-hot).

    drop_remainder keeps shapes static (steps_per_epoch = len(x) // batch_size).
    """
    n = len(x)
    images = tf.constant(x)
    onehot = tf.one_hot(tf.constant(y), num_classes)
    randaugment = None
    if augment == "strong":
        import keras

        # float32 whatever the mixed-precision policy: augmentation is input work
        randaugment = keras.layers.RandAugment(value_range=(0, 255), num_ops=2,
                                               factor=0.5, seed=seed, dtype="float32")

    def batch_fn(epoch, step, idx):
        s = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + epoch, step])
        xb = tf.cast(tf.gather(images, idx), tf.float32)
        yb = tf.gather(onehot, idx)
        if augment in ("basic", "strong"):
            xb = random_crop_flip(xb, s)
        if randaugment is not None:
            xb = seeded_rand_augment(randaugment, xb, _seed(s, 9))
        xb = random_resample(xb, s, resample_prob)
        return mix_batch(xb, yb, s, mixup_alpha, cutmix_alpha)

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
    return train_dataset(x, y, num_classes=config.num_classes, batch_size=config.batch_size,
                         seed=seed, start_epoch=start_epoch, epochs=config.epochs,
                         augment=config.augment, mixup_alpha=config.mixup_alpha,
                         cutmix_alpha=config.cutmix_alpha,
                         resample_prob=config.resample_prob)


def eval_dataset(x, y, *, num_classes, batch_size):
    """Un-augmented batches in order, with one-hot labels."""
    onehot = tf.one_hot(y, num_classes)
    return (tf.data.Dataset.from_tensor_slices((x.astype(np.float32), onehot))
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))
