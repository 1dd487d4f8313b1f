"""CIFAR-100 loading (real files) and the deterministic tf.data pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from vit import data


def test_real_cifar100_layout_and_known_images(cifar):
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

    def offline():
        raise Exception("URL fetch failure on https://example: None -- [Errno -3] "
                        "Temporary failure in name resolution\nmore detail")

    monkeypatch.setattr(keras.datasets.cifar100, "load_data", offline)
    with pytest.raises(data.DataUnavailableError) as err:
        data.load_cifar100()
    message = str(err.value)
    assert "\n" not in message and "--data-dir" in message and "name resolution" in message


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


def test_random_crop_flip_outputs_are_shifted_or_flipped_crops():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 8, 8, 3)).astype("float32")
    out = data.random_crop_flip(images, np.array([1, 2]), pad=2).numpy()
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)])
    for i in range(6):
        candidates = [padded[i, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        candidates += [c[:, ::-1] for c in candidates]
        assert any(np.array_equal(out[i], c) for c in candidates)


def test_mixup_and_cutmix_keep_labels_normalised():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.eye(100, dtype="float32")[rng.integers(0, 100, 8)]
    for mixup, cutmix in ((0.8, 0.0), (0.0, 1.0), (0.8, 1.0)):
        mx, my = data.mix_batch(x, y, np.array([3, 4]), mixup, cutmix)
        np.testing.assert_allclose(my.numpy().sum(1), 1.0, atol=1e-5)
        assert not np.array_equal(mx.numpy(), x)


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


def test_strong_augmentation_is_a_function_of_seed_epoch_and_step():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 255, (96, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 100, 96)
    kw = dict(num_classes=100, batch_size=32, seed=7, epochs=3, augment="strong")
    full = _batches(data.train_dataset(x, y, start_epoch=0, **kw))
    again = _batches(data.train_dataset(x, y, start_epoch=0, **kw))
    resumed = _batches(data.train_dataset(x, y, start_epoch=2, **kw))
    for (xa, _), (xb, _) in zip(full, again):
        np.testing.assert_array_equal(xa, xb)
    for (xa, _), (xb, _) in zip(full[6:], resumed):
        np.testing.assert_array_equal(xa, xb)
    basic = _batches(data.train_dataset(x, y, start_epoch=0, **{**kw, "augment": "basic"}))
    changed = [not np.array_equal(a[0], b[0]) for a, b in zip(full, basic)]
    assert sum(changed) >= 6, changed  # RandAugment did act, on most batches


def test_seeded_rand_augment_draws_differ_by_seed_and_site():
    import keras

    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=1)
    own = layer.generator
    images = tf.constant(np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3)), tf.float32)
    outs = [data.seeded_rand_augment(layer, images, tf.constant([s, 0], tf.int64)).numpy()
            for s in (1, 1, 2, 3, 4)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert sum(not np.array_equal(outs[0], o) for o in outs[2:]) >= 2
    assert layer.generator is own  # the layer's own generator is put back
    seeds = data.BatchSeeds(tf.constant([5, 6], tf.int64))
    assert isinstance(seeds, keras.random.SeedGenerator)
    assert not np.array_equal(seeds.next().numpy(), seeds.next().numpy())


def test_strong_augmentation_stays_float32_under_mixed_precision():
    from vit import training

    rng = np.random.default_rng(4)
    x = rng.integers(0, 255, (64, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 100, 64)
    try:
        training.set_precision("bf16")
        ds = data.train_dataset(x, y, num_classes=100, batch_size=32, seed=1, start_epoch=0,
                                epochs=1, augment="strong", resample_prob=0.5,
                                mixup_alpha=0.2, cutmix_alpha=1.0)
        images, labels = next(iter(ds))
    finally:
        training.set_precision("off")
    assert images.dtype == tf.float32 and labels.dtype == tf.float32


def test_builtin_label_names_match_the_dataset(cifar):
    assert data.CIFAR100_LABELS == cifar.label_names


def test_random_resample_blurs_chosen_images_like_an_upload(cifar):
    import tensorflow as tf

    from vit import images

    x = tf.constant(cifar.x_test[:64].astype(np.float32))
    seed = tf.constant([3, 4], tf.int64)
    assert np.array_equal(data.random_resample(x, seed, 0.0).numpy(), x.numpy())
    out = data.random_resample(x, seed, 1.0).numpy()
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert np.array_equal(out, np.round(out))
    diff = np.abs(out - x.numpy()).mean(axis=(1, 2, 3))
    assert (diff > 0).all()  # every image changed...
    assert diff.mean() < 8  # ...by a blur, not into something else
    # The same order of change as the app's own decoding of an 8x upscale.
    from PIL import Image
    app = np.stack([images.to_model_input(Image.fromarray(p).resize((256, 256), Image.BICUBIC))
                    for p in cifar.x_test[:64]]).astype(np.float32)
    app_diff = np.abs(app - x.numpy()).mean()
    assert 0.3 * app_diff < diff.mean() < 3 * app_diff, (diff.mean(), app_diff)
    again = data.random_resample(x, seed, 1.0).numpy()
    assert np.array_equal(out, again)  # stateless: a pure function of the seed
    half = data.random_resample(x, seed, 0.5).numpy()
    changed = np.any(half != x.numpy(), axis=(1, 2, 3)).mean()
    assert 0.2 < changed < 0.8, changed


def test_pipeline_with_resample_is_deterministic(cifar):
    kw = dict(num_classes=100, batch_size=32, seed=7, start_epoch=0, epochs=1,
              resample_prob=0.5)
    x, y = cifar.x_train[:64], cifar.y_train[:64]
    a = [b[0].numpy() for b in data.train_dataset(x, y, **kw)]
    b = [b[0].numpy() for b in data.train_dataset(x, y, **kw)]
    plain = [b[0].numpy() for b in data.train_dataset(x, y, **{**kw, "resample_prob": 0.0})]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, plain))


@pytest.mark.parametrize("field, value", [("augment", "none"), ("mixup_alpha", 0.4),
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
        x, y, num_classes=100, batch_size=config.batch_size, seed=3, start_epoch=1,
        epochs=config.epochs, augment=config.augment, mixup_alpha=config.mixup_alpha,
        cutmix_alpha=config.cutmix_alpha, resample_prob=config.resample_prob))
    without = batches(data.recipe_dataset(x, y, base, seed=3, start_epoch=1))
    assert same(got, explicit)
    assert not same(got, without)
