"""The model folder: one owner for its format.

A model folder is what `train.py --output-dir` writes, what the Hub holds and
what the app loads: Keras' unzipped layout (config.json, metadata.json,
model.weights.h5) plus labels.json, metrics.json (with the weights' sha256 and
the training lineage), history.csv, and the paperwork `vit.export` adds
(curves, calibration, model card). This module names the files, writes the
model part, verifies a folder before Keras touches it (so a truncated download
fails with a message naming the file instead of an h5py traceback), loads it
and reads its lineage. It imports nothing from `vit` but the config, so
training, export, the Hub client and the app can all depend on it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil

import keras

from .config import ViTConfig

BUNDLED_DIR = os.path.join(os.path.dirname(__file__), "weights")
WEIGHTS_FILE = "model.weights.h5"
REQUIRED_FILES = ("config.json", WEIGHTS_FILE)
METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.json"
HISTORY_FILE = "history.csv"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(folder: str) -> str | None:
    """sha256 of a folder's weights file, or None without one. Files derived
    from the weights (calibration.json, faithfulness.json) record it, so they
    are never applied to weights they were not measured on."""
    path = os.path.join(folder, WEIGHTS_FILE)
    return sha256_file(path) if os.path.isfile(path) else None


# Measurements of the weights, each stamped with the weights' sha256 (and the
# test-time flip they were measured with), and the files that belong to them
# (removed together).
DERIVED_FILES = {"calibration.json": ("reliability.png",), "faithfulness.json": ()}


def measured_on_other_weights(folder: str, record: dict | None) -> bool:
    """Whether a derived record (calibration.json, faithfulness.json) names
    other weights than the folder's, or another test-time flip setting (one
    view against two is another model). Unstamped records predate stamping
    and are trusted; write_model_folder removes them when the model changes."""
    if not (record or {}).get("weights_sha256"):
        return False
    metrics = {}
    if os.path.isfile(os.path.join(folder, METRICS_FILE)):
        with open(os.path.join(folder, METRICS_FILE)) as f:
            metrics = json.load(f)
    return _stamp(record) != (metrics.get("weights_sha256") or weights_sha256(folder),
                              _config_flip(metrics))


def _stamp(record: dict) -> tuple:
    """The model a derived record was measured on: (weights sha256, test-time flip)."""
    return record.get("weights_sha256"), bool(record.get("test_time_flip", False))


def _config_flip(metrics: dict) -> bool:
    """The test-time flip a folder's metrics.json config sets (older folders: off)."""
    return ViTConfig.from_dict(metrics.get("config") or {}).arch.test_time_flip


def _remove_stale_derived_files(folder: str, sha: str, flip: bool) -> None:
    """New model: measurements of other weights or another test-time flip
    (or unstamped ones) go."""
    for name, companions in DERIVED_FILES.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                stamp = _stamp(json.load(f))
        except (OSError, ValueError, AttributeError):
            stamp = None
        if stamp != (sha, flip):
            for stale in (name, *companions):
                if os.path.isfile(os.path.join(folder, stale)):
                    os.remove(os.path.join(folder, stale))


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
        config = metrics.get("config") or {}
        split = (config.get("recipe") or config).get("validation_split")
        if split is not None:  # what a fine-tuning's hold-out must stay within
            stages[0]["validation_split"] = split
    path = os.path.join(folder, "history.csv")
    history = read_history_csv(path) if os.path.isfile(path) else []
    return {"stages": stages, "history": [{**row, "stage": row.get("stage", 1)}
                                          for row in history]}


