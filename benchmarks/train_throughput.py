"""Training throughput (images/s) of each preset, as `train.py` trains it.

    python benchmarks/train_throughput.py                          # tutorial compact gpu tiny
    python benchmarks/train_throughput.py --presets compact --steps 30
    python benchmarks/train_throughput.py --mixed-precision bf16 --jit
    python benchmarks/train_throughput.py --presets gpu --input-only  # can this host feed a GPU?
    python benchmarks/train_throughput.py --smoke                  # quick check

Per preset: build the model, `vit.training.compile_model` (AdamW, warm-up/cosine,
top-1/top-5 metrics), then `model.fit` on random uint8 images fed through
`vit.data.recipe_dataset`: the preset's own batch size and augmentation,
built exactly as `train.py` builds it.
After --warmup untimed steps (tracing, compilation), --steps training steps
are timed one by one (a preset stops early after --max-seconds); images/s is
the batch size over the median step time. Random pixels cost the same as
real ones. float32 unless --mixed-precision.

Each preset's training FLOPs per image (forward in training mode + loss +
weight gradients, counted by TensorFlow's graph profiler, `_common.training_flops`)
turn images/s into achieved GFLOP/s, to read against the machine's peak
(2 AVX2 cores at ~2.5 GHz: ~160 GFLOP/s float32), and project a run's time on
other hardware (the gpu preset's docstring in vit/config.py).

The input pipeline is also timed on its own (`recipe_dataset` iterated with no
model: gather, crop/flip, TrivialAugment where the preset uses it, the upload
round trip, mixup/CutMix), because on a GPU the host's tf.data, not the model,
sets the pace: images/s per CPU core here says how many cores a GPU run needs.

Last line: `<preset>=<images/s> <preset>_train_gflop=<per image> <preset>_gflops=<achieved>
<preset>_input=<pipeline images/s>` for each preset.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from _common import print_table, training_flops

DEFAULT_PRESETS = ("tutorial", "compact", "gpu", "tiny")


def _step_timer(warmup: int, max_seconds: float):
    """A Keras callback recording each timed step's seconds; stops after the budget."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self._t0, self._start = [], None, None

        def on_train_batch_begin(self, batch, logs=None):
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                float(logs["loss"])  # make sure the step has really finished
            now = time.perf_counter()
            if batch < warmup:
                return
            self._start = self._start or self._t0
            self.times.append(now - self._t0)
            if now - self._start > max_seconds and len(self.times) >= 2:
                self.model.stop_training = True

    return StepTimer()


def _random_images(config, n: int):
    """n random uint8 images and labels of the config's shape (they cost what real ones do)."""
    rng = np.random.default_rng(0)
    size = config.arch.image_size
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return x, rng.integers(0, config.arch.num_classes, n)


def measure(preset: str, warmup: int, steps: int, max_seconds: float, jit: bool,
            batch_size: int | None = None) -> dict:
    import keras

    import vit
    from vit import data, training

    config = vit.get_preset(preset)
    if batch_size:
        config = config.replace(batch_size=batch_size)
    total = warmup + steps
    x, y = _random_images(config, config.recipe.batch_size * total)
    keras.utils.set_random_seed(0)
    model = vit.build_vit(config)
    training.compile_model(model, config, steps_per_epoch=total, jit=jit)
    ds = data.recipe_dataset(x, y, config.replace(epochs=1), seed=0)
    timer = _step_timer(warmup, max_seconds)
    t0 = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=total, callbacks=[timer], verbose=0,
              shuffle=False)
    wall = time.perf_counter() - t0
    step = statistics.median(timer.times)
    ips = config.recipe.batch_size / step
    flops = training_flops(model)
    result = dict(preset=preset, batch=config.recipe.batch_size, params=model.count_params(),
                  steps=len(timer.times), step_ms=1000 * step, ips=ips, wall=wall,
                  train_gflop=flops / 1e9, gflops=ips * flops / 1e9)
    keras.backend.clear_session()
    return result


