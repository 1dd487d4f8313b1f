import pytest

import vit


@pytest.mark.parametrize("name", sorted(vit.PRESETS))
def test_presets_round_trip_through_dict(name):
    config = vit.get_preset(name)
    assert vit.ViTConfig.from_dict(config.to_dict()) == config


def test_get_preset_returns_a_copy_and_rejects_unknown_names():
    a = vit.get_preset("compact")
    a.epochs = 1
    assert vit.get_preset("compact").epochs != 1
    with pytest.raises(KeyError, match="unknown preset"):
        vit.get_preset("nope")


def test_token_grid():
    assert vit.get_preset("tutorial").num_patches == 64
    assert vit.get_preset("compact").grid_size == 8
    assert vit.get_preset("gpu").grid_size == 16
