"""The app's analysis layer, without Gradio: one upload -> predictions + pictures."""

import numpy as np
import pytest
from PIL import Image

import vit
from tests.conftest import ROOT
from vit import images
from vit.analysis import DISPLAY, Explainer, ModelInfo


@pytest.fixture(scope="module")
def explainer():
    model = vit.build_vit(vit.get_preset("tiny"))
    return Explainer(model, vit.data.CIFAR100_LABELS, ModelInfo(source="test"))


@pytest.fixture(scope="module")
def analysis(explainer):
    return explainer.analyse(str(ROOT / "examples" / "apple.png"))


def test_analysis_has_probabilities_attention_and_top1_gradients(explainer, analysis):
    assert analysis.pixels.shape == (32, 32, 3) and analysis.display.shape == (DISPLAY, DISPLAY, 3)
    np.testing.assert_allclose(analysis.probs.sum(), 1.0, atol=1e-5)
    assert len(analysis.attention) == 2
    assert list(analysis.gradients) == [analysis.top_class]
    fresh = explainer.predictor.class_gradients(analysis.pixels, analysis.top_class)
    for a, b in zip(analysis.gradients[analysis.top_class], fresh):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_classification_only_path_matches(explainer, analysis):
    quick = explainer.analyse(str(ROOT / "examples" / "apple.png"), gradients=False)
    np.testing.assert_allclose(quick.probs, analysis.probs, atol=1e-5)
    assert quick.gradients == {}


def test_top_k_is_sorted_and_named(explainer, analysis):
    top = explainer.top_k(analysis, 5)
    assert len(top) == 5 and list(top.values()) == sorted(top.values(), reverse=True)
    assert set(top) <= set(vit.data.CIFAR100_LABELS)


def test_pictures_have_display_size_and_differ(explainer, analysis):
    pictures = [explainer.rollout(analysis), explainer.raw(analysis, 0, None),
                explainer.patch(analysis, 1, 5, 0), explainer.class_map(analysis, 3)]
    for p in pictures:
        assert p.shape == (DISPLAY, DISPLAY, 3) and p.dtype == np.uint8
    assert len({p.tobytes() for p in pictures}) == 4
    assert 3 in analysis.gradients  # computed once, then cached


def test_model_view_outlines_the_clicked_patch(explainer, analysis):
    plain = explainer.model_view(analysis)
    patch = explainer.patch_at(DISPLAY - 1, 0)  # top-right corner
    assert patch == explainer.grid - 1
    marked = explainer.model_view(analysis, patch)
    changed = np.argwhere((plain != marked).any(-1))
    assert changed[:, 1].min() >= DISPLAY * (explainer.grid - 1) // explainer.grid - 1
    assert changed[:, 0].max() < DISPLAY // explainer.grid


def test_bad_upload_raises_decode_error(explainer):
    with pytest.raises(images.ImageDecodeError):
        explainer.analyse(b"definitely not an image")


def test_untrained_model_says_so():
    e = Explainer.untrained("tiny", warmup=False)
    assert not e.info.trained and "UNTRAINED" in e.info.notice


def test_from_spec_loads_a_local_model_folder(tmp_path, explainer):
    model = explainer.predictor.model
    model.save(tmp_path, zipped=False)
    e = Explainer.from_spec(str(tmp_path), warmup=False)
    img = Image.open(ROOT / "examples" / "whale.png")
    np.testing.assert_allclose(e.analyse_image(img, False).probs,
                               explainer.analyse_image(img, False).probs, atol=1e-5)


def test_mistyped_model_path_serves_the_bundled_model_and_says_why():
    e = Explainer.from_spec("/no/such/model-folder", warmup=False)
    assert e.info.trained and e.info.source == "bundled weights"
    assert "/no/such/model-folder" in e.info.notice and "bundled model instead" in e.info.notice


def test_unloadable_model_falls_back_or_serves_untrained_never_crashes(tmp_path, monkeypatch):
    import shutil

    from vit import pretrained

    broken = tmp_path / "broken"
    shutil.copytree(pretrained.BUNDLED_DIR, broken)
    weights = broken / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # fails the sha256 in metrics.json
    weights.write_bytes(bytes(data))
    e = Explainer.from_spec(str(broken), warmup=False)
    assert e.info.trained and e.info.source == "bundled weights"
    assert "bundled model instead" in e.info.notice
    # a Space serving a Hub model has no bundled weights to fall back on
    monkeypatch.setattr(pretrained, "bundled_available", lambda *a, **k: False)
    e = Explainer.from_spec(str(broken), warmup=False)
    assert not e.info.trained and str(broken) in e.info.notice and "UNTRAINED" in e.info.notice
