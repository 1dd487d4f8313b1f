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


# metrics.json "config" of the bundled model before v2 (80 epochs, written before the
# architecture/recipe split and before input_norm existed)
OLD_FLAT_CONFIG = {
    "image_size": 32, "num_classes": 100, "tokenizer": "conv", "patch_size": 4,
    "conv_channels": [64, 128], "projection_dim": 128, "num_blocks": 6, "num_heads": 4,
    "key_dim": 32, "mlp_units": [256, 128], "attention_dropout": 0.0, "mlp_dropout": 0.0,
    "locality_attention": True, "stochastic_depth": 0.1, "layer_norm_eps": 1e-06,
    "pooling": "class_token", "head_units": [], "head_dropout": 0.0, "epochs": 80,
    "batch_size": 128, "learning_rate": 0.001, "weight_decay": 0.05, "warmup_epochs": 3,
    "label_smoothing": 0.1, "augment": "basic", "resample_prob": 0.25, "mixup_alpha": 0.2,
    "cutmix_alpha": 1.0, "validation_split": 0.1}


def test_flat_dicts_from_older_folders_and_checkpoints_still_load():
    config = vit.ViTConfig.from_dict(OLD_FLAT_CONFIG)
    assert config.arch == vit.get_preset("compact").arch
    assert config.arch.input_norm == "dataset"  # what those models were trained with
    assert config.arch.test_time_flip is False  # and how they were served
    assert config.recipe.epochs == 80 and config.recipe.cutmix_alpha == 1.0
    assert vit.ViTConfig.from_dict(config.to_dict()) == config


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
    for ops in (0, 7):  # a 7th op round would share the next step's seeds
        with pytest.raises(ValueError, match="augment_ops must be 1 to 6"):
            Recipe(augment="trivial", augment_ops=ops)
    assert Recipe(augment="trivial", augment_ops=6).augment_ops == 6