def uses_test_time_flip(folder: str) -> bool:
    """Whether the folder's model classifies by the mean of the image's and its
    mirror's logits (config.test_time_flip in metrics.json; older folders: no)."""
    path = os.path.join(folder, "metrics.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        return _config_flip(json.load(f))


def epochs_before(parent: dict | None) -> int:
    """Epochs trained before a fine-tuning stage began (0 without a parent)."""
    return sum(st.get("epochs", 0) for st in (parent or {}).get("stages", []))


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
                       history: list[dict], label_names: list[str]) -> dict:
    """Save the float32 model, metrics.json (with the weights' sha256),
    labels.json and history.csv; returns the metrics as written."""
    os.makedirs(output_dir, exist_ok=True)
    # Keras' directory saver creates assets/ and fails (masked as an UnboundLocalError
    # in saving_lib) when it exists: a re-export replaces the whole model.
    shutil.rmtree(os.path.join(output_dir, "assets"), ignore_errors=True)
    without_optimizer(model).save(output_dir, zipped=False)
    metrics = {**metrics, "config": config.to_dict(),
               "parameters": int(model.count_params()),
               "weights_sha256": sha256_file(os.path.join(output_dir, WEIGHTS_FILE))}
    _remove_stale_derived_files(output_dir, metrics["weights_sha256"],
                                config.arch.test_time_flip)
    with open(os.path.join(output_dir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2)
    with open(os.path.join(output_dir, LABELS_FILE), "w") as f:
        json.dump(list(label_names), f, indent=0)
    if history:
        write_history_csv(history, os.path.join(output_dir, HISTORY_FILE))
    return metrics


class ModelIntegrityError(RuntimeError):
    """A model folder is incomplete or corrupted; the message names the file."""


def bundled_available(folder: str | None = None) -> bool:
    """True when the bundled folder (or `folder`) holds config.json + model.weights.h5."""
    folder = folder or BUNDLED_DIR
    return all(os.path.isfile(os.path.join(folder, name)) for name in REQUIRED_FILES)


def _read_json(folder: str, name: str):
    try:
        with open(os.path.join(folder, name)) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{name} in {folder} is unreadable or corrupted: {exc}") from None


def verify_model_folder(folder: str) -> dict:
    """Check a model folder; returns its metrics.json content ({} if absent).

    Raises ModelIntegrityError naming the file when a required file is missing,
    a JSON file does not parse, the weights' sha256 differs from the one in
    metrics.json, or the weights file is not a readable HDF5 file.
    """
    if not os.path.isdir(folder):
        raise ModelIntegrityError(f"{folder} is not a folder")
    missing = [n for n in REQUIRED_FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise ModelIntegrityError(f"{folder} is not a model folder: missing {', '.join(missing)}")
    _read_json(folder, "config.json")
    metrics = _read_json(folder, "metrics.json") if os.path.isfile(
        os.path.join(folder, "metrics.json")) else {}
    weights = os.path.join(folder, WEIGHTS_FILE)
    expected = metrics.get("weights_sha256") if isinstance(metrics, dict) else None
    if expected:
        actual = sha256_file(weights)
        if actual != expected:
            raise ModelIntegrityError(
                f"{WEIGHTS_FILE} in {folder} is corrupted: sha256 {actual[:12]}... "
                f"({os.path.getsize(weights):,} bytes) does not match metrics.json "
                f"({expected[:12]}...); download or export it again")
    else:  # nothing to compare with: at least make sure HDF5 can open it
        import h5py

        try:
            with h5py.File(weights, "r") as f:
                list(f.keys())
        except Exception as exc:  # h5py raises OSError, ValueError, KeyError...
            raise ModelIntegrityError(
                f"{WEIGHTS_FILE} in {folder} is corrupted or truncated: {exc}") from None
    return metrics if isinstance(metrics, dict) else {}


def load_pretrained(folder: str | None = None, compile: bool = False) -> keras.Model:
    """Load `folder` (default: the bundled model) after verify_model_folder()."""
    folder = folder or BUNDLED_DIR
    verify_model_folder(folder)
    try:
        return keras.saving.load_model(folder, compile=compile, safe_mode=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelIntegrityError(
            f"could not load the model in {folder} (config.json / {WEIGHTS_FILE}): "
            f"{type(exc).__name__}: {first}") from exc
