import json

import pytest

import vit
from vit.config import ARCHITECTURE_FIELDS, RECIPE_FIELDS, Architecture, Recipe


@pytest.mark.parametrize("name", sorted(vit.PRESETS))
def test_presets_round_trip_through_dict(name):
    config = vit.get_preset(name)
    assert vit.ViTConfig.from_dict(config.to_dict()) == config
    assert set(config.to_dict()) == {"architecture", "recipe"}


def test_get_preset_returns_a_copy_and_rejects_unknown_names():
    a = vit.get_preset("compact")
    a.recipe.epochs = 1
    a.arch.num_blocks = 1
    assert vit.get_preset("compact").recipe.epochs != 1
    assert vit.get_preset("compact").arch.num_blocks != 1
    with pytest.raises(KeyError, match="unknown preset"):
        vit.get_preset("nope")


def test_token_grid():
    assert vit.get_preset("tutorial").arch.num_patches == 64
    assert vit.get_preset("compact").arch.grid_size == 8
    assert vit.get_preset("gpu").arch.grid_size == 16


def test_architecture_and_recipe_split_the_fields():
    assert not set(ARCHITECTURE_FIELDS) & set(RECIPE_FIELDS)
    # what only acts while training is in the recipe
    assert {"attention_dropout", "stochastic_depth", "augment", "epochs"} <= set(RECIPE_FIELDS)
    assert {"projection_dim", "num_heads", "key_dim", "tokenizer"} <= set(ARCHITECTURE_FIELDS)


def test_flat_dicts_from_older_folders_and_checkpoints_still_load():
    # the bundled model's metrics.json was written before the split
    with open("vit/weights/metrics.json") as f:
        flat = json.load(f)["config"]
    assert "projection_dim" in flat and "architecture" not in flat
    config = vit.ViTConfig.from_dict(flat)
    assert config.arch == vit.get_preset("compact").arch
    assert config.recipe.epochs == flat["epochs"] and config.recipe.cutmix_alpha == 1.0


def test_replace_routes_each_field_to_its_part_and_rejects_unknown_ones():
    config = vit.get_preset("tiny").replace(epochs=3, num_blocks=1, mlp_dropout=0.0)
    assert (config.recipe.epochs, config.arch.num_blocks, config.recipe.mlp_dropout) == (3, 1, 0.0)
    assert config.get("epochs") == 3 and config.get("num_blocks") == 1
    with pytest.raises(TypeError, match="unknown config field"):
        config.replace(epochz=3)


def test_each_part_validates_itself():
    with pytest.raises(ValueError, match="projection_dim"):
        Architecture(projection_dim=64, mlp_units=(128, 32))
    with pytest.raises(ValueError, match="unknown input_norm"):
        Architecture(input_norm="batch")
    with pytest.raises(ValueError, match="unknown augment"):
        Recipe(augment="strong")
    with pytest.raises(ValueError, match="probability"):
        Recipe(resample_prob=1.5)
