"""Draw docs/augmentation.png: what each TrivialAugment op does to CIFAR-100 images.

One row per op (each column a different image at a strength drawn as in
training), then rows of whole training batches as the pipeline makes them
(crop + flip, one op per image, the upload round trip). Look at it whenever
a range changes: the ops must leave a 32-px image recognisable.

    python scripts/augmentation_grid.py --data-dir ../shared/data/cifar100
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from vit import augment, data  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="docs/augmentation.png")
    p.add_argument("--columns", type=int, default=10)
    p.add_argument("--batches", type=int, default=3, help="rows of pipeline output")
    args = p.parse_args(argv)

    cifar = data.load_cifar100(args.data_dir)
    n = args.columns
    originals = cifar.x_train[:n].astype(np.float32)
    ops = augment.trivial_augment_ops()
    rows = [("original", originals)]
    for i, (name, op) in enumerate(ops.items()):
        out = augment._apply(op, tf.constant(originals), tf.constant([11, i], tf.int64))
        rows.append((name, np.clip(np.asarray(out), 0, 255)))
    pipeline = data.train_dataset(cifar.x_train[:n * 8], cifar.y_train[:n * 8],
                                  num_classes=100, batch_size=n, seed=3, start_epoch=0,
                                  epochs=1, augment="trivial", resample_prob=0.25)
    for k, (xb, _) in enumerate(pipeline.take(args.batches)):
        rows.append((f"training\nbatch {k + 1}", np.asarray(xb)))

    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9 + 1.2, len(rows) * 0.9))
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c].astype(np.uint8), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("TrivialAugment at 32 px (vit.augment): one row per op, then training batches",
                 fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
