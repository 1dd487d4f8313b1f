"""Layer maths against NumPy references, and config round trips."""

import inspect

import numpy as np
import pytest
import keras
import tensorflow as tf
from absl.testing import parameterized
from keras.src import testing as keras_testing

import vit
from vit import layers


def numpy_patches(images, p):
    b, h, w, c = images.shape
    out = np.zeros((b, (h // p) * (w // p), p * p * c), images.dtype)
    for i in range(h // p):
        for j in range(w // p):
            out[:, i * (w // p) + j] = images[:, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(b, -1)
    return out


@pytest.mark.parametrize("p", [2, 4, 8])
def test_patches_match_numpy_and_tf_extract_patches(p):
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    got = np.asarray(layers.Patches(p)(images))
    np.testing.assert_array_equal(got, numpy_patches(images, p))
    ref = tf.image.extract_patches(images, [1, p, p, 1], [1, p, p, 1], [1, 1, 1, 1], "VALID")
    np.testing.assert_array_equal(got, ref.numpy().reshape(2, -1, p * p * 3))


def test_preprocess_standardises_raw_pixels():
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    x = np.full((1, 2, 2, 3), 255.0, "float32")
    out = np.asarray(layers.Preprocess(mean, std)(x))
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 3.0, 1.0], rtol=1e-6)


def test_per_image_preprocess_is_blind_to_brightness_and_contrast():
    """PIL's brightness (c * x) and contrast (m + c * (x - m)) are one affine map
    for all channels: a per-image standardised model sees the same input."""
    x = np.random.default_rng(1).uniform(40, 220, (2, 8, 8, 3)).astype("float32")
    layer = layers.Preprocess((0.5,) * 3, (0.25,) * 3, per_image=True)
    ref = np.asarray(layer(x))
    np.testing.assert_allclose(ref.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ref.std(axis=(1, 2, 3)), 1.0, rtol=1e-4)
    for c in (0.4, 0.6):
        np.testing.assert_allclose(np.asarray(layer(x * c)), ref, atol=1e-4)
        m = x.mean(axis=(1, 2, 3), keepdims=True)
        np.testing.assert_allclose(np.asarray(layer(m + c * (x - m))), ref, atol=1e-4)
    # the dataset normalisation is not: that is what per_image buys
    dataset = layers.Preprocess((0.5,) * 3, (0.25,) * 3)
    assert np.abs(np.asarray(dataset(x * 0.4)) - np.asarray(dataset(x))).max() > 1.0
    # a flat image gives zeros, not NaN; colour ratios survive (one std for all channels)
    np.testing.assert_allclose(np.asarray(layer(np.full((1, 4, 4, 3), 7.0, "float32"))), 0.0,
                               atol=1e-5)
    tinted = x.copy()
    tinted[..., 0] *= 0.5
    assert not np.allclose(np.asarray(layer(tinted)), ref, atol=0.1)


def numpy_attention(x, kernel, bias, heads, key_dim):
    qkv = x @ kernel + bias
    b, t, _ = x.shape
    qkv = qkv.reshape(b, t, 3, heads, key_dim).transpose(2, 0, 3, 1, 4)
    logits = qkv[0] @ qkv[1].transpose(0, 1, 3, 2) / np.sqrt(key_dim)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_self_attention_probabilities_match_numpy_and_rows_sum_to_one():
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    layer = layers.SelfAttention(num_heads=2, key_dim=4)
    out, probs = layer(x)
    assert out.shape == (2, 5, 8) and probs.shape == (2, 2, 5, 5)
    ref = numpy_attention(x, layer.qkv_kernel.numpy(), layer.qkv_bias.numpy(), 2, 4)
    np.testing.assert_allclose(np.asarray(probs), ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5)


def test_locality_attention_masks_the_diagonal():
    x = np.random.default_rng(2).normal(size=(1, 6, 8)).astype("float32")
    _, probs = layers.SelfAttention(num_heads=2, key_dim=4, locality=True)(x)
    probs = np.asarray(probs)
    np.testing.assert_allclose(np.diagonal(probs, axis1=-2, axis2=-1), 0.0, atol=1e-7)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_drop_path_identity_at_inference_and_drops_whole_samples_in_training():
    x = np.ones((400, 3, 4), "float32")
    layer = layers.DropPath(0.5, seed=3)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    per_sample = out.reshape(400, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert (per_sample.min(1) == per_sample.max(1)).all()  # whole sample kept or dropped
    assert 0.35 < (per_sample[:, 0] == 0).mean() < 0.65


def test_conv_tokenizer_shape():
    out = layers.ConvTokenizer((8, 16))(np.zeros((2, 32, 32, 3), "float32"))
    assert out.shape == (2, 64, 16)


def test_transformer_block_rejects_mlp_that_cannot_join_residual():
    with pytest.raises(ValueError, match="cannot be added"):
        layers.TransformerBlock(4, 64, (2048, 1024))(np.zeros((1, 4, 64), "float32"))
    with pytest.raises(ValueError, match="projection_dim"):
        vit.ViTConfig().replace(mlp_units=(2048, 1024))


@pytest.mark.parametrize("layer", [
    layers.Preprocess((0.1, 0.2, 0.3), (1.0, 2.0, 3.0)),
    layers.Preprocess((0.1, 0.2, 0.3), (1.0, 2.0, 3.0), per_image=True, floor=0.01),
    layers.Patches(4),
    layers.ConvTokenizer((8, 16)),
    layers.PatchEncoder(16, 32, project=False, class_token=True),
    layers.SelfAttention(2, 8, dropout=0.1, locality=True),
    layers.DropPath(0.2, seed=5),
    layers.TransformerBlock(2, 8, (32, 16), 0.1, 0.1, True, 0.1, 1e-5),
    layers.ClassTokenPool(),
], ids=lambda layer: type(layer).__name__)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    params = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    assert params <= set(config), params - set(config)  # every argument is serialised
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


# Keras' own layer harness: config and serialisation round trips, build, symbolic
# and eager calls, a compiled training step, and a mixed_float16 instance whose
# outputs must have the dtypes its compute_output_spec promises and whose weights
# must stay float32. The mixed check is what catches sub-layers that ignore the
# layer's dtype policy (they crash on float16 inputs or return float32).
HARNESS_CASES = [
    dict(testcase_name="Preprocess", layer_cls=layers.Preprocess,
         init_kwargs={"mean": (0.1, 0.2, 0.3), "std": (1.0, 2.0, 3.0)},
         input_shape=(2, 8, 8, 3), expected_output_shape=(2, 8, 8, 3),
         expected_num_trainable_weights=0),
    dict(testcase_name="Preprocess_per_image", layer_cls=layers.Preprocess,
         init_kwargs={"mean": (0.1, 0.2, 0.3), "std": (1.0, 2.0, 3.0), "per_image": True},
         input_shape=(2, 8, 8, 3), expected_output_shape=(2, 8, 8, 3),
         expected_num_trainable_weights=0),
    dict(testcase_name="Patches", layer_cls=layers.Patches, init_kwargs={"patch_size": 4},
         input_shape=(2, 8, 8, 3), expected_output_shape=(2, 4, 48),
         expected_num_trainable_weights=0),
    dict(testcase_name="ConvTokenizer", layer_cls=layers.ConvTokenizer,
         init_kwargs={"channels": (4, 8)}, input_shape=(2, 8, 8, 3),
         expected_output_shape=(2, 4, 8), expected_num_trainable_weights=2),
    dict(testcase_name="PatchEncoder", layer_cls=layers.PatchEncoder,
         init_kwargs={"num_patches": 4, "projection_dim": 8, "project": True,
                      "class_token": True},
         input_shape=(2, 4, 6), expected_output_shape=(2, 5, 8),
         expected_num_trainable_weights=4),
    dict(testcase_name="PatchEncoder_no_projection", layer_cls=layers.PatchEncoder,
         init_kwargs={"num_patches": 4, "projection_dim": 8, "project": False,
                      "class_token": True},
         input_shape=(2, 4, 8), expected_output_shape=(2, 5, 8),
         expected_num_trainable_weights=2),
    dict(testcase_name="SelfAttention", layer_cls=layers.SelfAttention,
         init_kwargs={"num_heads": 2, "key_dim": 4, "dropout": 0.1, "locality": True},
         input_shape=(2, 5, 8), expected_output_shape=((2, 5, 8), (2, 2, 5, 5)),
         expected_num_trainable_weights=5, expected_num_seed_generators=1),
    dict(testcase_name="DropPath", layer_cls=layers.DropPath,
         init_kwargs={"rate": 0.2, "seed": 5}, call_kwargs={"training": True},
         input_shape=(2, 5, 8), expected_output_shape=(2, 5, 8),
         expected_num_trainable_weights=0, expected_num_seed_generators=1),
    dict(testcase_name="TransformerBlock", layer_cls=layers.TransformerBlock,
         init_kwargs={"num_heads": 2, "key_dim": 4, "mlp_units": (16, 8),
                      "attention_dropout": 0.1, "mlp_dropout": 0.1, "locality": True,
                      "drop_path": 0.1},
         input_shape=(2, 5, 8), expected_output_shape=((2, 5, 8), (2, 2, 5, 5)),
         expected_num_trainable_weights=13),
    dict(testcase_name="ClassTokenPool", layer_cls=layers.ClassTokenPool, init_kwargs={},
         input_shape=(2, 5, 8), expected_output_shape=(2, 8),
         expected_num_trainable_weights=0),
]


class KerasLayerHarness(keras_testing.TestCase):
    """Every layer in vit.layers passes keras.src.testing's run_layer_test."""

    @parameterized.named_parameters(*HARNESS_CASES)
    def test_run_layer_test(self, layer_cls, init_kwargs, input_shape,
                            expected_output_shape, **kwargs):
        self.run_layer_test(layer_cls, init_kwargs, input_shape=input_shape,
                            expected_output_shape=expected_output_shape,
                            run_training_check=True, run_mixed_precision_check=True,
                            **kwargs)


def test_mixed_float16_block_matches_float32_with_the_same_weights():
    """The mixed layer must compute the same function, not just return float16."""
    x = np.random.default_rng(4).normal(size=(2, 9, 16)).astype("float32")
    args = dict(num_heads=2, key_dim=8, mlp_units=(32, 16), locality=True)
    ref_layer = layers.TransformerBlock(**args)
    ref_out, ref_probs = ref_layer(x)
    mixed = layers.TransformerBlock(**args, dtype="mixed_float16")
    mixed.build(x.shape)
    mixed.set_weights(ref_layer.get_weights())
    out, probs = mixed(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    assert {w.dtype for w in mixed.weights} == {"float32"}
    np.testing.assert_allclose(np.asarray(out, "float32"), np.asarray(ref_out), atol=1e-2)
    np.testing.assert_allclose(np.asarray(probs), np.asarray(ref_probs), atol=2e-3)
