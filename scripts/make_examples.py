"""Write the demo's example gallery: one CIFAR-100 test image from each of 24 classes.

    python scripts/make_examples.py --data-dir ../shared/data/cifar100
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vit.data import load_cifar100  # noqa: E402

CLASSES = ["apple", "aquarium_fish", "bicycle", "butterfly", "camel", "castle", "cattle",
           "chair", "cloud", "elephant", "fox", "house", "keyboard", "lion", "motorcycle",
           "mushroom", "orange", "palm_tree", "rocket", "sunflower", "tank", "tiger",
           "tractor", "whale"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "examples"))
    args = p.parse_args()
    data = load_cifar100(args.data_dir)
    os.makedirs(args.out, exist_ok=True)
    for name in CLASSES:
        index = int(np.flatnonzero(data.y_test == data.label_names.index(name))[0])
        Image.fromarray(data.x_test[index]).save(os.path.join(args.out, f"{name}.png"))
    print(f"wrote {len(CLASSES)} examples to {args.out}")


if __name__ == "__main__":
    main()
