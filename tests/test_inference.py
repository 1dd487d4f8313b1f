"""vit.inference.Predictor on the "tiny" preset with random weights."""

import keras
import numpy as np
import pytest

import vit
import vit.evaluation
from vit.inference import Predictor, mirror_token_order


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return vit.build_vit(vit.get_preset("tiny"))


@pytest.fixture(scope="module")
def predictor(model):
    return Predictor(model)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)


def test_layout_read_from_model(predictor):
    config = vit.get_preset("tiny")
    assert predictor.has_class_token is True
    assert predictor.grid_size == config.arch.grid_size == 4
    assert predictor.patch_px == config.arch.grid_stride == 8
    assert predictor.num_blocks == config.arch.num_blocks
    assert predictor.num_heads == config.arch.num_heads
    assert predictor.num_tokens == 17


def test_predict_probabilities_and_attention(predictor, images):
    probs, attention = predictor.predict(images)
    assert probs.shape == (3, 100)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert len(attention) == 2
    for block in attention:
        assert block.shape == (3, 2, 17, 17) and block.dtype == np.float32
        np.testing.assert_allclose(block.sum(axis=-1), 1.0, rtol=1e-5)
    # one image alone gives the same answer as inside the batch
    single_probs, single_attention = predictor.predict(images[1])
    np.testing.assert_allclose(single_probs[0], probs[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(single_attention[1][0], attention[1][1], atol=1e-5)


def test_compiled_forward_matches_plain_model(model, predictor, images):
    probs, attention = predictor.predict(images)
    logits = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(axis=1, keepdims=True),
                               rtol=1e-4, atol=1e-6)
    plain = vit.with_attention(model)(images.astype("float32"), training=False)
    for got, want in zip(attention, plain["attention"]):
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(want), atol=1e-5)


def test_class_gradients(predictor, images):
    g3 = predictor.class_gradients(images[0], 3)
    g7 = predictor.class_gradients(images[0], 7)
    assert len(g3) == 2
    for block in g3:
        assert block.shape == (2, 17, 17)
        assert np.all(np.isfinite(block))
    assert not np.allclose(g3[0], g7[0])
    # The head reads only the class token, so in the last block only the
    # class-token query row can influence the logit.
    assert np.abs(g3[-1][:, 0, :]).max() > 0
    np.testing.assert_array_equal(g3[-1][:, 1:, :], 0.0)
    # w.r.t. probabilities, not pre-softmax scores (whose rows would sum to 0)
    assert np.abs(g3[-1][:, 0, :].sum(axis=-1)).max() > 1e-4
    # one trace serves every class
    assert predictor._gradients.experimental_get_tracing_count() == 1


def test_gradients_need_no_trainable_weights(model, predictor, images, monkeypatch):
    """The input is watched before the forward pass, so the ops that use the attention
    are recorded even with constant weights (watching the attention after the pass
    returned None gradients then: nothing trainable made the tape record)."""
    add_weight = keras.layers.Layer.add_weight
    monkeypatch.setattr(keras.layers.Layer, "add_weight",
                        lambda self, *a, **k: add_weight(self, *a, **{**k, "trainable": False}))
    frozen = vit.build_vit(vit.get_preset("tiny"))
    monkeypatch.undo()
    frozen.set_weights(model.get_weights())
    assert not frozen.trainable_weights
    got = Predictor(frozen, warmup=False).class_gradients(images[0], 3)
    want = predictor.class_gradients(images[0], 3)
    assert np.abs(want[-1]).max() > 0
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * np.abs(w).max())


def test_every_class_index_is_checked(predictor, images):
    """XLA's gather would clamp a bad index and explain another class in silence."""
    for bad in (100, -1, 3.5, True, "3"):
        with pytest.raises(ValueError, match="class index"):
            predictor.class_gradients(images[0], bad)
    for bad in (100, -2):
        with pytest.raises(ValueError, match="class index .* -1 for the top-1 class"):
            predictor.explain_one(images[0], bad)
    assert predictor.explain_one(images[0], np.int64(99))[3] == 99


