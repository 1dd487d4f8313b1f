"""vit.faithfulness on toy models whose answer is known, and Predictor's batched path."""

import keras
import numpy as np
import pytest

import vit
from vit import faithfulness as F
from vit.inference import Predictor

GRID, SIZE = 8, 32
BASE = np.array([129, 124, 112], np.uint8)
KEY_CELL = 19  # row 2, column 3


def key_cell_model(images):
    """P(class 0) is the share of the key cell's pixels that differ from the baseline."""
    images = np.asarray(images)
    r, c = divmod(KEY_CELL, GRID)
    cell = images[:, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4]
    p = (cell != BASE).any(axis=-1).mean(axis=(1, 2)) * 0.9
    return np.stack([p, 1 - p], axis=1)


def constant_model(images):
    return np.tile([0.3, 0.7], (len(images), 1))


@pytest.fixture(scope="module")
def image():
    # no pixel equals the baseline, so every cell "carries" something
    return np.random.default_rng(0).integers(140, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_cell_masks_tile_the_image():
    masks = F.cell_masks(GRID, SIZE)
    assert masks.shape == (64, SIZE, SIZE)
    np.testing.assert_array_equal(masks.sum(axis=0), 1)  # each pixel in exactly one cell
    assert masks[KEY_CELL, 8:12, 12:16].all() and masks[KEY_CELL].sum() == 16
    sliding = F.cell_masks(GRID, SIZE, window=2)
    assert sliding.shape == (49, SIZE, SIZE) and (sliding.sum(axis=(1, 2)) == 64).all()
    with pytest.raises(ValueError):
        F.cell_masks(5, SIZE)


def test_occlusion_finds_the_one_cell_the_model_uses(image):
    drops = F.occlusion_map(key_cell_model, image, 0, GRID, BASE)
    assert np.unravel_index(np.argmax(drops), drops.shape) == divmod(KEY_CELL, GRID)
    np.testing.assert_allclose(drops.ravel()[KEY_CELL], 0.9)
    assert np.count_nonzero(drops) == 1
    # the sliding window credits every cell of the windows that cover the key cell
    sliding = F.occlusion_map(key_cell_model, image, 0, GRID, BASE, window=2)
    assert sliding.ravel()[KEY_CELL] == sliding.max() > 0
    assert np.count_nonzero(sliding) == 9  # the key cell and its 8 neighbours


def test_deletion_and_insertion_rank_the_key_cell_map_first(image):
    key_map = np.zeros((GRID, GRID))
    key_map.flat[KEY_CELL] = 1.0
    last_map = np.zeros((GRID, GRID))
    last_map.flat[KEY_CELL] = -1.0  # the key cell deleted last
    curves = F.perturbation_curves(key_cell_model, image, [key_map, last_map], [0, 0],
                                   GRID, BASE)
    np.testing.assert_array_equal(curves["cells"], np.arange(0, 65, 4))
    deletion, insertion = curves["deletion"], curves["insertion"]
    np.testing.assert_allclose(deletion[0], [0.9] + [0.0] * 16)  # gone after one step
    np.testing.assert_allclose(deletion[1], [0.9] * 16 + [0.0])  # gone at the very end
    np.testing.assert_allclose(insertion[0], [0.0] + [0.9] * 16)
    auc_del = F.area_under_curve(deletion, curves["cells"])
    auc_ins = F.area_under_curve(insertion, curves["cells"])
    assert auc_del[0] < auc_del[1] and auc_ins[0] > auc_ins[1]
    np.testing.assert_allclose(auc_del, [0.9 / 32, 0.9 - 0.9 / 32])


def test_constant_model_gives_flat_curves(image):
    maps = [np.random.default_rng(i).random((GRID, GRID)) for i in range(3)]
    curves = F.perturbation_curves(constant_model, image, maps, [0, 0, 0], GRID, BASE)
    for mode in ("deletion", "insertion"):
        np.testing.assert_allclose(curves[mode], 0.3)
        np.testing.assert_allclose(F.area_under_curve(curves[mode], curves["cells"]), 0.3)


def test_one_image_for_many_maps_equals_one_image_per_map(image):
    rng = np.random.default_rng(1)
    maps = [rng.random((GRID, GRID)) for _ in range(3)]
    calls = []

    def counting(images):
        calls.append(len(images))
        return key_cell_model(images)

    shared = F.perturbation_curves(counting, image, maps, [0] * 3, GRID, BASE, seed=5)
    separate = F.perturbation_curves(counting, np.stack([image] * 3), maps, [0] * 3, GRID,
                                     BASE, seed=5)
    for mode in ("deletion", "insertion"):
        np.testing.assert_array_equal(shared[mode], separate[mode])
    # one batch per call; the shared image and the grey image run once
    assert calls == [2 + 3 * 2 * 15, 4 + 3 * 2 * 15]


def test_ties_are_broken_at_random_not_by_position():
    flat = np.zeros((GRID, GRID))
    firsts = {F.relevance_order(flat, np.random.default_rng(s))[0] for s in range(20)}
    assert len(firsts) > 5
    ranked = np.arange(64.0).reshape(GRID, GRID)
    np.testing.assert_array_equal(F.relevance_order(ranked, np.random.default_rng(0)),
                                  np.arange(63, -1, -1))


def test_class_indices_are_checked(image):
    """NumPy would wrap -1 to the last class and say nothing."""
    maps = [np.ones((GRID, GRID))] * 2
    for bad in (-1, 2, 1.0):
        with pytest.raises(ValueError, match="class index"):
            F.occlusion_map(key_cell_model, image, bad, GRID, BASE)
        with pytest.raises(ValueError, match="class index"):
            F.perturbation_curves(key_cell_model, image, maps, [0, bad], GRID, BASE)
    with pytest.raises(ValueError, match="1 classes for 2 maps"):
        F.perturbation_curves(key_cell_model, image, maps, [0], GRID, BASE)


def test_float_pixels_are_0_to_255(image):
    drops = F.occlusion_map(key_cell_model, image, 0, GRID, BASE)
    np.testing.assert_array_equal(
        F.occlusion_map(key_cell_model, image.astype(float), 0, GRID, BASE.astype(float)), drops)
    key_map = np.arange(GRID * GRID, dtype=float).reshape(GRID, GRID)
    curves = F.perturbation_curves(key_cell_model, image, [key_map], [0], GRID, BASE)
    as_float = F.perturbation_curves(key_cell_model, image - 0.3, [key_map], [0], GRID, BASE)
    np.testing.assert_array_equal(as_float["deletion"], curves["deletion"])
    unit_mean = np.array(vit.config.CIFAR100_MEAN)  # 0-1: would grey out in black
    for call in (lambda: F.occlusion_map(key_cell_model, image, 0, GRID, unit_mean),
                 lambda: F.occlusion_map(key_cell_model, image / 255, 0, GRID, BASE),
                 lambda: F.perturbation_curves(key_cell_model, image, [key_map], [0], GRID,
                                               unit_mean)):
        with pytest.raises(ValueError, match="multiply by 255"):
            call()


def test_area_under_curve_of_known_shapes():
    cells = np.arange(0, 65, 4)
    np.testing.assert_allclose(F.area_under_curve(np.linspace(1, 0, 17), cells), 0.5)
    np.testing.assert_allclose(F.area_under_curve(np.ones(17), cells), 1.0)


def test_rank_correlation():
    a = np.arange(64.0).reshape(GRID, GRID)
    assert F.rank_correlation(a, a * 3 + 1) == pytest.approx(1.0)
    assert F.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(F.rank_correlation(a, np.zeros_like(a)))
    # ties get average ranks: Spearman of [1,2,2,3] vs [1,2,3,4] = Pearson of
    # ranks [0, 1.5, 1.5, 3] and [0, 1, 2, 3] = 0.9487
    assert F.rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.948683, abs=1e-6)


