"""Test accuracy under photo-like damage, decoded the way the app decodes uploads.

    python benchmarks/robustness.py --data-dir ../shared/data/cifar100            # bundle
    python benchmarks/robustness.py --model runs/pilot-basic --n 1000              # another
    python benchmarks/robustness.py --smoke

Users' photos are dim, flat, noisy, soft, heavily compressed or tilted; the
model has only seen CIFAR's own exposure. Each of --n test images (default
2,000: the first 20 of each class, so every class weighs the same) is
upscaled to 128x128 (bicubic, as a small photo), damaged there with
Pillow, saved as PNG (JPEG for the JPEG rows) and decoded by
`vit.images.prepare`, the app's own path; then classified.
Severities (two per kind, the second the harsher):

  brightness  x0.6, x0.4   ImageEnhance.Brightness: every pixel scaled (dim light)
  contrast    x0.6, x0.4   ImageEnhance.Contrast: blended with the mean grey (haze)
  noise       sigma 15, 25 Gaussian, per pixel and channel, on 0-255 (sensor noise)
  blur        radius 1, 2  GaussianBlur (focus, motion)
  jpeg        q40, q20     re-encoded (messaging apps)
  tilt        10, 15 deg   rotated about the centre, corners filled by the
                           nearest edge pixels, cropped back to the frame
  night       x0.6 + sigma 5, x0.4 + sigma 8
                           dim and grainy together, as a phone shoots in low
                           light (a model that standardises each image's
                           contrast also magnifies the grain of a dim one)

Deterministic (noise uses a fixed seed). Last line: `clean=<top-1>` then
`<kind>_<severity>=<top-1>` for each row, then `worst_drop=<points>` (the
largest loss against clean, in accuracy points).
"""

from __future__ import annotations

import argparse
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _common import (add_model_args, default_data_dir, flip_setting, load_model,
                     print_table)
from PIL import Image, ImageEnhance, ImageFilter

SIDE = 128
DAMAGE = {  # name_severity -> function(128x128 RGB image, rng); JPEG rows: see damaged_input
    "brightness_0.6": lambda im, rng: ImageEnhance.Brightness(im).enhance(0.6),
    "brightness_0.4": lambda im, rng: ImageEnhance.Brightness(im).enhance(0.4),
    "contrast_0.6": lambda im, rng: ImageEnhance.Contrast(im).enhance(0.6),
    "contrast_0.4": lambda im, rng: ImageEnhance.Contrast(im).enhance(0.4),
    "noise_15": lambda im, rng: _noise(im, 15, rng),
    "noise_25": lambda im, rng: _noise(im, 25, rng),
    "blur_1": lambda im, rng: im.filter(ImageFilter.GaussianBlur(1)),
    "blur_2": lambda im, rng: im.filter(ImageFilter.GaussianBlur(2)),
    "jpeg_40": None,  # encoded as JPEG at this quality instead of PNG
    "jpeg_20": None,
    "tilt_10": lambda im, rng: _tilt(im, 10),
    "tilt_15": lambda im, rng: _tilt(im, 15),
    "night_0.6": lambda im, rng: _noise(ImageEnhance.Brightness(im).enhance(0.6), 5, rng),
    "night_0.4": lambda im, rng: _noise(ImageEnhance.Brightness(im).enhance(0.4), 8, rng),
}


def _noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, np.float32) + rng.normal(0, sigma, (SIDE, SIDE, 3))
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def _tilt(image: Image.Image, degrees: float) -> Image.Image:
    # pad by edge replication first, so the rotated corners hold picture, not black
    pad = SIDE // 4
    padded = np.pad(np.asarray(image), [(pad, pad), (pad, pad), (0, 0)], mode="edge")
    rotated = Image.fromarray(padded).rotate(degrees, resample=Image.Resampling.BICUBIC)
    return rotated.crop((pad, pad, pad + SIDE, pad + SIDE))


def damaged_input(pixels: np.ndarray, name: str, index: int) -> np.ndarray:
    """One 32x32 test image -> 128 px photo -> damage -> file bytes -> the app's decoding."""
    from vit import images

    big = Image.fromarray(pixels).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    if name.startswith("jpeg_"):
        big.save(buf, format="JPEG", quality=int(name.split("_")[1]))
    else:
        if name != "clean":
            big = DAMAGE[name](big, np.random.default_rng(index))
        big.save(buf, format="PNG", compress_level=1)
    return images.prepare(buf.getvalue())[1]


def top1(model, x: np.ndarray, y: np.ndarray, flip: bool) -> float:
    from vit import evaluation

    logits = evaluation.predict_logits(model, x, batch_size=500, test_time_flip=flip)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p, data=True)
    p.add_argument("--n", type=int, default=2000, help="test images: the first n/100 of each class")
    p.add_argument("--workers", type=int, default=2, help="threads for Pillow")
    args = p.parse_args(argv)
    if args.smoke:
        args.n = 100

    from vit import data

    ds = data.load_cifar100(args.data_dir or default_data_dir())
    chosen = np.sort(np.concatenate([np.flatnonzero(ds.y_test == c)[:max(1, args.n // 100)]
                                     for c in range(100)]))
    x, y = ds.x_test[chosen], ds.y_test[chosen]
    model, described = load_model(args.model)
    flip = flip_setting(args)
    print(f"model: {described}\ntest images: {len(x):,}, damaged at {SIDE} px, decoded by "
          f"vit.images.prepare; test-time flip: {'on' if flip else 'off'}", flush=True)
    scores = {}
    with ThreadPoolExecutor(max(1, args.workers)) as pool:  # Pillow releases the GIL
        for name in ["clean", *DAMAGE]:
            inputs = np.stack(list(pool.map(lambda i: damaged_input(x[i], name, i),
                                            range(len(x)))))
            scores[name] = top1(model, inputs, y, flip)
            print(f"  {name}: {scores[name]:.4f}", flush=True)
    clean = scores["clean"]
    print_table(["damage", "top-1", "points vs clean"],
                [[name, f"{s:.4f}", f"{100 * (s - clean):+.1f}" if name != "clean" else ""]
                 for name, s in scores.items()], "Robustness (top-1)")
    worst = max(100 * (clean - s) for s in scores.values())
    print(" ".join(f"{name}={s:.4f}" for name, s in scores.items()) + f" worst_drop={worst:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
