"""Test-set accuracy of a model folder, and the "real uploads" check.

    python benchmarks/accuracy.py --data-dir /path/to/cifar100            # top-1/top-5
    python benchmarks/accuracy.py --data-dir /path/to/cifar100 --uploads  # + uploads check
    python benchmarks/accuracy.py --smoke                                 # quick check

Measures top-1 / top-5 on the 10,000 CIFAR-100 test images (batched
model.predict, over the image and its mirror when the folder's test-time
flip is on, as the app classifies; --test-time-flip on|off forces it),
per-class accuracy (best and worst 5 classes) and the 10
most frequent confusions (true -> predicted).

--uploads re-encodes every test image the way users' files arrive: upscaled
to 256x256 (Pillow BICUBIC), saved as JPEG quality 90 and as PNG, then decoded
through `vit.images.prepare` (the app's own path) and classified. Requirement:
upload top-1 within 1 point of the raw top-1.

Accuracy is deterministic, so there is nothing to repeat. The last line is
machine-readable: `top1=0.xxxx top5=0.xxxx [upload_jpeg_top1=... delta_jpeg=...
upload_png_top1=... delta_png=... uploads_ok=yes|no]`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _common import add_model_args, chosen_folder, flip_setting, load_model, print_table
from PIL import Image

UPLOAD_SIDE = 256
# PNG is lossless: the compression level changes only the encoding time.
FORMATS = {"jpeg": dict(format="JPEG", quality=90), "png": dict(format="PNG", compress_level=1)}


def topk_accuracy(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return float(np.mean(top5[:, 0] == y)), float(np.mean((top5 == y[:, None]).any(axis=1)))


def as_upload(pixels: np.ndarray, fmt: str) -> np.ndarray:
    """32x32 test image -> 256x256 file bytes -> the app's decoding -> 32x32 model input."""
    from vit import images

    buf = io.BytesIO()
    big = Image.fromarray(pixels).resize((UPLOAD_SIDE, UPLOAD_SIDE), Image.Resampling.BICUBIC)
    big.save(buf, **FORMATS[fmt])
    _, model_input = images.prepare(buf.getvalue())
    return model_input


def uploads_batch(x: np.ndarray, fmt: str, workers: int) -> np.ndarray:
    # Pillow releases the GIL while encoding, decoding and resizing.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return np.stack(list(pool.map(lambda p: as_upload(p, fmt), x, chunksize=64)))


def class_report(pred: np.ndarray, y: np.ndarray, labels: list[str], classes: int) -> None:
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(axis=1)
    per_class = np.divide(np.diag(confusion), support, out=np.zeros(classes),
                          where=support > 0)
    seen = np.flatnonzero(support)
    order = seen[np.argsort(-per_class[seen], kind="stable")]
    rows = [[labels[i], f"{per_class[i]:.3f}", int(support[i])] for i in order[:5]]
    print_table(["class", "accuracy", "images"], rows, "Best 5 classes")
    rows = [[labels[i], f"{per_class[i]:.3f}", int(support[i])] for i in order[::-1][:5]]
    print_table(["class", "accuracy", "images"], rows, "Worst 5 classes")
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:10]
    rows = [[f"{labels[t]} -> {labels[p]}", int(off[t, p]), f"{off[t, p] / support[t]:.1%}"]
            for t, p in zip(*np.unravel_index(flat, off.shape)) if off[t, p] > 0]
    print_table(["true -> predicted", "count", "of class"], rows, "10 most confused pairs")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p, data=True)
    p.add_argument("--uploads", action="store_true",
                   help="also classify every image re-encoded as a 256x256 JPEG/PNG upload")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N test images (default: all 10,000)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="threads that encode/decode uploads")
    args = p.parse_args(argv)
    if args.smoke and args.limit is None:
        args.limit = 500

    from vit import data, evaluation

    ds = data.load_cifar100(args.data_dir)
    x, y = ds.x_test[:args.limit], ds.y_test[:args.limit]
    model, described = load_model(args.model)
    labels = ds.label_names
    folder = chosen_folder(args.model)
    if folder and os.path.isfile(os.path.join(folder, "labels.json")):
        with open(os.path.join(folder, "labels.json")) as f:
            labels = json.load(f)
    flip = flip_setting(args)
    print(f"model: {described}\ntest images: {len(x):,}; test-time flip: "
          f"{'on' if flip else 'off'}")

    def predict_logits(pixels):  # the app's way: vit.inference.Predictor's maths
        return evaluation.predict_logits(model, pixels, args.batch_size, test_time_flip=flip)

    t0 = time.perf_counter()
    logits = predict_logits(x)
    seconds = time.perf_counter() - t0
    top1, top5 = topk_accuracy(logits, y)
    print_table(["split", "images", "top-1", "top-5", "predict s"],
                [["test (raw pixels)", len(x), f"{top1:.4f}", f"{top5:.4f}", f"{seconds:.1f}"]],
                "Accuracy")
    class_report(np.argmax(logits, axis=1), y, labels, logits.shape[1])

    final = f"top1={top1:.4f} top5={top5:.4f}"
    if args.uploads:
        n = min(len(x), 200) if args.smoke else len(x)
        rows, ok = [], True
        raw_top1 = topk_accuracy(logits[:n], y[:n])[0]  # same images as the uploads
        for fmt in FORMATS:
            t0 = time.perf_counter()
            uploaded = uploads_batch(x[:n], fmt, args.workers)
            prep = time.perf_counter() - t0
            u1, u5 = topk_accuracy(predict_logits(uploaded), y[:n])
            delta = u1 - raw_top1
            ok &= abs(delta) <= 0.01
            changed = float(np.mean(np.any(uploaded != x[:n], axis=(1, 2, 3))))
            rows.append([f"{UPLOAD_SIDE}px {fmt.upper()}", n, f"{u1:.4f}", f"{u5:.4f}",
                         f"{100 * delta:+.2f}", f"{changed:.1%}", f"{prep:.1f}"])
            final += f" upload_{fmt}_top1={u1:.4f} delta_{fmt}={delta:+.4f}"
        rows.insert(0, ["raw pixels", n, f"{raw_top1:.4f}", "", "", "", ""])
        print_table(["input", "images", "top-1", "top-5", "delta pts", "pixels differ",
                     "encode+decode s"], rows,
                    "Real uploads (requirement: |delta| <= 1 point of raw top-1)")
        final += f" uploads_ok={'yes' if ok else 'no'}"
    print(final)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