def test_float_pixels_are_0_to_255(predictor, images):
    probs = predictor.predict(images)[0]
    np.testing.assert_allclose(predictor.predict(images.astype(np.float32))[0], probs,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(predictor.probabilities(images + 0.2), probs, rtol=1e-4, atol=1e-6)
    for call in (predictor.predict, predictor.probabilities):
        with pytest.raises(ValueError, match="multiply by 255"):
            call(images / 255.0)  # 0-1 floats would be read as an all-black image


def test_gradient_rollout_end_to_end(predictor, images):
    from vit import explain

    _, attention = predictor.predict(images[:1])
    attn = [block[0] for block in attention]
    assert predictor.has_class_token
    maps = {}
    for c in (5, 6):
        grads = predictor.class_gradients(images[0], c)
        heat = explain.gradient_rollout(attn, grads, has_class_token=True)
        # Chefer et al.'s rule written out head by head: R = I; R += mean_h relu(g*A) @ R
        relevance = np.eye(17)
        for a, g in zip(attn, grads, strict=True):
            heads = [np.maximum(g[h].astype(np.float64) * a[h], 0) for h in range(len(a))]
            relevance = relevance + (sum(heads) / len(heads)) @ relevance
        row = (relevance - np.eye(17))[0, 1:].reshape(4, 4)  # [CLS] row over the patches
        assert row.max() > 0
        np.testing.assert_allclose(heat, row / row.max(), atol=1e-6)
        maps[c] = heat
    assert not np.allclose(maps[5], maps[6])  # each class gets its own map


def test_calls_during_a_background_warmup_run_eagerly_with_the_same_answers(model, predictor,
                                                                              images):
    cold = Predictor(model, warmup=False)
    cold._warming.set()  # as if warmup() were compiling in another thread right now
    probs, attention = cold.predict(images)
    p1, a1, g1, c1 = cold.explain_one(images[0])
    # Nothing was compiled: the eager path answered.
    assert cold._forward.experimental_get_tracing_count() == 0
    assert cold._gradients.experimental_get_tracing_count() == 0
    want_probs, want_attention = predictor.predict(images)
    np.testing.assert_allclose(probs, want_probs, rtol=1e-4, atol=1e-6)
    for got, want in zip(attention, want_attention):
        np.testing.assert_allclose(got, want, atol=1e-5)
    p2, a2, g2, c2 = predictor.explain_one(images[0])
    assert c1 == c2
    np.testing.assert_allclose(p1, p2, rtol=1e-4, atol=1e-6)
    for got, want in zip(g1, g2):  # eager and XLA differ in rounding only
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-4 * np.abs(want).max())

    cold.warmup()  # now both programs exist and are used
    assert cold._forward.experimental_get_tracing_count() == 1
    assert cold._gradients.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(cold.predict(images)[0], want_probs, rtol=1e-4, atol=1e-6)
    assert cold._forward.experimental_get_tracing_count() == 1


def test_background_warmup_answers_at_once_and_then_compiles(model, predictor, images):
    cold = Predictor(model, warmup=False)
    thread = cold.warmup(background=True)
    probs, _ = cold.predict(images)  # may run eagerly or compiled: same answer
    np.testing.assert_allclose(probs, predictor.predict(images)[0], rtol=1e-4, atol=1e-6)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert cold._compiled["forward"].is_set() and cold._compiled["gradients"].is_set()


def test_failed_warmup_falls_back_to_compiling_on_demand(model, images, monkeypatch, caplog):
    cold = Predictor(model, warmup=False)

    def broken(*args):
        raise RuntimeError("simulated XLA failure")

    monkeypatch.setattr(cold, "_forward", broken)
    cold.warmup()
    assert "XLA warm-up failed" in caplog.text
    assert not cold._warming.is_set()  # not stuck on the slow eager path
    monkeypatch.undo()
    assert cold._program("forward", "compiled", "eager") == "compiled"


def test_mirror_token_order_flips_columns_and_keeps_the_class_token():
    assert mirror_token_order(2, True).tolist() == [0, 2, 1, 4, 3]
    assert mirror_token_order(3, False).tolist() == [2, 1, 0, 5, 4, 3, 8, 7, 6]
    order = mirror_token_order(4, True)
    assert order[order].tolist() == list(range(17))  # its own inverse


