"""CIFAR-100 loading (real files) and the deterministic tf.data pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from vit import data


def test_real_cifar100_layout_and_known_images(real_cifar):
    cifar = real_cifar
    assert cifar.x_train.shape == (50000, 32, 32, 3) and cifar.x_train.dtype == np.uint8
    assert cifar.x_test.shape == (10000, 32, 32, 3)
    assert cifar.y_train[0] == 19 and cifar.y_test[0] == 49  # cattle, mountain
    assert list(cifar.x_train[0, 0, :17].reshape(-1)) == [255] * 51
    assert list(cifar.x_test[0, 0, :9, 0]) == [199, 196, 195, 195, 196, 197, 198, 198, 199]
    assert cifar.label_names[:3] == ["apple", "aquarium_fish", "baby"]
    assert len(cifar.label_names) == 100 and np.bincount(cifar.y_test).tolist() == [100] * 100


def test_offline_without_data_dir_is_a_one_line_error(monkeypatch, tmp_path):
    import keras

    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)

    def offline(**kwargs):
        raise Exception("URL fetch failure on https://example: None -- [Errno -3] "
                        "Temporary failure in name resolution\nmore detail")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(data.DataUnavailableError) as err:
        data.load_cifar100()
    message = str(err.value)
    assert "\n" not in message and "--data-dir" in message and "name resolution" in message


def test_download_is_read_where_keras_put_it(monkeypatch, tmp_path):
    """Keras may cache under $KERAS_HOME, ~/.keras or /tmp/.keras: read what get_file returns."""
    import keras
    from tests.cifar_layout import write_cifar100_layout

    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    extracted = tmp_path / "somewhere" / "cifar-100-python-target"
    write_cifar100_layout(str(extracted / "cifar-100-python"), train_per_class=2, test_per_class=1)
    asked = {}

    def cached(**kwargs):
        asked.update(kwargs)
        return str(extracted)

    monkeypatch.setattr(keras.utils, "get_file", cached)
    loaded = data.load_cifar100()
    assert asked["origin"] == data.CIFAR100_URL and asked["extract"]
    assert asked["file_hash"] == data.CIFAR100_SHA256
    assert loaded.x_test.shape[1:] == (32, 32, 3) and len(loaded.label_names) == 100


def test_folder_without_pickles_is_rejected(tmp_path):
    with pytest.raises(data.DataUnavailableError, match="missing train"):
        data.load_cifar100(str(tmp_path))


def test_validation_split_is_fixed_and_disjoint():
    x = np.arange(100)[:, None]
    y = np.arange(100)
    (xa, _), (va, _) = data.train_val_split(x, y, 0.1)
    (xb, _), (vb, _) = data.train_val_split(x, y, 0.1)
    assert len(va) == 10 and len(xa) == 90
    np.testing.assert_array_equal(va, vb)
    assert not set(va[:, 0]) & set(xa[:, 0])
    # a smaller split is a subset of a larger one: a fine-tuning run that holds
    # out no more than its parent validates on images neither stage trained on
    (_, _), (small, _) = data.train_val_split(x, y, 0.04)
    assert set(small[:, 0]) <= set(va[:, 0]) and len(small) == 4


def _batches(ds):
    return [(a.numpy(), b.numpy()) for a, b in ds]


def test_training_batches_are_a_function_of_seed_epoch_and_step():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 255, (96, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 100, 96)
    kw = dict(num_classes=100, batch_size=32, seed=7, epochs=3, mixup_alpha=0.2, cutmix_alpha=1.0)
    full = _batches(data.train_dataset(x, y, start_epoch=0, **kw))
    resumed = _batches(data.train_dataset(x, y, start_epoch=2, **kw))
    assert len(full) == 9 and len(resumed) == 3
    for (xa, ya), (xb, yb) in zip(full[6:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(full[0][0], full[3][0])  # epochs differ
    other_seed = _batches(data.train_dataset(x, y, start_epoch=0, **{**kw, "seed": 8}))
    assert not np.array_equal(full[0][0], other_seed[0][0])


def test_trivial_augmentation_is_a_function_of_seed_epoch_and_step():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 255, (96, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 100, 96)
    kw = dict(num_classes=100, batch_size=32, seed=7, epochs=3, augment="trivial")
    full = _batches(data.train_dataset(x, y, start_epoch=0, **kw))
    again = _batches(data.train_dataset(x, y, start_epoch=0, **kw))
    resumed = _batches(data.train_dataset(x, y, start_epoch=2, **kw))
    for (xa, _), (xb, _) in zip(full, again):
        np.testing.assert_array_equal(xa, xb)
    for (xa, _), (xb, _) in zip(full[6:], resumed):
        np.testing.assert_array_equal(xa, xb)
    basic = _batches(data.train_dataset(x, y, start_epoch=0, **{**kw, "augment": "basic"}))
    changed = [not np.array_equal(a[0], b[0]) for a, b in zip(full, basic)]
    assert sum(changed) >= 6, changed  # TrivialAugment did act, on most batches


def test_trivial_augmentation_stays_float32_under_mixed_precision():
    from vit import training

    rng = np.random.default_rng(4)
    x = rng.integers(0, 255, (64, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 100, 64)
    try:
        training.set_precision("bf16")
        ds = data.train_dataset(x, y, num_classes=100, batch_size=32, seed=1, start_epoch=0,
                                epochs=1, augment="trivial", resample_prob=0.5,
                                mixup_alpha=0.2, cutmix_alpha=1.0)
        images, labels = next(iter(ds))
    finally:
        training.set_precision("off")
    assert images.dtype == tf.float32 and labels.dtype == tf.float32


def test_builtin_label_names_match_the_dataset(real_cifar):
    assert data.CIFAR100_LABELS == real_cifar.label_names


def test_pipeline_with_resample_is_deterministic(cifar):
    kw = dict(num_classes=100, batch_size=32, seed=7, start_epoch=0, epochs=1,
              resample_prob=0.5)
    x, y = cifar.x_train[:64], cifar.y_train[:64]
    a = [b[0].numpy() for b in data.train_dataset(x, y, **kw)]
    b = [b[0].numpy() for b in data.train_dataset(x, y, **kw)]
    plain = [b[0].numpy() for b in data.train_dataset(x, y, **{**kw, "resample_prob": 0.0})]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, plain))


@pytest.mark.parametrize("field, value", [("augment", "none"), ("augment", "trivial"),
                                          ("mixup_alpha", 0.4),
                                          ("cutmix_alpha", 1.0), ("resample_prob", 0.5),
                                          ("batch_size", 16), ("epochs", 3)])
def test_recipe_dataset_takes_every_recipe_field_from_the_config(cifar, field, value):
    # The helper train.py and benchmarks/train_throughput.py share: each recipe
    # field must reach the pipeline (the benchmark once dropped resample_prob).
    import vit

    x, y = cifar.x_train[:64], cifar.y_train[:64]
    base = vit.get_preset("tiny").replace(num_classes=100, batch_size=32, epochs=2,
                                          augment="basic", mixup_alpha=0.0,
                                          cutmix_alpha=0.0, resample_prob=0.0)
    config = base.replace(**{field: value})

    def batches(ds):
        return [(xb.numpy(), yb.numpy()) for xb, yb in ds]

    def same(p, q):
        return len(p) == len(q) and all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(p, q))

    got = batches(data.recipe_dataset(x, y, config, seed=3, start_epoch=1))
    explicit = batches(data.train_dataset(
        x, y, num_classes=100, batch_size=config.recipe.batch_size, seed=3, start_epoch=1,
        epochs=config.recipe.epochs, augment=config.recipe.augment, mixup_alpha=config.recipe.mixup_alpha,
        cutmix_alpha=config.recipe.cutmix_alpha, resample_prob=config.recipe.resample_prob))
    without = batches(data.recipe_dataset(x, y, base, seed=3, start_epoch=1))
    assert same(got, explicit)
    assert not same(got, without)
