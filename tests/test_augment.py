"""vit.augment: crop/flip, the upload round trip, TrivialAugment, mixup/CutMix."""

import numpy as np
import tensorflow as tf

from vit import augment

def test_random_crop_flip_outputs_are_shifted_or_flipped_crops():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 8, 8, 3)).astype("float32")
    out = augment.random_crop_flip(images, np.array([1, 2]), pad=2).numpy()
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
        mx, my = augment.mix_batch(x, y, np.array([3, 4]), mixup, cutmix)
        np.testing.assert_allclose(my.numpy().sum(1), 1.0, atol=1e-5)
        assert not np.array_equal(mx.numpy(), x)




def test_seeded_call_draws_differ_by_seed_and_site():
    import keras

    layer = keras.layers.RandomRotation(0.2, seed=1)
    own = layer.generator
    images = tf.constant(np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3)), tf.float32)
    outs = [augment.seeded_call(layer, images, tf.constant([s, 0], tf.int64)).numpy()
            for s in (1, 1, 2, 3, 4)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert sum(not np.array_equal(outs[0], o) for o in outs[2:]) >= 2
    assert layer.generator is own  # the layer's own generator is put back
    seeds = augment.BatchSeeds(tf.constant([5, 6], tf.int64))
    assert isinstance(seeds, keras.random.SeedGenerator)
    assert not np.array_equal(seeds.next().numpy(), seeds.next().numpy())




def test_random_resample_blurs_chosen_images_like_an_upload(cifar):
    import tensorflow as tf

    from vit import images

    x = tf.constant(cifar.x_test[:64].astype(np.float32))
    seed = tf.constant([3, 4], tf.int64)
    assert np.array_equal(augment.random_resample(x, seed, 0.0).numpy(), x.numpy())
    out = augment.random_resample(x, seed, 1.0).numpy()
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
    again = augment.random_resample(x, seed, 1.0).numpy()
    assert np.array_equal(out, again)  # stateless: a pure function of the seed
    half = augment.random_resample(x, seed, 0.5).numpy()
    changed = np.any(half != x.numpy(), axis=(1, 2, 3)).mean()
    assert 0.2 < changed < 0.8, changed




def _marker_ops():
    """Ops whose effect is visible in the output: +1, +10, +100 everywhere."""
    return {f"add{k}": (lambda im, seed, k=k: im + k) for k in (1, 10, 100)}


def test_trivial_augment_gives_each_image_one_op_of_its_own():
    images = tf.zeros((400, 4, 4, 3))
    seed = tf.constant([5, 6], tf.int64)
    out = augment.trivial_augment(images, seed, _marker_ops(), num_ops=1).numpy()
    per_image = out.reshape(400, -1)
    assert (per_image == per_image[:, :1]).all()  # one op over the whole image
    counts = {v: int((per_image[:, 0] == v).sum()) for v in (0, 1, 10, 100)}
    assert sum(counts.values()) == 400  # identity or exactly one op, never two
    assert min(counts.values()) > 60, counts  # each of the 4 choices ~ 1/4
    again = augment.trivial_augment(images, seed, _marker_ops(), num_ops=1).numpy()
    np.testing.assert_array_equal(out, again)
    other = augment.trivial_augment(images, tf.constant([5, 7], tf.int64), _marker_ops())
    assert not np.array_equal(out, other.numpy())


def test_two_ops_per_image_compose():
    out = augment.trivial_augment(tf.zeros((400, 2, 2, 3)), tf.constant([1, 2], tf.int64),
                                  _marker_ops(), num_ops=2).numpy()[:, 0, 0, 0]
    sums = {a + b for a in (0, 1, 10, 100) for b in (0, 1, 10, 100)}
    assert set(out.tolist()) <= sums and len(set(out.tolist())) >= 8


def test_trivial_augment_ops_keep_the_calibrated_ranges():
    ops = augment.trivial_augment_ops()
    assert len(ops) == 13
    seed = tf.constant([3, 4], tf.int64)
    flat = tf.fill((512, 8, 8, 3), 100.0)
    bright = augment._apply(ops["brightness"], flat, seed).numpy()[:, 0, 0, 0]
    assert 10 - 1e-3 <= bright.min() < 25 and 175 < bright.max() <= 190 + 1e-3
    assert (bright <= 40).mean() > 0.1  # low light (x0.4) is well represented
    rng = np.random.default_rng(0)
    two_tone = np.where(rng.random((512, 8, 8, 1)) < 0.5, 50.0, 150.0).repeat(3, -1)
    contrast = augment._apply(ops["contrast"], tf.constant(two_tone, tf.float32), seed).numpy()
    spread = contrast.reshape(512, -1).std(1) / two_tone.reshape(512, -1).std(1)
    assert 0.1 - 1e-3 <= spread.min() < 0.3 and 1.7 < spread.max() <= 1.9 + 1e-3
    # geometric ops: a centred square moves or turns but stays mostly in view
    square = np.zeros((64, 32, 32, 3), np.float32)
    square[:, 8:24, 8:24] = 255.0
    for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        moved = augment._apply(ops[name], tf.constant(square), seed).numpy()
        kept = (moved[..., 0] > 200).sum((1, 2)) / 256.0
        assert kept.min() > 0.3, (name, kept.min())
        assert (np.abs(moved - square).sum((1, 2, 3)) > 0).mean() > 0.8, name


def test_the_real_ops_are_replayable_and_stay_in_range():
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3)),
                         tf.float32)
    ops = augment.trivial_augment_ops()
    seed = tf.constant([9, 9], tf.int64)
    a = augment.trivial_augment(images, seed, ops, num_ops=2).numpy()
    b = augment.trivial_augment(images, seed, ops, num_ops=2).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255
    assert not np.array_equal(a, images.numpy())