def test_mean_and_ci95():
    mean, half = F.mean_and_ci95([1.0, 2.0, 3.0, np.nan])
    assert mean == pytest.approx(2.0) and half == pytest.approx(1.96 * 1.0 / np.sqrt(3))


# ---------------------------------------------------------------- Predictor
@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return vit.build_vit(vit.get_preset("tiny"))


def test_predictor_probabilities_match_predict_for_any_batch_size(tiny_model):
    pred = Predictor(tiny_model)
    images = np.random.default_rng(0).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
    probs = pred.probabilities(images)  # 64 + a padded chunk of 6
    assert probs.shape == (70, 100)
    np.testing.assert_allclose(probs, pred.predict(images)[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.probabilities(images[:1]), probs[:1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("input_norm", ["dataset", "image"])
def test_a_fully_greyed_image_is_the_models_zero_input(input_norm):
    """The masking baseline is neutral for either normalisation: the training-mean
    colour would be a saturated tint to a per-image normalised model."""
    model = vit.build_vit(vit.get_preset("tiny").replace(input_norm=input_norm))
    pred = Predictor(model)
    grey = np.broadcast_to(pred.baseline_pixel, (1, 32, 32, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(model.get_layer("preprocess")(grey))
    assert np.abs(out).max() < 0.01, out.reshape(-1, 3)[0]
    mean = np.rint(np.array(vit.config.CIFAR100_MEAN) * 255)
    if input_norm == "dataset":
        np.testing.assert_array_equal(pred.baseline_pixel, mean)
    else:
        assert len(set(pred.baseline_pixel.tolist())) == 1  # a grey


def test_temperature_divides_the_logits_everywhere(tiny_model):
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    hot = Predictor(tiny_model, temperature=0.25)
    logits = keras.ops.convert_to_numpy(tiny_model(images.astype("float32"), training=False))
    z = logits / 0.25
    want = np.exp(z - z.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(hot.predict(images)[0], want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(hot.probabilities(images), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(hot.explain_one(images[0])[0], want[0], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError):
        Predictor(tiny_model, temperature=0.0, warmup=False)


def test_explain_one_checks_the_class_index(tiny_model):
    pred = Predictor(tiny_model, warmup=False)
    image = np.zeros((32, 32, 3), np.uint8)
    for bad in (100, 1000, -2):
        with pytest.raises(ValueError, match="class index"):
            pred.explain_one(image, bad)
    assert pred.explain_one(image, 99)[3] == 99