def test_mirror_token_order_is_where_each_patch_lands():
    """The patch tokenizer's layout: in the mirror image, token order[i] holds
    token i's patch (mirrored within the patch, invisible on a flat patch)."""
    cells = np.random.default_rng(2).integers(0, 256, (1, 4, 4, 3)).astype("float32")
    image = np.repeat(np.repeat(cells, 8, axis=1), 8, axis=2)  # 4x4 flat 8-px patches
    patches = vit.Patches(8)
    upright = keras.ops.convert_to_numpy(patches(image))
    mirror = keras.ops.convert_to_numpy(patches(image[:, :, ::-1]))
    order = mirror_token_order(4, class_token=False)
    np.testing.assert_array_equal(mirror[:, order], upright)
    assert not np.array_equal(mirror, upright)


# no class token and the conv tokenizer: the other token layouts the flip must handle
CONV_FLATTEN = vit.get_preset("tiny").replace(
    tokenizer="conv", conv_channels=(16, 32), projection_dim=32, mlp_units=(64, 32),
    pooling="flatten", head_units=(64,))


@pytest.mark.parametrize("config", [None, CONV_FLATTEN], ids=["tiny", "conv-flatten"])
def test_test_time_flip_is_the_mean_of_the_two_views(model, images, config):
    """Probabilities from the mean logits of each image and its mirror; the
    mirror's attention and gradients back in upright token order, averaged."""
    if config is not None:
        keras.utils.set_random_seed(3)
        model = vit.build_vit(config)
    flipped = Predictor(model, temperature=1.5, test_time_flip=True)
    views = [images.astype("float32"), images[:, :, ::-1].astype("float32")]
    logits = np.mean([keras.ops.convert_to_numpy(model(v, training=False)) for v in views], 0)
    e = np.exp(logits / 1.5 - (logits / 1.5).max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(vit.evaluation.predict_logits(model, images, test_time_flip=True),
                               logits, rtol=1e-4, atol=1e-5)
    probs, attention = flipped.predict(images)
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(flipped.probabilities(images), want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(probs, Predictor(model, temperature=1.5).predict(images)[0])

    order = mirror_token_order(flipped.grid_size, flipped.has_class_token)
    upright, mirror = (vit.with_attention(model)(v, training=False)["attention"] for v in views)
    for got, a, m in zip(attention, upright, mirror):
        m = keras.ops.convert_to_numpy(m)[:, :, order][:, :, :, order]
        np.testing.assert_allclose(got, (keras.ops.convert_to_numpy(a) + m) / 2, atol=1e-5)
        np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-5)  # still row-stochastic

    # the class map's gradients: each view's own gradient of the class logit, merged alike
    one_view = Predictor(model)
    p, attn, grads, chosen = flipped.explain_one(images[0])
    assert chosen == int(np.argmax(want[0]))
    np.testing.assert_allclose(p, want[0], rtol=1e-4, atol=1e-6)
    g_up = one_view.explain_one(images[0], chosen)[2]
    g_mirror = one_view.explain_one(images[0, :, ::-1], chosen)[2]
    for got, a, m in zip(grads, g_up, g_mirror):
        np.testing.assert_allclose(got, (a + m[:, order][:, :, order]) / 2, rtol=1e-4, atol=1e-5)


def test_test_time_flip_changes_nothing_on_a_mirror_symmetric_image(model):
    half = np.random.default_rng(1).integers(0, 256, (1, 32, 16, 3), dtype=np.uint8)
    symmetric = np.concatenate([half, half[:, :, ::-1]], axis=2)
    plain = keras.ops.convert_to_numpy(model(symmetric.astype("float32"), training=False))
    np.testing.assert_allclose(
        vit.evaluation.predict_logits(model, symmetric, test_time_flip=True), plain,
        rtol=1e-4, atol=1e-5)
    _, attention = Predictor(model, test_time_flip=True).predict(symmetric)
    order = mirror_token_order(4, True)
    for block in attention:  # the two views agree, so the mean is mirror-symmetric
        np.testing.assert_allclose(block, block[:, :, order][:, :, :, order], atol=1e-5)