def measure_input(preset: str, warmup: int, batches: int, batch_size: int | None = None) -> dict:
    """Images/s of the preset's training pipeline alone, on every core tf.data may use."""
    import vit
    from vit import data

    config = vit.get_preset(preset)
    if batch_size:
        config = config.replace(batch_size=batch_size)
    batch = config.recipe.batch_size
    x, y = _random_images(config, batch * (warmup + batches))
    batches_out = iter(data.recipe_dataset(x, y, config.replace(epochs=1), seed=0))
    for _ in range(warmup):  # tracing, and the prefetch buffer filling
        next(batches_out)
    t0 = time.perf_counter()
    for _ in range(batches):
        images, _ = next(batches_out)
        images.numpy()  # materialised, as a training step would consume it
    seconds = time.perf_counter() - t0
    return dict(preset=preset, augment=config.recipe.augment, input_ips=batch * batches / seconds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=None,
                   help=f"default: {' '.join(DEFAULT_PRESETS)}")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per preset")
    p.add_argument("--steps", type=int, default=20, help="timed steps per preset")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="stop timing a preset after this long (at least 2 steps)")
    p.add_argument("--mixed-precision", choices=["off", "bf16", "fp16"], default="off")
    p.add_argument("--jit", action="store_true", help="XLA-compile the train step")
    p.add_argument("--batch-size", type=int, default=None,
                   help="override every preset's batch size")
    p.add_argument("--input-batches", type=int, default=100,
                   help="timed batches of the input pipeline alone, per preset")
    p.add_argument("--input-only", action="store_true",
                   help="time only the input pipeline (no model, no training step)")
    p.add_argument("--smoke", action="store_true",
                   help="a very short run that only checks the script works")
    args = p.parse_args(argv)
    if args.smoke:
        args.presets = args.presets or ["tiny"]
        args.warmup, args.steps, args.max_seconds, args.input_batches = 1, 2, 10.0, 3
    presets = args.presets or list(DEFAULT_PRESETS)

    from vit import training

    training.set_precision(args.mixed_precision)
    inputs = []
    for preset in presets:
        inputs.append(measure_input(preset, args.warmup, args.input_batches, args.batch_size))
        print(f"  {preset}: input pipeline alone {inputs[-1]['input_ips']:.0f} images/s",
              flush=True)
    cores = os.cpu_count() or 1
    print_table(["preset", "augment", "pipeline images/s", f"per core ({cores} cores)"],
                [[r["preset"], r["augment"], f"{r['input_ips']:.0f}",
                  f"{r['input_ips'] / cores:.0f}"] for r in inputs],
                "Input pipeline alone (tf.data, no model): what a GPU's host must sustain")
    if args.input_only:
        print(" ".join(f"{r['preset']}_input={r['input_ips']:.1f}" for r in inputs))
        return 0
    print(f"\nprecision: {args.mixed_precision}, XLA train step: {args.jit}, "
          f"{args.warmup} warm-up + {args.steps} timed steps (max {args.max_seconds:.0f} s)",
          flush=True)
    results = []
    for preset, pipeline in zip(presets, inputs):
        r = measure(preset, args.warmup, args.steps, args.max_seconds, args.jit,
                    args.batch_size)
        print(f"  {preset}: {r['ips']:.1f} images/s ({r['wall']:.0f} s)", flush=True)
        results.append({**r, **pipeline})
    print_table(["preset", "params", "batch", "timed steps", "median step ms", "images/s",
                 "train GFLOP/image", "achieved GFLOP/s"],
                [[r["preset"], f"{r['params']:,}", r["batch"], r["steps"],
                  f"{r['step_ms']:.0f}", f"{r['ips']:.1f}", f"{r['train_gflop']:.3f}",
                  f"{r['gflops']:.1f}"] for r in results],
                "Training throughput")
    print(" ".join(f"{r['preset']}={r['ips']:.1f} "
                   f"{r['preset']}_train_gflop={r['train_gflop']:.4f} "
                   f"{r['preset']}_gflops={r['gflops']:.2f} "
                   f"{r['preset']}_input={r['input_ips']:.1f}"
                   for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
