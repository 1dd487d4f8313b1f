"""Starting a run from another model folder (`train.py --init-from`).

What may differ (the recipe, the input normalisation), what must not (the
network: `check_same_architecture`), what the validation split must avoid
(images an earlier stage trained on: `held_out_overlap`), and the weight
copy itself. Also names the preset a config's network comes from.
"""

from __future__ import annotations

import json
import os

import keras

from .config import ARCHITECTURE_FIELDS, FINE_TUNE_MAY_CHANGE, PRESETS, ViTConfig
from .model_folder import load_pretrained, read_lineage


def _network(arch) -> dict:
    """The architecture fields that fix what the weights mean."""
    return {k: getattr(arch, k) for k in ARCHITECTURE_FIELDS if k not in FINE_TUNE_MAY_CHANGE}


def preset_with_architecture(config: ViTConfig) -> str | None:
    """Name of the preset whose network `config` builds: for runs that predate
    the recorded preset name (the recipe, or a FINE_TUNE_MAY_CHANGE field such
    as the input normalisation, may have been overridden)."""
    return next((name for name, preset in PRESETS.items()
                 if _network(preset.arch) == _network(config.arch)), None)


def check_same_architecture(folder: str, config: ViTConfig) -> None:
    """Raise ValueError naming every architecture field where `folder` differs.

    Comparing weight shapes is not enough: 4 heads x 32 and 2 heads x 64 have
    the same kernels but would scramble each other's weights. The recipe
    (dropout, schedule, augmentation) and the input normalisation
    (`FINE_TUNE_MAY_CHANGE`) may differ: that is fine-tuning.
    """
    path = os.path.join(folder, "metrics.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder} has no metrics.json, so its architecture is unknown")
    with open(path) as f:
        theirs = ViTConfig.from_dict(json.load(f).get("config", {})).arch
    ours = _network(config.arch)
    diffs = [f"{name}: {value} there, {ours[name]} here"
             for name, value in _network(theirs).items() if value != ours[name]]
    if diffs:
        raise ValueError(f"{folder} has another architecture ({'; '.join(diffs)})")


def held_out_overlap(folder: str, config: ViTConfig) -> str | None:
    """Why this fine-tuning's validation split would include images `folder`
    (or a stage before it) trained on, or None. The hold-out is the first
    validation_split of one fixed permutation (vit.data.train_val_split), so
    a split no larger than every earlier stage's is a subset of all their
    hold-outs, unseen by every stage."""
    with open(os.path.join(folder, "metrics.json")) as f:
        theirs = ViTConfig.from_dict(json.load(f).get("config", {})).recipe.validation_split
    theirs = min([theirs] + [st["validation_split"] for st in read_lineage(folder)["stages"]
                             if st.get("validation_split") is not None])
    ours = config.recipe.validation_split
    if ours <= theirs:
        return None
    return (f"validation_split {ours:g} holds out images that {folder} trained on (it held "
            f"out {theirs:g}): validation accuracy, checkpoint averaging and calibration "
            f"would be optimistic; use validation_split <= {theirs:g}")


def load_weights_from(model: keras.Model, folder: str,
                      pretrained: keras.Model | None = None) -> None:
    """Copy a model folder's weights (sha256-checked) into `model`; `pretrained`:
    that folder already loaded."""
    theirs, ours = (pretrained or load_pretrained(folder)).get_weights(), model.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in ours]:
        raise ValueError(f"{folder}: its weights do not fit the config being trained")
    model.set_weights(theirs)
