"""Keras 3 layers of the ViT: preprocessing, tokenizers, attention, blocks.

Everything uses `keras.ops`, so the layers run on any Keras backend, and is
registered for serialisation, so `keras.saving.load_model` rebuilds models
after `import vit`.

Mixed precision follows the Keras 3 idiom: every sub-layer gets the owner's
`dtype=self.dtype_policy`, weights are created in the variable dtype (float32)
and maths runs in `self.compute_dtype`, so `Layer(..., dtype="mixed_float16")`
works on its own instead of relying on a global policy.
"""

from __future__ import annotations

import math

import keras
from keras import ops

PACKAGE = "vit"


@keras.saving.register_keras_serializable(package=PACKAGE)
class Preprocess(keras.layers.Layer):
    """Raw 0-255 RGB pixels -> standardised floats.

    Lives inside the saved model so every client (app, Hub users) feeds raw
    uint8 images and can never get the normalisation wrong.

    per_image=False: the dataset's per-channel mean and std (the classic
    CIFAR recipe). per_image=True: each image minus its own mean, over its
    own std (one mean and one std over all pixels and channels, so colour
    ratios survive). Uploaded photos are often dark or flat: PIL's
    brightness (x * c) and contrast (m + c * (x - m)) are affine maps shared
    by all channels, so a per-image standardised model sees the same input
    whatever c is (up to 8-bit rounding and clipping). `floor` (0-1 units,
    one grey level) keeps a flat image from dividing by zero, so a flat grey
    image maps to 0 (vit.inference greys cells out with that grey).
    """

    def __init__(self, mean, std, per_image=False, floor=1.0 / 255.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.per_image = bool(per_image)
        self.floor = float(floor)

    def call(self, images):
        if self.per_image:
            # Moments in float32: bf16 has 8 bits of mantissa. (Under a mixed policy
            # Keras has already cast the input to bf16/fp16; 0-255 integers survive that.)
            x = ops.cast(images, "float32") / 255.0
            mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
            std = ops.sqrt(ops.mean(ops.square(x - mean), axis=(1, 2, 3), keepdims=True))
            return ops.cast((x - mean) / ops.maximum(std, self.floor), self.compute_dtype)
        x = ops.cast(images, self.compute_dtype) / 255.0
        mean = ops.convert_to_tensor(self.mean, self.compute_dtype)
        std = ops.convert_to_tensor(self.std, self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std),
                "per_image": self.per_image, "floor": self.floor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Patches(keras.layers.Layer):
    """(B, H, W, C) -> (B, H/p * W/p, p*p*C), row-major patches.

    Same patch order and flattening order as `tf.image.extract_patches`.
    """

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)

    def call(self, images):
        p = self.patch_size
        _, h, w, c = images.shape
        x = ops.reshape(images, (-1, h // p, p, w // p, p, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, (h // p) * (w // p), p * p * c))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        p = self.patch_size
        return (b, (h // p) * (w // p), p * p * c)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvTokenizer(keras.layers.Layer):
    """CCT-style tokenizer: [conv3x3 -> ReLU -> maxpool3x3/2] per entry.

    Convolutions give the tokens the locality a ViT lacks on small data;
    each output cell is still one token for a 2-D grid, so attention maps
    keep their spatial meaning.
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = tuple(int(c) for c in channels)
        self.convs = [
            keras.layers.Conv2D(c, 3, padding="same", use_bias=False,
                                activation="relu", kernel_initializer="he_normal",
                                dtype=self.dtype_policy, name=f"conv_{i}")
            for i, c in enumerate(self.channels)
        ]
        self.pools = [keras.layers.MaxPooling2D(3, strides=2, padding="same",
                                                dtype=self.dtype_policy, name=f"pool_{i}")
                      for i in range(len(self.channels))]

    def build(self, input_shape):
        shape = input_shape
        for conv, pool in zip(self.convs, self.pools):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            shape = pool.compute_output_shape(shape)

    def call(self, images):
        x = images
        for conv, pool in zip(self.convs, self.pools):
            x = pool(conv(x))
        _, h, w, c = x.shape
        return ops.reshape(x, (-1, h * w, c))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = 2 ** len(self.channels)
        return (b, (h // s) * (w // s), self.channels[-1])

    def get_config(self):
        return {**super().get_config(), "channels": list(self.channels)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchEncoder(keras.layers.Layer):
    """Optional linear projection + learned position embedding (+ [CLS])."""

    def __init__(self, num_patches, projection_dim, project=True,
                 class_token=False, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = int(num_patches)
        self.projection_dim = int(projection_dim)
        self.project = bool(project)
        self.class_token = bool(class_token)
        self.projection = (keras.layers.Dense(self.projection_dim, name="projection",
                                              dtype=self.dtype_policy)
                           if self.project else None)
        self.position_embedding = keras.layers.Embedding(
            self.num_patches + int(self.class_token), self.projection_dim,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02)
            if self.class_token else "uniform",
            dtype=self.dtype_policy, name="position_embedding")

    def build(self, input_shape):
        if self.projection is not None:
            self.projection.build(input_shape)
        self.position_embedding.build((None,))
        if self.class_token:
            self.cls = self.add_weight(
                name="class_token", shape=(1, 1, self.projection_dim),
                initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, patches):
        x = self.projection(patches) if self.projection is not None else patches
        if self.class_token:
            cls = ops.cast(ops.broadcast_to(self.cls, (ops.shape(x)[0], 1,
                                                       self.projection_dim)),
                           self.compute_dtype)
            x = ops.concatenate([cls, x], axis=1)
        positions = ops.arange(self.num_patches + int(self.class_token))
        return x + self.position_embedding(positions)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_patches + int(self.class_token),
                self.projection_dim)

    def get_config(self):
        return {**super().get_config(), "num_patches": self.num_patches,
                "projection_dim": self.projection_dim, "project": self.project,
                "class_token": self.class_token}


def _attention_output_spec(layer, x):
    """(tokens in compute dtype, float32 probabilities): the default spec would
    claim both are in compute dtype, which is wrong under mixed precision."""
    tokens, probs = layer.compute_output_shape(x.shape)
    return (keras.KerasTensor(tokens, dtype=layer.compute_dtype),
            keras.KerasTensor(probs, dtype="float32"))


@keras.saving.register_keras_serializable(package=PACKAGE)
class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention that also returns its probabilities.

    Same parameters as `keras.layers.MultiHeadAttention` (fused q/k/v), plus
    optional locality self-attention (Lee et al. 2021): the diagonal is
    masked and the softmax temperature is learned. The softmax runs in
    float32 so the returned (B, heads, T, T) maps are exact probabilities;
    they stay float32 under mixed precision (see compute_output_spec).
    """

    def __init__(self, num_heads, key_dim, dropout=0.0, locality=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.dropout = float(dropout)
        self.locality = bool(locality)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        dim = input_shape[-1]
        inner = self.num_heads * self.key_dim
        self.qkv_kernel = self.add_weight(name="qkv_kernel", shape=(dim, 3 * inner),
                                          initializer="glorot_uniform")
        self.qkv_bias = self.add_weight(name="qkv_bias", shape=(3 * inner,),
                                        initializer="zeros")
        self.out_kernel = self.add_weight(name="out_kernel", shape=(inner, dim),
                                          initializer="glorot_uniform")
        self.out_bias = self.add_weight(name="out_bias", shape=(dim,),
                                        initializer="zeros")
        if self.locality:
            self.scale = self.add_weight(
                name="scale", shape=(),
                initializer=keras.initializers.Constant(1.0 / math.sqrt(self.key_dim)))

    def call(self, x, training=None):
        tokens = x.shape[1]
        h, k = self.num_heads, self.key_dim
        dtype = self.compute_dtype
        x = ops.cast(x, dtype)
        qkv = ops.matmul(x, ops.cast(self.qkv_kernel, dtype))
        qkv = qkv + ops.cast(self.qkv_bias, dtype)
        qkv = ops.transpose(ops.reshape(qkv, (-1, tokens, 3, h, k)), (2, 0, 3, 1, 4))
        q, key, v = qkv[0], qkv[1], qkv[2]
        logits = ops.cast(ops.matmul(q, ops.transpose(key, (0, 1, 3, 2))), "float32")
        if self.locality:
            logits = logits * ops.cast(self.scale, "float32")
            eye = ops.eye(tokens, dtype="bool")
            logits = ops.where(eye, ops.full_like(logits, -1e9), logits)
        else:
            logits = logits * (1.0 / math.sqrt(k))
        probs = ops.softmax(logits, axis=-1)
        dropped = self.dropout_layer(ops.cast(probs, dtype), training=training)
        out = ops.matmul(dropped, v)  # (B, h, T, k)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, tokens, h * k))
        out = ops.matmul(out, ops.cast(self.out_kernel, dtype))
        return out + ops.cast(self.out_bias, dtype), probs

    def compute_output_shape(self, input_shape):
        b, t, _ = input_shape
        return input_shape, (b, self.num_heads, t, t)

    def compute_output_spec(self, x, training=None):
        return _attention_output_spec(self, x)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "key_dim": self.key_dim, "dropout": self.dropout,
                "locality": self.locality}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropPath(keras.layers.Layer):
    """Stochastic depth: drop a whole residual branch per sample."""

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator) < keep
        return ops.where(mask, x / keep, ops.zeros_like(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(keras.layers.Layer):
    """Pre-norm block: x + Attn(LN(x)), then + MLP(LN(x)); returns attention too."""

    def __init__(self, num_heads, key_dim, mlp_units, attention_dropout=0.0,
                 mlp_dropout=0.0, locality=False, drop_path=0.0, epsilon=1e-6,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.mlp_units = tuple(int(u) for u in mlp_units)
        self.attention_dropout = float(attention_dropout)
        self.mlp_dropout = float(mlp_dropout)
        self.locality = bool(locality)
        self.drop_path = float(drop_path)
        self.epsilon = float(epsilon)
        policy = self.dtype_policy
        self.norm1 = keras.layers.LayerNormalization(epsilon=self.epsilon, dtype=policy,
                                                     name="norm1")
        self.attention = SelfAttention(self.num_heads, self.key_dim,
                                       dropout=self.attention_dropout,
                                       locality=self.locality, dtype=policy,
                                       name="attention")
        self.norm2 = keras.layers.LayerNormalization(epsilon=self.epsilon, dtype=policy,
                                                     name="norm2")
        self.dense = [keras.layers.Dense(u, activation="gelu", dtype=policy, name=f"mlp_{i}")
                      for i, u in enumerate(self.mlp_units)]
        self.dropouts = [keras.layers.Dropout(self.mlp_dropout, dtype=policy)
                         for _ in self.mlp_units]
        self.path_drop = DropPath(self.drop_path, dtype=policy, name="drop_path")

    def build(self, input_shape):
        if input_shape[-1] != self.mlp_units[-1]:
            raise ValueError(f"MLP output {self.mlp_units[-1]} cannot be added to "
                             f"a residual of width {input_shape[-1]}")
        self.norm1.build(input_shape)
        self.attention.build(input_shape)
        self.norm2.build(input_shape)
        shape = input_shape
        for dense in self.dense:
            dense.build(shape)
            shape = dense.compute_output_shape(shape)

    def call(self, x, training=None):
        attended, probs = self.attention(self.norm1(x), training=training)
        x = x + self.path_drop(attended, training=training)
        y = self.norm2(x)
        for dense, dropout in zip(self.dense, self.dropouts):
            y = dropout(dense(y), training=training)
        return x + self.path_drop(y, training=training), probs

    def compute_output_shape(self, input_shape):
        b, t, _ = input_shape
        return input_shape, (b, self.num_heads, t, t)

    def compute_output_spec(self, x, training=None):
        return _attention_output_spec(self, x)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "key_dim": self.key_dim, "mlp_units": list(self.mlp_units),
                "attention_dropout": self.attention_dropout,
                "mlp_dropout": self.mlp_dropout, "locality": self.locality,
                "drop_path": self.drop_path, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassTokenPool(keras.layers.Layer):
    """(B, T, D) -> (B, D): the [CLS] token, which the head classifies."""

    def call(self, tokens):
        return tokens[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])
