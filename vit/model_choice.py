"""Which model the demo serves, and what it may claim about it.

One policy, in one place: the model asked for (a Hub repo[@rev] or a local
folder), else the copy in the HF cache, else the bundled weights, else an
untrained model that says so in capital letters. Every step down the list
leaves a notice that the page shows; nothing here knows about Gradio.

    model, labels, info = choose_model("user/repo@main")   # MODEL_REPO in app.py
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from . import calibration, hub, model_folder
from .config import get_preset
from .data import CIFAR100_LABELS
from .model import build_vit


@dataclass
class ModelInfo:
    """Where the weights came from and how good they are, for the UI header."""

    source: str
    preset: str = "?"
    parameters: int = 0
    test_top1: float | None = None
    test_top5: float | None = None
    trained: bool = True
    notice: str | None = None
    progress: str | None = None  # e.g. "checkpoint after 17 of 50 epochs"
    temperature: float = 1.0  # calibration.json: probabilities are softmax(logits / T)
    # calibration.json's "not_sure": threshold (calibrated top-1 under it: "not
    # sure") and the held-out accuracy below / above it
    not_sure: dict | None = None
    faithfulness: dict | None = None  # faithfulness.json: dataset-level map scores
    test_time_flip: bool = False  # classify by the mean logits of the image and its mirror


UNTRAINED_NOTICE = ("No trained weights were found: this model is UNTRAINED and its "
                    "predictions are random.")


def choose_model(spec: str | None = None, timeout: float = 3.0):
    """(keras model, label names, ModelInfo) for `spec`, falling back as the
    module docstring says. Raises ModelIntegrityError only when the bundled
    weights themselves are broken (a broken release must not pass silently).

    The Hub steps (probe, metadata, download) are bounded by `timeout` in
    `hub.resolve_model`, so start-up never waits long on a slow Hub.
    """
    if spec is None and not model_folder.bundled_available():
        return untrained_model()
    try:
        folder, notice = hub.resolve_model(spec, timeout=timeout)
    except (hub.HubError, ValueError) as exc:  # bad spec, or no Hub and nothing bundled
        return untrained_model(f"Could not load the model {spec!r} ({exc}) and no "
                               f"bundled weights exist.")
    try:
        model = model_folder.load_pretrained(folder)
    except model_folder.ModelIntegrityError as exc:
        if spec is None:  # the bundled weights themselves are broken: say so loudly
            raise
        if not model_folder.bundled_available():  # a Space serving a Hub model
            return untrained_model(f"Could not load the model {spec!r} ({exc}).")
        model, labels, info = choose_model(None, timeout)  # the bundled weights
        info.notice = f"{exc}; using the bundled model instead."
        return model, labels, info
    return model, *describe_folder(model, folder, spec, notice)


def describe_folder(model, folder: str, spec: str | None, notice: str | None):
    """(labels, ModelInfo) from a loaded folder's labels, metrics and calibration."""
    metrics = _read_json(folder, "metrics.json") or {}
    labels = _read_json(folder, "labels.json") or CIFAR100_LABELS
    bundled = os.path.abspath(folder) == os.path.abspath(model_folder.BUNDLED_DIR)
    source = "bundled weights" if bundled else (spec if spec and not notice else folder)
    try:
        calibrated = calibration.read_calibration(folder) or {}
    except calibration.CalibrationError as exc:  # serve, but say so
        calibrated = {}
        notice = _join(notice, f"{exc}; confidences are uncalibrated.")
    if model_folder.measured_on_other_weights(folder, calibrated):
        calibrated = {}
        notice = _join(notice, "calibration.json was fitted for other weights (or another "
                               "test-time flip); confidences are uncalibrated.")
    faithfulness = _read_json(folder, "faithfulness.json", quiet=True)
    if model_folder.measured_on_other_weights(folder, faithfulness):
        faithfulness = None
        notice = _join(notice, "faithfulness.json was measured on other weights (or another "
                               "test-time flip); its scores are not shown.")
    info = ModelInfo(source=source, preset=metrics.get("preset", "?"),
                     parameters=model.count_params(),
                     test_top1=metrics.get("test_top1"), test_top5=metrics.get("test_top5"),
                     notice=notice, temperature=calibrated.get("temperature", 1.0),
                     not_sure=calibrated.get("not_sure"),
                     faithfulness=faithfulness,
                     test_time_flip=model_folder.uses_test_time_flip(folder))
    if metrics.get("in_training"):
        info.progress = (f"training checkpoint after {metrics.get('epochs')} of "
                         f"{metrics.get('epochs_planned')} epochs")
    return list(labels), info


def untrained_model(reason: str | None = None, preset: str = "compact"):
    """Random weights, loudly labelled: the last resort."""
    model = build_vit(get_preset(preset))
    notice = f"{reason} {UNTRAINED_NOTICE}" if reason else UNTRAINED_NOTICE
    info = ModelInfo(source="random initialisation", preset=preset,
                     parameters=model.count_params(), trained=False, notice=notice)
    return model, list(CIFAR100_LABELS), info


def _join(notice: str | None, more: str) -> str:
    """One notice line from several reasons."""
    return f"{notice} {more}" if notice else more


def _read_json(folder: str, name: str, quiet: bool = False):
    """A JSON file of the model folder, or None if absent (or, quiet, unreadable)."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        if quiet:  # optional extras must not stop the demo
            return None
        raise
