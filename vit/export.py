"""The end of a training run: evaluate, calibrate, write the model folder.

vit.folder writes the model part (Keras' unzipped layout, metrics.json,
labels.json, history.csv); this module adds what a reader of the folder
needs: curves.png, calibration.json + reliability.png (temperature scaling
fitted on the validation split) and README.md (the model card).
"""

from __future__ import annotations

import os
import platform

import keras

from . import calibration as calib
from . import model_folder
from .card import write_model_card
from .config import ViTConfig
from .data import train_val_split
from .evaluation import logit_metrics, predict_logits
from .training import checkpoint_precision


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


def calibrate_folder(model: keras.Model, dataset, folder: str, validation_split: float,
                     logits_test=None, test_time_flip: bool | None = None,
                     logits_val=None) -> dict | None:
    """Fit the temperature on train.py's validation split; write calibration.json
    and reliability.png (test split) into `folder`. Returns the record.

    The split is `data.train_val_split(x_train, y_train, validation_split)`, the
    one training.fit held out, so T is fitted on images the model never
    trained on and the test split is only measured. Without a validation split
    there is nothing honest to fit on: prints a note, removes any stale
    calibration files and returns None. Pass `logits_test` / `logits_val` if
    already computed (with the same test-time flip).
    `test_time_flip` defaults to the folder's own setting (its metrics.json):
    the temperature must calibrate the logits the app will divide by it.
    """
    if not validation_split or validation_split <= 0:
        print("note: validation_split is 0, so no held-out images to fit a temperature on; "
              "skipping calibration (confidences stay uncalibrated)")
        for name in (calib.CALIBRATION_FILE, calib.RELIABILITY_FILE):
            if os.path.isfile(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
        return None
    if test_time_flip is None:
        test_time_flip = model_folder.uses_test_time_flip(folder)
    _, (x_val, y_val) = train_val_split(dataset.x_train, dataset.y_train, validation_split)
    if logits_val is None:
        logits_val = predict_logits(model, x_val, test_time_flip=test_time_flip)
    if logits_test is None:
        logits_test = predict_logits(model, dataset.x_test, test_time_flip=test_time_flip)
    record = calib.calibrate(
        logits_val, y_val, logits_test, dataset.y_test,
        fitted_on=calib.describe_validation(len(y_val), validation_split))
    record["weights_sha256"] = model_folder.weights_sha256(folder)
    record["test_time_flip"] = bool(test_time_flip)
    calib.write_calibration(folder, record, calib.softmax(logits_test),
                            calib.softmax(logits_test, record["temperature"]), dataset.y_test)
    return record


def export_run(model: keras.Model, state: dict, dataset, output_dir: str, *, preset: str,
               command: str, mixed_precision: str | None = None, **extra) -> dict:
    """Evaluate on the test split and write the model folder for a (finished or
    checkpointed) run; `state` is what training.fit returns or a checkpoint holds.
    mixed_precision defaults to the one the run recorded."""
    import tensorflow as tf

    config = state["config"]
    if isinstance(config, dict):
        config = ViTConfig.from_dict(config)
    history = state.get("history", [])
    own_seconds = sum(row["train_seconds"] for row in history) or state.get("train_seconds", 0)
    own_images = sum(row["train_seconds"] * row["images_per_second"] for row in history)
    hardware = (f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}")
    stage = {"command": command, "epochs": len(history) or config.recipe.epochs,
             "train_seconds": round(own_seconds, 1),
             "images_per_second": round(own_images / own_seconds, 1) if own_seconds else None,
             "hardware": hardware, "init_from": state.get("init_from"),
             "validation_split": config.recipe.validation_split}
    parent = state.get("parent")
    stages = (parent["stages"] if parent else []) + [stage]
    if parent:  # fine-tuned: one history since random initialisation
        before = model_folder.epochs_before(parent)
        history = parent["history"] + [{**row, "epoch": before + row["epoch"],
                                        "stage": len(stages)} for row in history]
    # totals over every stage: the cost of this model from random initialisation
    seconds = sum(st.get("train_seconds") or 0 for st in stages)
    images = sum((st.get("train_seconds") or 0) * (st.get("images_per_second") or 0)
                 for st in stages)
    if mixed_precision is None:
        mixed_precision = (state.get("mixed_precision") or checkpoint_precision(state)
                           or "off")
    flip = config.arch.test_time_flip
    logits_test = predict_logits(model, dataset.x_test, test_time_flip=flip)
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
    logits_val = None
    if flip and config.recipe.validation_split > 0 and "val_top1" not in extra:
        # fit()'s validation saw one view; the folder's figures are all two-view
        _, (x_val, y_val) = train_val_split(dataset.x_train, dataset.y_train,
                                            config.recipe.validation_split)
        logits_val = predict_logits(model, x_val, test_time_flip=True)  # calibration too
        metrics.update({f"val_{k[5:]}": v for k, v in logit_metrics(logits_val, y_val).items()})
    elif history:
        metrics.update({k: history[-1][k] for k in ("val_top1", "val_top5", "val_loss")
                        if k in history[-1] and k not in extra})
    metrics = write_model_folder(model, output_dir, config=config, metrics=metrics,
                                 history=history, label_names=dataset.label_names)
    # after the weights are written: calibration.json records their sha256
    calibrate_folder(model, dataset, output_dir, config.recipe.validation_split, logits_test,
                     test_time_flip=flip, logits_val=logits_val)
    write_model_card(output_dir)  # again: the Calibration section follows the new record
    return metrics


def write_model_folder(model: keras.Model, output_dir: str, *, config, metrics: dict,
                       history: list[dict], label_names: list[str],
                       repo_id: str | None = None) -> dict:
    """The model folder (vit.folder) plus its curves and model card."""
    metrics = model_folder.write_model_folder(model, output_dir, config=config, metrics=metrics,
                                         history=history, label_names=label_names)
    if history:
        plot_curves(history, os.path.join(output_dir, "curves.png"),
                    title=f"ViT '{metrics.get('preset', '')}' on CIFAR-100")
    write_model_card(output_dir, repo_id=repo_id)
    return metrics
