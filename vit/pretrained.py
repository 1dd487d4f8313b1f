"""The bundled model and safe loading of any model folder.

A model folder is what `train.py --output-dir` writes (Keras' unzipped layout
plus labels.json, metrics.json, README.md, ...). `load_pretrained` checks it
before Keras touches it: required files present, and the weights' sha256 equal
to the one metrics.json recorded, so a truncated or corrupted download fails
with a message naming the file instead of an h5py traceback.
"""

from __future__ import annotations

import json
import os

import keras

BUNDLED_DIR = os.path.join(os.path.dirname(__file__), "weights")
WEIGHTS_FILE = "model.weights.h5"
REQUIRED_FILES = ("config.json", WEIGHTS_FILE)


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
    from .export import sha256_file

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
