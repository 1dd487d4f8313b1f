"""The training loop: AdamW + warm-up/cosine, epoch checkpoints, exact resume.

A checkpoint is written after every epoch (full model with optimizer state,
plus a JSON sidecar with the epoch, history and timing). Batches and dropout
masks are pure functions of (seed, epoch, step), so `resume=True` after
Ctrl-C or `kill -9` continues bit-for-bit where the last finished epoch
left off.
"""

from __future__ import annotations

import json
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf

from . import data as vdata
from . import distribute, fine_tuning
from .config import ViTConfig
from .model_folder import load_pretrained, read_lineage
from .model import build_vit

select_strategy = distribute.select_strategy  # where it used to live

CHECKPOINT_DIR = "checkpoint"
LATEST = "latest.json"


def set_precision(mode: str) -> None:
    policies = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
    keras.mixed_precision.set_global_policy(policies[mode])


def compile_model(model: keras.Model, config: ViTConfig, steps_per_epoch: int,
                  jit: bool = False) -> None:
    """AdamW with linear warm-up then cosine decay; top-1/top-5 metrics."""
    total = max(1, config.recipe.epochs * steps_per_epoch)
    warmup = min(config.recipe.warmup_epochs * steps_per_epoch, total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.recipe.learning_rate,
        decay_steps=total - warmup, alpha=0.01,
        warmup_target=config.recipe.learning_rate if warmup else None, warmup_steps=warmup)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                       weight_decay=config.recipe.weight_decay, global_clipnorm=1.0)
    exclude_from_weight_decay(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                  label_smoothing=config.recipe.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                 keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
        jit_compile=jit)


def exclude_from_weight_decay(optimizer) -> None:
    """No decay on biases, norms, embeddings and temperatures.

    Keras does not serialise this setting, so a resumed optimizer needs it again.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # fp16 loss scaling wraps it
    optimizer.exclude_from_weight_decay(
        var_names=["bias", "gamma", "beta", "embeddings", "class_token", "scale"])


def reseed_dropout(model: keras.Model, seed: int, epoch: int) -> None:
    """Set every SeedGenerator (dropout, drop-path) to a state keyed by (seed, epoch)."""
    for i, layer in enumerate(model._flatten_layers(include_self=False)):
        for j, gen in enumerate(getattr(layer, "_seed_generators", [])):
            gen.state.assign(np.array([seed * 1_000_003 + epoch, i * 64 + j],
                                      dtype=gen.state.dtype))


class EpochCheckpoint(keras.callbacks.Callback):
    """Atomic per-epoch checkpoint; also times the training part of each epoch."""

    def __init__(self, directory, config, seed, history, train_seconds, steps,
                 provenance=None, keep=1, write=True):
        super().__init__()
        self.directory = directory
        self.write = write  # False on the non-chief workers of a multi-worker run
        self.steps, self._batches = steps, 0
        self.keep = keep
        self.provenance = provenance or {}  # command, init_from, parent: saved as is
        self.config = config
        self.seed = seed
        self.history = history
        self.train_seconds = train_seconds
        self.images_per_epoch = steps * config.recipe.batch_size
        self._t0 = self._t1 = None

    def on_epoch_begin(self, epoch, logs=None):
        reseed_dropout(self.model, self.seed, epoch)
        self._t0, self._t1 = time.perf_counter(), None
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1

    def on_test_begin(self, logs=None):
        if self._t0 is not None and self._t1 is None:
            self._t1 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self._batches < self.steps:  # Keras only warns, then restarts the data
            raise RuntimeError(
                f"epoch {epoch + 1} ran out of data after {self._batches} of {self.steps} "
                "batches; it was not saved")
        seconds = (self._t1 or time.perf_counter()) - self._t0
        self.train_seconds += seconds
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
               "train_seconds": seconds, "images_per_second": self.images_per_epoch / seconds}
        self.history.append(row)
        if not self.write:
            return
        save_checkpoint(self.directory, self.model, {
            "epoch": epoch + 1, "seed": self.seed, "config": self.config.to_dict(),
            "history": self.history, "train_seconds": self.train_seconds,
            **self.provenance,
            # RNG state: batches and dropout are keyed by (seed, epoch).
            "rng": {"seed": self.seed, "next_epoch": epoch + 1}}, keep=self.keep)


_EPOCH_FILE = re.compile(r"epoch-(\d{4,})\.keras")


def checkpoint_epoch(path: str) -> int | None:
    """The epoch of an epoch-NNNN.keras checkpoint file; None for other names."""
    match = _EPOCH_FILE.fullmatch(os.path.basename(path))
    return int(match.group(1)) if match else None


def epoch_checkpoints(directory: str) -> list[str]:
    """Paths of the epoch-NNNN.keras files in a checkpoint folder, oldest first."""
    if not os.path.isdir(directory):
        return []
    paths = [os.path.join(directory, n) for n in os.listdir(directory)]
    return sorted((p for p in paths if checkpoint_epoch(p) is not None), key=checkpoint_epoch)


def save_checkpoint(directory: str, model: keras.Model, state: dict, keep: int = 1) -> None:
    """Write epoch files, then flip `latest.json` to them, then prune old ones.

    keep > 1 leaves the last `keep` epochs on disk for checkpoint averaging
    (scripts/average_checkpoints.py). Files from epochs after this one (left
    by a run killed mid-save, then resumed) always go.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    os.makedirs(directory, exist_ok=True)
    tag = f"epoch-{state['epoch']:04d}"
    model.save(os.path.join(directory, f"{tag}.keras"))
    state = {**state, "model": f"{tag}.keras"}
    tmp = os.path.join(directory, LATEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, LATEST))
    files = epoch_checkpoints(directory)
    older = [p for p in files if checkpoint_epoch(p) < state["epoch"]]
    newer = [p for p in files if checkpoint_epoch(p) > state["epoch"]]
    for path in newer + older[:max(0, len(older) - (keep - 1))]:
        os.remove(path)


