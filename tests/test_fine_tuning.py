"""vit.fine_tuning: what a run started from another model folder may change."""

import json

import pytest

import vit
from vit import fine_tuning


def test_fine_tuning_warns_when_its_hold_out_was_trained_on(tmp_path):
    config = vit.get_preset("tiny")
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"config": config.replace(validation_split=0.1).to_dict()}))
    for split in (0.1, 0.04):  # within the parent's hold-out
        assert fine_tuning.held_out_overlap(str(tmp_path), config.replace(validation_split=split)) is None
    warning = fine_tuning.held_out_overlap(str(tmp_path), config.replace(validation_split=0.2))
    assert "trained on" in warning and "validation_split <= 0.1" in warning
    # a parent that was itself fine-tuned with a larger split: its first stage's counts
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"config": config.replace(validation_split=0.2).to_dict(),
         "stages": [{"epochs": 1, "validation_split": 0.05}, {"epochs": 1}]}))
    warning = fine_tuning.held_out_overlap(str(tmp_path), config.replace(validation_split=0.1))
    assert "validation_split <= 0.05" in warning


def test_preset_with_architecture_ignores_the_recipe():
    tuned = vit.get_preset("compact").replace(epochs=80, mixup_alpha=0.2, mlp_dropout=0.3)
    assert fine_tuning.preset_with_architecture(tuned) == "compact"
    assert fine_tuning.preset_with_architecture(vit.get_preset("tutorial")) == "tutorial"
    assert fine_tuning.preset_with_architecture(tuned.replace(num_heads=2, key_dim=64)) is None
    assert fine_tuning.preset_with_architecture(tuned.replace(input_norm="image")) == "compact"
    assert fine_tuning.preset_with_architecture(tuned.replace(test_time_flip=True)) == "compact"


def test_only_the_network_must_match(tmp_path):
    base = vit.get_preset("tiny")
    (tmp_path / "metrics.json").write_text(json.dumps({"config": base.to_dict()}))
    # the recipe, the input normalisation and the test-time flip may differ
    fine_tuning.check_same_architecture(
        str(tmp_path), base.replace(epochs=3, mlp_dropout=0.0, input_norm="image",
                                    test_time_flip=True))
    with pytest.raises(ValueError, match="num_heads: 2 there, 1 here"):
        fine_tuning.check_same_architecture(str(tmp_path), base.replace(num_heads=1, key_dim=32))
    with pytest.raises(ValueError, match="no metrics.json"):
        fine_tuning.check_same_architecture(str(tmp_path / "nothing"), base)
