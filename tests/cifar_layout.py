"""A small generated dataset in the CIFAR-100 python layout, for machines without it.

Pipeline, CLI, training and resume tests need files that `vit.data` reads the
way it reads the real CIFAR-100 (`train`, `test`, `meta` pickles), not its
accuracy. Each class is a learnable picture: a smooth two-colour gradient in
the class's own colours with a square of a third colour at a class-dependent
place, plus mild noise, so a tiny ViT beats chance within an epoch or two.
Only accuracy checks need the real data (`real_cifar` fixture).
"""

from __future__ import annotations

import os
import pickle

import numpy as np

TRAIN_PER_CLASS = 50  # 5,000 images: enough for --limit-train 4096 plus a validation split
TEST_PER_CLASS = 10


def class_images(label: int, n: int, rng: np.random.Generator) -> np.ndarray:
    palette = np.random.default_rng(1000 + label).integers(20, 236, (3, 3))
    t = np.linspace(0.0, 1.0, 32)[None, :, None]
    base = (1 - t) * palette[0] + t * palette[1]  # (1, 32, 3) horizontal gradient
    images = np.repeat(np.repeat(base[None], 32, axis=1), n, axis=0).astype(np.float32)
    y0, x0 = 4 + (label % 5) * 4, 4 + (label // 5 % 5) * 4
    for i in range(n):
        dy, dx = rng.integers(-2, 3, 2)
        images[i, y0 + dy:y0 + dy + 10, x0 + dx:x0 + dx + 10] = palette[2]
    images += rng.normal(0, 6, images.shape)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def write_cifar100_layout(folder: str, seed: int = 0, train_per_class: int = TRAIN_PER_CLASS,
                          test_per_class: int = TEST_PER_CLASS) -> str:
    """Write `train`, `test`, `meta` (as CIFAR-100's python version does); returns folder."""
    from vit.data import CIFAR100_LABELS

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), per_class)
        images = np.concatenate([class_images(c, per_class, rng) for c in range(100)])
        order = rng.permutation(len(labels))
        images, labels = images[order], labels[order]
        record = {"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
                  "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(record, f)
    with open(os.path.join(folder, "meta"), "wb") as f:
        pickle.dump({"fine_label_names": list(CIFAR100_LABELS),
                     "coarse_label_names": [f"group_{i}" for i in range(20)]}, f)
    return folder