def read_checkpoint_state(directory: str) -> dict | None:
    """The latest checkpoint's state (epoch, config, history, settings), or None."""
    path = os.path.join(directory, LATEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def checkpoint_precision(state: dict) -> str | None:
    """The mixed-precision mode a checkpoint trained with; None if it predates settings."""
    return (state.get("settings") or {}).get("mixed_precision")


def load_checkpoint(directory: str):
    """(model with optimizer state, state dict), or (None, None) if there is none.

    Sets the run's precision policy first when the checkpoint records it: the
    blocks' sublayers are rebuilt under the global policy.
    """
    state = read_checkpoint_state(directory)
    if state is None:
        return None, None
    precision = checkpoint_precision(state)
    if precision:
        set_precision(precision)
    model = keras.saving.load_model(os.path.join(directory, state["model"]))
    exclude_from_weight_decay(model.optimizer)
    return model, state


class ExistingRunError(ValueError):
    """The output folder already holds a run's checkpoint and --resume was not given."""


# How a run trains, beyond its config: a resume takes them from the checkpoint.
RUN_SETTINGS = ("limit_train", "jit", "mixed_precision", "keep_checkpoints")


def _resumed_settings(state: dict, asked: dict) -> dict:
    """The checkpoint's settings, except keep_checkpoints when asked for anew.

    A checkpoint from before settings were recorded takes what was asked.
    """
    saved = state.get("settings") or {}
    if not saved:
        print("note: this checkpoint predates recorded settings; resuming with this "
              f"command's limit_train={asked['limit_train']!r}, jit={asked['jit']!r}, "
              f"mixed_precision={asked['mixed_precision']!r}: they must match the run's")
    settings = {k: saved.get(k, asked[k]) for k in RUN_SETTINGS}
    # may change mid-run, e.g. to start keeping epochs for averaging
    settings["keep_checkpoints"] = asked["keep_checkpoints"] or settings["keep_checkpoints"] or 1
    for k in ("limit_train", "jit", "mixed_precision"):
        if asked[k] != settings[k]:
            print(f"note: resuming with the checkpoint's {k}={settings[k]!r}, not {asked[k]!r}")
    return settings


def fit(config: ViTConfig, dataset: vdata.Cifar100, output_dir: str, *, seed: int = 0,
        resume: bool = False, limit_train: int | None = None, jit: bool = False,
        mixed_precision: str = "off", strategy: str | tf.distribute.Strategy = "auto",
        verbose: int | str = "auto", init_from: str | None = None,
        init_name: str | None = None, command: str | None = None,
        keep_checkpoints: int | None = None, preset: str | None = None):
    """Train on CIFAR-100 train (minus validation); returns (model, state).

    init_from: a model folder whose weights start the run (fine-tuning); its
    architecture must match `config`. init_name is what the metrics record
    (e.g. the Hub repo rather than its cache path). A resumed run keeps its
    own weights. The checkpoint keeps `command` and the parent's lineage
    (folder.read_lineage), so a run exported mid-training can say what made it.
    keep_checkpoints: how many of the latest epoch checkpoints stay on disk
    (default 1, or what the checkpoint says when resuming).
    A checkpoint already in output_dir is never overwritten by a new run
    (ExistingRunError unless resume). A resume continues with the checkpoint's config, preset name, seed,
    limit_train, jit and mixed precision whatever the arguments say, so that
    the data, the schedule and the numerics stay those of the run being resumed.
    Mixed precision is Keras' global policy: it stays set after fit returns.

    strategy: a name for `select_strategy` or a strategy already made (a
    multi-worker one must be: see vit.distribute). `batch_size` is the global
    batch whatever the strategy: each step's batch is split across the
    replicas (and workers), so steps per epoch, the schedule and the images
    per step are those of a single-device run. Under a multi-worker strategy
    every worker builds each global batch (a function of seed, epoch and step)
    and keeps its share (tf.data auto-sharding by DATA); gradients are summed
    across workers, so all hold the same weights after every step. Only the
    chief writes checkpoints; a resume reads the chief's checkpoint and the
    chief sends its state and variables to the others. The model returned
    there is a local copy (same weights, no optimizer), so evaluating it needs
    no other worker.
    """
    ckpt_dir = os.path.join(output_dir, CHECKPOINT_DIR)
    dist = strategy if isinstance(strategy, tf.distribute.Strategy) else select_strategy(strategy)
    multi_worker, chief = distribute.is_multi_worker(dist), distribute.is_chief(dist)
    asked = {"limit_train": limit_train, "jit": jit, "mixed_precision": mixed_precision,
             "keep_checkpoints": keep_checkpoints}
    state = read_checkpoint_state(ckpt_dir) if chief else None
    if multi_worker:  # the chief's checkpoint decides, on every worker
        state = distribute.broadcast_json(dist, state)
    if not resume and state is not None:
        # a new run here would delete the old run's epoch checkpoints as it saves its own
        raise ExistingRunError(
            f"{output_dir} already holds a run (checkpoint after epoch {state['epoch']}): "
            "add --resume to continue it, or choose another --output-dir")
    if resume and state is None:
        print(f"note: no checkpoint in {ckpt_dir}: starting a new run")
    if state is not None:
        settings = _resumed_settings(state, asked)
        saved = ViTConfig.from_dict(state["config"])
        if saved != config:
            print("note: using the checkpoint's config, not the command line's")
        config, seed = saved, state["seed"]
    else:
        settings = {**asked, "keep_checkpoints": keep_checkpoints or 1}
    set_precision(settings["mixed_precision"])

    (x_tr, y_tr), (x_val, y_val) = vdata.train_val_split(
        dataset.x_train, dataset.y_train, config.recipe.validation_split)
    if settings["limit_train"]:
        x_tr, y_tr = x_tr[:settings["limit_train"]], y_tr[:settings["limit_train"]]
    steps = len(x_tr) // config.recipe.batch_size
    if steps == 0:
        raise ValueError(f"{len(x_tr)} training images < one batch of {config.recipe.batch_size}")
    # Creating a variable under a multi-worker strategy is a collective (the chief
    # sends its initial value), which every worker must join in the same order,
    # and loading a model creates variables: files are read outside the scope.
    pretrained = load_pretrained(init_from) if init_from and state is None else None
    loaded = None
    if state is not None and chief and multi_worker:
        loaded, state = load_checkpoint(ckpt_dir)
    with dist.scope():
        if state is None:
            keras.utils.set_random_seed(seed)
            model = build_vit(config)
            if init_from:
                fine_tuning.check_same_architecture(init_from, config)
                fine_tuning.load_weights_from(model, init_from, pretrained)
            compile_model(model, config, steps, jit=settings["jit"])
            state = {"epoch": 0, "history": [], "train_seconds": 0.0, "command": command,
                     "preset": preset,
                     "init_from": (init_name or init_from) if init_from else None,
                     "parent": read_lineage(init_from) if init_from else None}
        elif multi_worker:  # the same fresh variables everywhere, then the chief's values
            model = build_vit(config)
            compile_model(model, config, steps, jit=settings["jit"])
            where = ckpt_dir if chief else "the chief's checkpoint"
            print(f"resuming from {where} after epoch {state['epoch']}")
        else:
            model, state = load_checkpoint(ckpt_dir)
            print(f"resuming from {ckpt_dir} after epoch {state['epoch']}")
        if state.get("init_from") and not state.get("parent") and init_from:
            # a checkpoint from before lineage was recorded: rebuild it
            state["parent"] = read_lineage(init_from)
        if multi_worker:
            distribute.sync_from_chief(dist, model, source=loaded)
    start = state["epoch"]
    train_ds = vdata.recipe_dataset(x_tr, y_tr, config, seed=seed, start_epoch=start)
    val_ds = vdata.eval_dataset(x_val, y_val, num_classes=config.arch.num_classes,
                                batch_size=config.recipe.batch_size) if len(x_val) else None
    provenance = {k: state.get(k) for k in ("command", "preset", "init_from", "parent")}
    provenance["preset"] = provenance["preset"] or preset  # older checkpoints lack it
    checkpoint = EpochCheckpoint(ckpt_dir, config, seed, list(state["history"]),
                                 state["train_seconds"], steps,
                                 {**provenance, "settings": settings},
                                 keep=settings["keep_checkpoints"], write=chief)
    if start < config.recipe.epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=config.recipe.epochs,
                  initial_epoch=start, steps_per_epoch=steps, callbacks=[checkpoint],
                  shuffle=False, verbose=verbose)
    if multi_worker:
        model = distribute.local_copy(model)
    return model, {"config": config, "epoch": config.recipe.epochs, "seed": seed,
                   "history": checkpoint.history, "train_seconds": checkpoint.train_seconds,
                   "train_images": len(x_tr), "val_images": len(x_val), **provenance,
                   "mixed_precision": settings["mixed_precision"], "jit": settings["jit"],
                   "replicas": dist.num_replicas_in_sync}


def average_weights(models) -> list[np.ndarray]:
    """Element-wise mean of the weights of same-shaped models, in float64.

    Checkpoint averaging (as in SWA, Izmailov et al. 2018): late in a cosine
    schedule the weights circle a minimum, and their mean can generalise
    slightly better than any one of them. Needs no batch-norm re-estimation
    here: the ViT only has layer norms.
    """
    models = list(models)
    if not models:
        raise ValueError("nothing to average")
    weights = [np.asarray(w, np.float64) for w in models[0].get_weights()]
    for other in models[1:]:
        other_weights = other.get_weights()
        if [w.shape for w in other_weights] != [w.shape for w in weights]:
            raise ValueError(f"{other.name}: weights differ in shape from {models[0].name}")
        for acc, w in zip(weights, other_weights):
            acc += w
    return [(acc / len(models)).astype(np.float32) for acc in weights]
