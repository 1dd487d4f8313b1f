"""Test-split evaluation: logits in batches, loss, top-1 and top-5.

Shared by the end of training (vit.export), the checkpoint scripts and the
benchmarks, so every figure in a model card is computed the same way, and
the way `vit.inference.Predictor` classifies (test-time flip included).
"""

from __future__ import annotations

import keras
import numpy as np


def predict_logits(model: keras.Model, x, batch_size: int = 256,
                   test_time_flip: bool = False) -> np.ndarray:
    """Logits for raw pixels, in batches (no augmentation, inference mode).

    test_time_flip: the mean of the logits of each image and its mirror image.
    Training flips half the images at random, so the network has learnt no
    handedness; averaging the two views cancels part of each one's error
    (+0.7 points top-1 on the bundled model, README "Test-time flip"). Logits,
    not probabilities, are averaged, so one temperature still calibrates them.
    """
    x = np.asarray(x, np.float32)
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    if test_time_flip:
        mirror = x[:, :, ::-1]  # (B, H, W, C) flipped left-right
        logits = (logits + model.predict(mirror, batch_size=batch_size, verbose=0)) / 2
    return logits


def logit_metrics(logits, y) -> dict:
    """Loss (plain cross-entropy), top-1 and top-5 of precomputed logits."""
    loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return {"test_loss": float(np.mean(loss)),
            "test_top1": float(np.mean(top5[:, 0] == y)),
            "test_top5": float(np.mean((top5 == y[:, None]).any(axis=1)))}


def evaluate(model: keras.Model, x, y, batch_size: int = 256,
             test_time_flip: bool = False) -> dict:
    """Test-split loss (plain cross-entropy), top-1 and top-5."""
    return logit_metrics(predict_logits(model, x, batch_size, test_time_flip), y)
