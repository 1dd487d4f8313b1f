"""Serving wrapper: one compiled forward pass for predictions + attention.

The layers are backend-agnostic Keras 3, but serving uses TensorFlow
directly: `tf.function(jit_compile=True)` compiles the forward pass with XLA
(one fused program instead of op-by-op execution) and `tf.GradientTape`
gives the attention gradients that class-specific explanations need.
"""

from __future__ import annotations

import logging
import math
import threading

import keras
import numpy as np
import tensorflow as tf

from .faithfulness import check_class_index
from .images import pixels_uint8
from .layers import PatchEncoder, Preprocess, TransformerBlock
from .model import with_attention

CHUNK = 64  # images per call of the batched probability program (one XLA shape)


def _as_uint8_batch(images, image_size: int) -> np.ndarray:
    """Accept one (H, W, 3) image or a batch of 0-255 pixels (see vit.images), as uint8."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.shape[1:] != (image_size, image_size, 3):
        raise ValueError(f"expected (B, {image_size}, {image_size}, 3) images, "
                         f"got {images.shape}")
    return pixels_uint8(images)


def mirror_token_order(grid_size: int, class_token: bool) -> np.ndarray:
    """Token indices of the left-right mirror image: index i of the result is the
    token that sits where token i lands after the flip (its own inverse)."""
    cells = np.arange(grid_size * grid_size).reshape(grid_size, grid_size)[:, ::-1].ravel()
    if class_token:
        return np.concatenate([[0], cells + 1]).astype(np.int32)
    return cells.astype(np.int32)


class Predictor:
    """Wraps a trained classifier (raw pixels -> logits) for serving.

    Reads the token layout from the model's own layers, so a loaded model
    needs no separate config. `temperature` divides the logits before every
    softmax (a calibrated model folder stores it in calibration.json), so
    every probability this class returns is calibrated. `warmup=True` compiles both XLA programs up
    front, so the first request is as fast as the rest. A server can instead
    run `warmup()` in a thread: while a program is still compiling (~2-3 s
    each on 2 cores), calls run the same maths eagerly (tens of ms) instead
    of waiting for the compiler, so the first visitor after a cold start is
    answered at once.

    `test_time_flip=True` (the model folder's `test_time_flip`) classifies every
    image by the mean logits of it and its mirror image, as
    `vit.evaluation.predict_logits` scores it. The maps then describe that
    two-view model: the mirror view's attention and attention gradients are
    put back in the upright token order (the mirror of token (row, col) is
    (row, grid-1-col); the class token stays) and averaged with the upright
    view's, so every map and distance reads them unchanged. The
    correspondence is exact for the patch tokenizer; for the conv tokenizer
    it is the best whole-token match (its 3x3/2 max-pools pad one side only,
    so mirrored receptive fields sit 1-3 px apart on 4 px cells).
    """

    def __init__(self, model: keras.Model, warmup: bool = True, temperature: float = 1.0,
                 test_time_flip: bool = False):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = float(temperature)
        self.test_time_flip = bool(test_time_flip)
        self.attention_model = with_attention(model)
        encoders = [layer for layer in model.layers if isinstance(layer, PatchEncoder)]
        blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
        if len(encoders) != 1 or not blocks:
            raise ValueError("model needs one PatchEncoder and at least one TransformerBlock")
        self.image_size = int(model.input_shape[1])
        self.has_class_token = bool(encoders[0].class_token)
        self.num_patches = int(encoders[0].num_patches)
        self.grid_size = math.isqrt(self.num_patches)
        self.patch_px = self.image_size // self.grid_size
        self.num_blocks = len(blocks)
        self.num_heads = int(blocks[0].num_heads)
        self.num_classes = int(model.output_shape[-1])
        # The neutral "greyed out" pixel, which a fully greyed image maps to 0: the
        # training mean colour for the dataset normalisation; for the per-image one
        # a grey (R = G = B) of the same lightness, since any other colour would
        # come out as a saturated tint once the image is standardised by itself.
        preprocess = [layer for layer in model.layers if isinstance(layer, Preprocess)]
        mean = np.asarray(preprocess[0].mean if preprocess else (0.5, 0.5, 0.5))
        self.per_image = bool(preprocess and preprocess[0].per_image)
        if self.per_image:
            mean = np.full(3, mean.mean())
        self.baseline_pixel = np.rint(mean * 255.0).astype(np.uint8)
        self.mirror_order = mirror_token_order(self.grid_size, self.has_class_token)

        batch = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.uint8)
        single = tf.TensorSpec((1, self.image_size, self.image_size, 3), tf.uint8)
        self._forward = tf.function(self._forward_fn, input_signature=[batch],
                                    jit_compile=True)
        # The class index is a tensor, so every class reuses one trace.
        self._gradients = tf.function(
            self._gradients_fn, input_signature=[single, tf.TensorSpec((), tf.int32)],
            jit_compile=True)
        chunk = tf.TensorSpec((CHUNK, self.image_size, self.image_size, 3), tf.uint8)
        self._probabilities = tf.function(self._probabilities_fn, input_signature=[chunk],
                                          jit_compile=True)
        self._warming = threading.Event()  # a warmup() has started...
        self._compiled = {name: threading.Event()
                          for name in ("forward", "gradients", "probabilities")}
        if warmup:
            self.warmup()

    def warmup(self, background: bool = False) -> threading.Thread | None:
        """Compile the forward program, then the forward+backward one.

        background=True returns the started thread; calls made before a
        program is ready run eagerly. If compiling fails, the error is logged
        and later calls compile on demand instead of staying eager for good.
        """
        self._warming.set()  # before the thread starts: no call may wait on the compiler
        if background:
            thread = threading.Thread(target=self._compile, name="xla-warmup", daemon=True)
            thread.start()
            return thread
        self._compile()
        return None

    def _compile(self) -> None:
        blank = tf.zeros((1, self.image_size, self.image_size, 3), tf.uint8)
        try:
            self._forward(blank)
            self._compiled["forward"].set()
            self._gradients(blank, tf.constant(-1, tf.int32))
            self._compiled["gradients"].set()
            self._probabilities(tf.zeros((CHUNK, *blank.shape[1:]), tf.uint8))
            self._compiled["probabilities"].set()
        except Exception:  # noqa: BLE001 - a server must keep answering
            logging.getLogger(__name__).exception(
                "XLA warm-up failed; requests will compile on demand")
            self._warming.clear()

    def _program(self, name: str, compiled, eager):
        """The XLA program, unless a warmup is still compiling it: then eager."""
        if self._warming.is_set() and not self._compiled[name].is_set():
            return eager
        return compiled

    @property
    def num_tokens(self) -> int:
        return self.num_patches + int(self.has_class_token)

    def _softmax(self, logits):
        return tf.nn.softmax(tf.cast(logits, tf.float32) / self.temperature, axis=-1)

    def _views(self, images):
        """The batch the network runs on: the images, then (flip) their mirrors."""
        pixels = tf.cast(images, tf.float32)
        if self.test_time_flip:
            pixels = tf.concat([pixels, tf.reverse(pixels, axis=[2])], axis=0)
        return pixels

    def _merge(self, per_view):
        """(V*B, ...) per-view logits -> (B, ...): the mean over the views."""
        if not self.test_time_flip:
            return per_view
        upright, mirror = tf.split(per_view, 2, axis=0)
        return (upright + mirror) / 2

    def _merge_tokens(self, per_view):
        """(V*B, h, T, T) per-view attention (or its gradient) -> (B, h, T, T): the
        mirror view's rows and columns back in upright token order, then the mean."""
        if not self.test_time_flip:
            return per_view
        upright, mirror = tf.split(per_view, 2, axis=0)
        order = tf.constant(self.mirror_order)
        mirror = tf.gather(tf.gather(mirror, order, axis=-2), order, axis=-1)
        return (upright + mirror) / 2

    def _forward_fn(self, images):
        outputs = self.attention_model(self._views(images), training=False)
        attention = [self._merge_tokens(a) for a in outputs["attention"]]
        return (self._softmax(self._merge(outputs["logits"])),
                tf.stack(attention, axis=1))  # (B, blocks, h, T, T)

    def _probabilities_fn(self, images):
        return self._softmax(self._merge(self.model(self._views(images), training=False)))

    def _gradients_fn(self, image, class_index):
        pixels = self._views(image)
        with tf.GradientTape() as tape:
            # Watched before the forward pass, so every op that consumes the attention
            # is recorded; watching the attention afterwards would come too late once
            # no trainable variable makes the tape record (frozen or constant weights).
            tape.watch(pixels)
            outputs = self.attention_model(pixels, training=False)
            attention = outputs["attention"]
            logits = self._merge(outputs["logits"])[0]
            # class_index -1 means "the top-1 class", decided inside the same program.
            chosen = tf.where(class_index < 0, tf.argmax(logits, output_type=tf.int32),
                              class_index)
            logit = tf.gather(logits, chosen)
        # With the flip, d(mean logit)/d(each view's attention) is half that view's
        # own gradient; merging averages again, so x2 keeps the one-view scale.
        scale = 2.0 if self.test_time_flip else 1.0
        grads = [self._merge_tokens(g)[0] * scale for g in tape.gradient(logit, attention)]
        probs = self._softmax(logits)
        return (probs, tf.stack([self._merge_tokens(a)[0] for a in attention]),  # (blocks, h, T, T)
                tf.stack(grads), chosen)

    def predict(self, images) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities (B, classes) and per-block attention [(B, h, T, T)]."""
        forward = self._program("forward", self._forward, self._forward_fn)
        probs, attention = forward(tf.constant(_as_uint8_batch(images, self.image_size)))
        attention = attention.numpy()
        return probs.numpy(), [attention[:, i] for i in range(attention.shape[1])]

    def probabilities(self, images) -> np.ndarray:
        """Class probabilities (B, classes) of a batch of any size, logits only.

        For occlusion maps and deletion curves: the images run in chunks of
        CHUNK through one compiled program (the last chunk padded), so any
        batch size reuses a single XLA compilation and no attention is copied.
        """
        images = _as_uint8_batch(images, self.image_size)
        program = self._program("probabilities", self._probabilities, self._probabilities_fn)
        out = []
        for start in range(0, len(images), CHUNK):
            chunk = images[start:start + CHUNK]
            padded = np.zeros((CHUNK, *chunk.shape[1:]), np.uint8)
            padded[:len(chunk)] = chunk
            out.append(program(tf.constant(padded)).numpy()[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def class_gradients(self, image, class_index: int) -> list[np.ndarray]:
        """d logit[class_index] / d attention, per block (h, T, T), for one image.

        The gradient is taken w.r.t. the softmax probabilities (not the
        pre-softmax scores), as gradient-weighted rollout expects. With the
        test-time flip: the mean of the two views' own gradients, upright order.
        """
        batch = _as_uint8_batch(image, self.image_size)
        if batch.shape[0] != 1:
            raise ValueError("class_gradients explains one image at a time")
        class_index = check_class_index(class_index, self.num_classes)
        return self.explain_one(batch[0], class_index)[2]

    def explain_one(self, image, class_index: int = -1):
        """One compiled forward + backward for one image.

        Returns (probs (classes,), attention [(h, T, T)] per block, gradients of
        the class logit w.r.t. that attention [(h, T, T)], class index); class
        -1 explains the top-1 class. The demo's first view needs all of them,
        so this saves a second forward pass.
        """
        batch = _as_uint8_batch(image, self.image_size)
        if batch.shape[0] != 1:
            raise ValueError("explain_one explains one image at a time")
        class_index = check_class_index(class_index, self.num_classes, top1=True)
        gradients = self._program("gradients", self._gradients, self._gradients_fn)
        probs, attention, grads, chosen = gradients(
            tf.constant(batch), tf.constant(class_index, tf.int32))
        return probs.numpy(), list(attention.numpy()), list(grads.numpy()), int(chosen)
