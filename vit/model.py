"""Build the ViT classifier from a `ViTConfig`, and expose its attention.

The saved classifier outputs logits only. `with_attention` wraps the same
layers (same weights, one forward pass) into a model that also returns
every block's attention probabilities, which the explanations need.
"""

from __future__ import annotations

import keras

from .config import CIFAR100_MEAN, CIFAR100_STD, ViTConfig
from .layers import ClassTokenPool, ConvTokenizer, PatchEncoder, Patches, Preprocess, TransformerBlock


def build_vit(config: ViTConfig, name: str = "vit") -> keras.Model:
    """A functional Keras model: raw (B, 32, 32, 3) pixels 0-255 -> logits."""
    c, recipe = config.arch, config.recipe
    inputs = keras.Input((c.image_size, c.image_size, 3), name="pixels")
    x = Preprocess(CIFAR100_MEAN, CIFAR100_STD, per_image=c.input_norm == "image",
                   name="preprocess")(inputs)
    if c.tokenizer == "conv":
        tokens = ConvTokenizer(c.conv_channels, name="tokenizer")(x)
    else:
        tokens = Patches(c.patch_size, name="patches")(x)
    x = PatchEncoder(c.num_patches, c.projection_dim, project=c.tokenizer == "patch",
                     class_token=c.has_class_token, name="patch_encoder")(tokens)
    for i in range(c.num_blocks):
        rate = recipe.stochastic_depth * i / max(1, c.num_blocks - 1)
        x, _ = TransformerBlock(
            c.num_heads, c.key_dim, c.mlp_units,
            attention_dropout=recipe.attention_dropout, mlp_dropout=recipe.mlp_dropout,
            locality=c.locality_attention, drop_path=rate,
            epsilon=c.layer_norm_eps, name=f"block_{i}")(x)
    x = keras.layers.LayerNormalization(epsilon=c.layer_norm_eps, name="final_norm")(x)
    if c.has_class_token:
        x = ClassTokenPool(name="class_token")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
    if recipe.head_dropout:
        x = keras.layers.Dropout(recipe.head_dropout, name="head_dropout")(x)
    for i, units in enumerate(c.head_units):
        x = keras.layers.Dense(units, activation="gelu", name=f"head_{i}")(x)
        x = keras.layers.Dropout(recipe.head_dropout, name=f"head_dropout_{i}")(x)
    logits = keras.layers.Dense(c.num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def block_names(model: keras.Model) -> list[str]:
    """Names of the transformer blocks, in depth order."""
    return [layer.name for layer in model.layers if isinstance(layer, TransformerBlock)]


def with_attention(model: keras.Model) -> keras.Model:
    """Same weights; outputs {"logits", "attention": [(B, heads, T, T)] * blocks}."""
    attention = [model.get_layer(name).output[1] for name in block_names(model)]
    return keras.Model(model.input, {"logits": model.output, "attention": attention},
                       name=f"{model.name}_with_attention")
