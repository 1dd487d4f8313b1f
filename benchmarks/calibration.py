"""Do the app's confidences mean what they say? ECE measured through its own API.

    python benchmarks/calibration.py --data-dir ../shared/data/cifar100   # 10,000 images, ~5 min
    python benchmarks/calibration.py --smoke                              # 200 images

Starts the real `python app.py` (bundled model, or --model FOLDER), sends
every CIFAR-100 test image as a PNG file through `gradio_client` to the
public `classify` endpoint (4 clients in parallel), and scores the top-1
label and confidence it answers: top-1 accuracy, mean confidence, ECE (15
equal-width bins) and the share of answers below the "not sure" threshold,
with the accuracy on each side. Target: test ECE <= 3% for the bundled model.

Last line: `api_ece=<x> api_top1=<x> api_mean_confidence=<x> n=<N>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _common import ROOT, add_model_args, chosen_folder, print_table
from PIL import Image

sys.path.insert(0, str(ROOT / "tests"))
from app_server import AppServer  # noqa: E402

BINS = 15


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p, data=True, flip=False)
    p.add_argument("--n", type=int, default=10_000, help="test images (default: all)")
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args(argv)
    if args.smoke:
        args.n = 200

    from gradio_client import Client, handle_file

    from vit import calibration, data

    folder = chosen_folder(args.model)
    ds = data.load_cifar100(args.data_dir)
    x, y = ds.x_test[:args.n], ds.y_test[:args.n]
    labels = list(ds.label_names)
    record = calibration.read_calibration(folder) if folder else None
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, pixels in enumerate(x):
            paths.append(os.path.join(tmp, f"{i:05d}.png"))
            Image.fromarray(pixels).save(paths[-1])
        app_args = ("--model", folder) if args.model else ()
        with AppServer(*app_args) as server:
            clients = [Client(server.url, verbose=False) for _ in range(args.clients)]

            def classify(i):
                top = clients[i % len(clients)].predict(handle_file(paths[i]),
                                                        api_name="/classify")
                return top["label"], top["confidences"][0]["confidence"]

            with ThreadPoolExecutor(len(clients)) as pool:
                answers = list(pool.map(classify, range(len(paths))))
    predicted = np.array([labels.index(label) for label, _ in answers])
    confidence = np.array([c for _, c in answers], np.float64)
    correct = predicted == y
    ece = calibration.confidence_ece(confidence, correct, BINS)
    rows = [["test images", len(y)], ["top-1 accuracy", f"{correct.mean():.4f}"],
            ["mean top-1 confidence", f"{confidence.mean():.4f}"],
            [f"ECE ({BINS} bins)", f"{ece:.4f}"]]
    if record:
        t = record["not_sure"]["threshold"]
        stats = calibration.not_sure_stats(confidence, correct, t)
        rows += [[f"'not sure' (below {t:.2f})", f"{stats['fraction_below']:.1%} of images"],
                 ["top-1 below / above it",
                  f"{stats['accuracy_below']:.4f} / {stats['accuracy_above']:.4f}"]]
    print_table(["through the app's classify API", "value"], rows,
                f"model: {folder or 'untrained'} (temperature "
                f"{record['temperature'] if record else 1.0})")
    print(f"api_ece={ece:.4f} api_top1={correct.mean():.4f} "
          f"api_mean_confidence={confidence.mean():.4f} n={len(y)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
