"""Model builder: parameter count, attention outputs, save/load round trip."""

import keras
import numpy as np
import pytest

import vit


def test_tutorial_parameter_count_is_pinned():
    assert vit.build_vit(vit.get_preset("tutorial")).count_params() == 11_264_292


@pytest.mark.parametrize("name", ["tutorial", "compact", "tiny"])
def test_one_forward_gives_logits_and_every_blocks_attention(name):
    config = vit.get_preset(name)
    model = vit.build_vit(config)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    out = vit.with_attention(model)(x)
    tokens = config.arch.num_patches + int(config.arch.has_class_token)
    assert out["logits"].shape == (2, 100)
    assert len(out["attention"]) == config.arch.num_blocks
    for a in out["attention"]:
        assert a.shape == (2, config.arch.num_heads, tokens, tokens)
        np.testing.assert_allclose(np.asarray(a).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["logits"]), np.asarray(model(x)), atol=1e-5)


@pytest.mark.parametrize("name", ["compact", "tutorial"])
def test_save_load_round_trip_gives_identical_outputs(name, tmp_path):
    model = vit.build_vit(vit.get_preset(name))
    x = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    model.save(tmp_path / "m", zipped=False)
    assert {"config.json", "metadata.json", "model.weights.h5"} <= {p.name for p in (tmp_path / "m").iterdir()}
    loaded = keras.saving.load_model(tmp_path / "m", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    att_a = vit.with_attention(model)(x)["attention"]
    att_b = vit.with_attention(loaded)(x)["attention"]
    for a, b in zip(att_a, att_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_model_accepts_raw_uint8_pixels():
    model = vit.build_vit(vit.get_preset("tiny"))
    x = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3))
    np.testing.assert_allclose(np.asarray(model(x.astype("uint8"))),
                               np.asarray(model(x.astype("float32"))), atol=1e-6)
