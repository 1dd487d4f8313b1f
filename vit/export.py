"""Write a trained model folder: Keras' unzipped layout plus its paperwork.

The folder is what the Hub receives and what the app loads:
config.json, metadata.json, model.weights.h5 (Keras), labels.json,
metrics.json, history.csv, curves.png, calibration.json + reliability.png
(temperature scaling fitted on the validation split) and README.md (the
model card).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform

import keras

from . import calibration as calib
from .card import write_model_card

WEIGHTS_FILE = "model.weights.h5"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_history_csv(history: list[dict], path: str) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def read_history_csv(path: str) -> list[dict]:
    """history.csv back as rows of numbers (epoch and stage as ints)."""
    with open(path, newline="") as f:
        return [{k: int(float(v)) if k in ("epoch", "stage") else float(v)
                 for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


STAGE_KEYS = ("command", "epochs", "train_seconds", "images_per_second", "hardware",
              "test_top1", "test_top5", "weights_sha256", "init_from")


def read_lineage(folder: str) -> dict:
    """The training stages behind a model folder, for a run fine-tuned from it.

    A fine-tuned model's honest cost is every epoch since random initialisation,
    so the child records the parent's stages (commands, epochs, CPU time, test
    accuracy, weights sha256) and its full history, and reports the totals.
    """
    with open(os.path.join(folder, "metrics.json")) as f:
        metrics = json.load(f)
    if metrics.get("stages"):  # the parent was fine-tuned itself; its top-level
        # epochs and seconds are totals, its accuracy and sha are its last stage's
        last = {**metrics["stages"][-1], **{k: metrics[k] for k in
                                            ("test_top1", "test_top5", "weights_sha256")
                                            if k in metrics}}
        stages = metrics["stages"][:-1] + [last]
    else:
        stages = [{k: metrics[k] for k in STAGE_KEYS if k in metrics}]
    path = os.path.join(folder, "history.csv")
    history = read_history_csv(path) if os.path.isfile(path) else []
    return {"stages": stages, "history": [{**row, "stage": row.get("stage", 1)}
                                          for row in history]}


def epochs_before(parent: dict | None) -> int:
    """Epochs trained before a fine-tuning stage began (0 without a parent)."""
    return sum(st.get("epochs", 0) for st in (parent or {}).get("stages", []))


def plot_curves(history: list[dict], path: str, title: str = "") -> None:
    """Train/val accuracy and loss per epoch, like the tutorial's plot; a dashed
    line marks where a fine-tuning stage began."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key, label in ((axes[0], "top1", "top-1 accuracy"), (axes[1], "loss", "loss")):
        ax.plot(epochs, [row.get(key) for row in history], label="train")
        if any(f"val_{key}" in row for row in history):
            ax.plot(epochs, [row.get(f"val_{key}") for row in history], label="validation")
        starts = [prev["epoch"] + 0.5 for row, prev in zip(history[1:], history)
                  if row.get("stage", 1) != prev.get("stage", 1)]
        for i, x in enumerate(starts):
            ax.axvline(x, color="gray", ls="--", lw=1,
                       label=None if i else "fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def without_optimizer(model: keras.Model) -> keras.Model:
    """A float32 copy with the same weights and no optimizer state.

    Keras saves a compiled model's optimizer variables into model.weights.h5
    (tripling its size) and keeps mixed-precision policies; a published model
    only needs float32 weights.
    """
    config = _float32_policies(model.get_config())
    if getattr(model, "optimizer", None) is None and config == model.get_config():
        return model
    plain = model.__class__.from_config(config)
    plain.set_weights(model.get_weights())
    return plain


def _float32_policies(config):
    """Mixed-precision layer policies -> float32: a published model serves on CPUs."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(
                config.get("config", {}).get("name", "")).startswith("mixed_"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _float32_policies(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_float32_policies(v) for v in config]
    return config


def write_model_folder(model: keras.Model, output_dir: str, *, config, metrics: dict,
                       history: list[dict], label_names: list[str],
                       repo_id: str | None = None) -> dict:
    """Save everything; returns the metrics as written (with the weights' sha256)."""
    os.makedirs(output_dir, exist_ok=True)
    without_optimizer(model).save(output_dir, zipped=False)
    metrics = {**metrics, "config": config.to_dict(),
               "parameters": int(model.count_params()),
               "weights_sha256": sha256_file(os.path.join(output_dir, WEIGHTS_FILE))}
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    with open(os.path.join(output_dir, "labels.json"), "w") as f:
        json.dump(list(label_names), f, indent=0)
    if history:
        write_history_csv(history, os.path.join(output_dir, "history.csv"))
        plot_curves(history, os.path.join(output_dir, "curves.png"),
                    title=f"ViT '{metrics.get('preset', '')}' on CIFAR-100")
    write_model_card(output_dir, repo_id=repo_id)
    return metrics


def calibrate_folder(model: keras.Model, dataset, folder: str, validation_split: float,
                     logits_test=None) -> dict | None:
    """Fit the temperature on train.py's validation split; write calibration.json
    and reliability.png (test split) into `folder`. Returns the record.

    The split is `data.train_val_split(x_train, y_train, validation_split)`, the
    one training.fit held out, so T is fitted on images the model never
    trained on and the test split is only measured. Without a validation split
    there is nothing honest to fit on: prints a note, removes any stale
    calibration files and returns None. Pass `logits_test` if already computed.
    """
    from .data import train_val_split
    from .training import predict_logits

    if not validation_split or validation_split <= 0:
        print("note: validation_split is 0, so no held-out images to fit a temperature on; "
              "skipping calibration (confidences stay uncalibrated)")
        for name in (calib.CALIBRATION_FILE, calib.RELIABILITY_FILE):
            if os.path.isfile(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
        return None
    _, (x_val, y_val) = train_val_split(dataset.x_train, dataset.y_train, validation_split)
    logits_val = predict_logits(model, x_val)
    if logits_test is None:
        logits_test = predict_logits(model, dataset.x_test)
    record = calib.calibrate(
        logits_val, y_val, logits_test, dataset.y_test,
        fitted_on=calib.describe_validation(len(y_val), validation_split))
    calib.write_calibration(folder, record, calib.softmax(logits_test),
                            calib.softmax(logits_test, record["temperature"]), dataset.y_test)
    return record


def export_run(model: keras.Model, state: dict, dataset, output_dir: str, *, preset: str,
               command: str, mixed_precision: str | None = None, **extra) -> dict:
    """Evaluate on the test split and write the model folder for a (finished or
    checkpointed) run; `state` is what training.fit returns or a checkpoint holds.
    mixed_precision defaults to the one the run recorded."""
    import tensorflow as tf

    from .config import ViTConfig
    from .training import checkpoint_precision, logit_metrics, predict_logits

    config = state["config"]
    if isinstance(config, dict):
        config = ViTConfig.from_dict(config)
    history = state.get("history", [])
    own_seconds = sum(row["train_seconds"] for row in history) or state.get("train_seconds", 0)
    own_images = sum(row["train_seconds"] * row["images_per_second"] for row in history)
    hardware = (f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}")
    stage = {"command": command, "epochs": len(history) or config.epochs,
             "train_seconds": round(own_seconds, 1),
             "images_per_second": round(own_images / own_seconds, 1) if own_seconds else None,
             "hardware": hardware, "init_from": state.get("init_from")}
    parent = state.get("parent")
    stages = (parent["stages"] if parent else []) + [stage]
    if parent:  # fine-tuned: one history since random initialisation
        before = epochs_before(parent)
        history = parent["history"] + [{**row, "epoch": before + row["epoch"],
                                        "stage": len(stages)} for row in history]
    # totals over every stage: the cost of this model from random initialisation
    seconds = sum(st.get("train_seconds") or 0 for st in stages)
    images = sum((st.get("train_seconds") or 0) * (st.get("images_per_second") or 0)
                 for st in stages)
    if mixed_precision is None:
        mixed_precision = (state.get("mixed_precision") or checkpoint_precision(state)
                           or "off")
    logits_test = predict_logits(model, dataset.x_test)
    metrics = logit_metrics(logits_test, dataset.y_test)
    metrics.update({
        "preset": preset, "epochs": sum(st["epochs"] for st in stages), "seed": state.get("seed"),
        "train_images": state.get("train_images"), "val_images": state.get("val_images"),
        "train_seconds": round(seconds, 1),
        "images_per_second": round(images / seconds, 1) if seconds else None,
        "mixed_precision": mixed_precision, "replicas": state.get("replicas", 1),
        **({"init_from": state["init_from"]} if state.get("init_from") else {}),
        **({"stages": stages} if parent else {}),
        "hardware": hardware, "command": command, **extra})
    if history:
        metrics.update({k: history[-1][k] for k in ("val_top1", "val_top5", "val_loss")
                        if k in history[-1] and k not in extra})
    os.makedirs(output_dir, exist_ok=True)  # the card written next reads the calibration
    calibrate_folder(model, dataset, output_dir, config.validation_split, logits_test)
    return write_model_folder(model, output_dir, config=config, metrics=metrics,
                              history=history, label_names=dataset.label_names)
