"""Helpers shared by the benchmark scripts: model choice, data folder, timing, tables."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

UNTRAINED_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!! WARNING: no bundled weights (vit/weights) and no --model given:\n"
    "!! benchmarking an UNTRAINED `compact` model with random weights.\n"
    "!! Speed numbers are representative of that preset; accuracy is NOT.\n" + "!" * 78 + "\n")


def add_model_args(parser, data: bool = False, flip: bool = True) -> None:
    """--model, --data-dir (data=True), --test-time-flip (flip=True: scripts that
    classify themselves; those that go through the app follow the folder) and --smoke."""
    parser.add_argument("--model", default=None, metavar="FOLDER",
                        help="model folder (default: the bundled weights; if there are "
                             "none, an untrained `compact` model, with a warning)")
    if data:
        parser.add_argument("--data-dir", default=default_data_dir(),
                            help="extracted cifar-100-python folder "
                                 "(default: $CIFAR100_DIR, else ../shared/data/cifar100)")
    if flip:
        parser.add_argument("--test-time-flip", choices=("folder", "on", "off"),
                            default="folder",
                            help="classify by the mean logits of each image and its mirror: "
                                 "as the model folder says (default, what the app does), "
                                 "or force it")
    parser.add_argument("--smoke", action="store_true",
                        help="a very short run that only checks the script works")


def default_data_dir() -> str | None:
    env = os.environ.get("CIFAR100_DIR")
    if env:
        return env
    shared = ROOT.parent / "shared" / "data" / "cifar100"
    return str(shared) if (shared / "train").is_file() else None


def chosen_folder(folder: str | None) -> str | None:
    """The folder to load, or None when only the untrained fallback is left."""
    from vit import model_folder as folders

    if folder:
        return folder
    return folders.BUNDLED_DIR if folders.bundled_available() else None


def flip_setting(args) -> bool:
    """The --test-time-flip choice, resolved against the chosen model folder."""
    from vit import model_folder as folders

    if args.test_time_flip != "folder":
        return args.test_time_flip == "on"
    chosen = chosen_folder(args.model)
    return bool(chosen) and folders.uses_test_time_flip(chosen)


def load_model(folder: str | None):
    """(keras model, description). Falls back loudly to an untrained `compact` model."""
    import vit
    from vit import model_folder as folders

    chosen = chosen_folder(folder)
    if chosen is None:
        print(UNTRAINED_WARNING, flush=True)
        model = vit.build_vit(vit.get_preset("compact"))
        return model, "UNTRAINED compact (random weights)"
    model = folders.load_pretrained(chosen)
    name = "bundled weights" if chosen == folders.BUNDLED_DIR else chosen
    return model, f"{name} ({model.count_params():,} parameters)"


def forward_flops(model) -> int:
    """Floating-point operations of one image's forward pass (a multiply-add is 2).

    Counted by TensorFlow's graph profiler on the frozen inference graph, so
    latencies can be read against the machine's peak FLOP/s.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    size = int(model.input_shape[1])
    spec = tf.TensorSpec((1, size, size, 3), tf.float32)
    return _graph_flops(convert_variables_to_constants_v2(
        tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)).graph)


def training_flops(model, num_classes: int | None = None) -> int:
    """Floating-point operations of one image's training step: the forward pass
    in training mode, the loss and every weight gradient (about 3x the forward).

    Counted by the same graph profiler on the step's graph, so a training
    throughput (images/s) reads as achieved FLOP/s against the machine's peak,
    and a run's wall time on other hardware can be projected from it.
    """
    import keras
    import tensorflow as tf

    size = int(model.input_shape[1])
    classes = num_classes or int(model.output_shape[-1])

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, logits,
                                                                        from_logits=True))
        return tape.gradient(loss, model.trainable_variables)

    return _graph_flops(step.get_concrete_function(
        tf.TensorSpec((1, size, size, 3), tf.float32), tf.TensorSpec((1, classes), tf.float32)).graph)


def _graph_flops(graph) -> int:
    """TensorFlow's graph profiler: the float operations of every op in `graph`."""
    import tensorflow as tf

    options = {**tf.compat.v1.profiler.ProfileOptionBuilder.float_operation(), "output": "none"}
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def time_calls(fn, iters: int, warmup: int = 3) -> list[float]:
    """Milliseconds per call of fn(), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def percentile(values, q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(q / 100.0 * (len(values) - 1))))
    return float(values[k])


def repeated_latency(fn, repeats: int, iters: int, warmup: int = 3) -> tuple[float, float]:
    """(p50, p95) in ms: each the median over `repeats` runs of `iters` calls."""
    p50s, p95s = [], []
    for r in range(repeats):
        times = time_calls(fn, iters, warmup if r == 0 else 1)
        p50s.append(percentile(times, 50))
        p95s.append(percentile(times, 95))
    return statistics.median(p50s), statistics.median(p95s)


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
    sys.stdout.flush()
