"""The app's analysis layer, without Gradio: one upload -> predictions + pictures."""

import numpy as np
import pytest
from PIL import Image

import vit
import vit.evaluation
from tests.conftest import ROOT
from vit import images
from vit.analysis import DISPLAY, Analyser, ModelInfo


@pytest.fixture(scope="module")
def analyser():
    model = vit.build_vit(vit.get_preset("tiny"))
    return Analyser(model, vit.data.CIFAR100_LABELS, ModelInfo(source="test"))


@pytest.fixture(scope="module")
def analysis(analyser):
    return analyser.analyse(str(ROOT / "examples" / "apple.png"))


def test_analysis_has_probabilities_attention_and_top1_gradients(analyser, analysis):
    assert analysis.pixels.shape == (32, 32, 3) and analysis.display.shape == (DISPLAY, DISPLAY, 3)
    np.testing.assert_allclose(analysis.probs.sum(), 1.0, atol=1e-5)
    assert len(analysis.attention) == 2
    assert list(analysis.gradients) == [analysis.top_class]
    fresh = analyser.predictor.class_gradients(analysis.pixels, analysis.top_class)
    for a, b in zip(analysis.gradients[analysis.top_class], fresh):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_classification_only_path_matches(analyser, analysis):
    quick = analyser.analyse(str(ROOT / "examples" / "apple.png"), gradients=False)
    np.testing.assert_allclose(quick.probs, analysis.probs, atol=1e-5)
    assert quick.gradients == {}


def test_top_k_is_sorted_and_named(analyser, analysis):
    top = analyser.top_k(analysis, 5)
    assert len(top) == 5 and list(top.values()) == sorted(top.values(), reverse=True)
    assert set(top) <= set(vit.data.CIFAR100_LABELS)


def test_pictures_have_display_size_and_differ(analyser, analysis):
    pictures = [analyser.rollout(analysis), analyser.raw(analysis, 0, None),
                analyser.patch(analysis, 1, 5, 0), analyser.class_map(analysis, 3)]
    for p in pictures:
        assert p.shape == (DISPLAY, DISPLAY, 3) and p.dtype == np.uint8
    assert len({p.tobytes() for p in pictures}) == 4
    assert 3 in analysis.gradients  # computed once, then cached


def test_model_view_outlines_the_clicked_patch(analyser, analysis):
    plain = analyser.model_view(analysis)
    patch = analyser.patch_at(DISPLAY - 1, 0)  # top-right corner
    assert patch == analyser.grid - 1
    marked = analyser.model_view(analysis, patch)
    changed = np.argwhere((plain != marked).any(-1))
    assert changed[:, 1].min() >= DISPLAY * (analyser.grid - 1) // analyser.grid - 1
    assert changed[:, 0].max() < DISPLAY // analyser.grid


def test_bad_upload_raises_decode_error(analyser):
    with pytest.raises(images.ImageDecodeError):
        analyser.analyse(b"definitely not an image")


def test_untrained_model_says_so():
    e = Analyser.untrained("tiny", warmup=False)
    assert not e.info.trained and "UNTRAINED" in e.info.notice


def test_from_spec_loads_a_local_model_folder(tmp_path, analyser):
    model = analyser.predictor.model
    model.save(tmp_path, zipped=False)
    e = Analyser.from_spec(str(tmp_path), warmup=False)
    img = Image.open(ROOT / "examples" / "whale.png")
    np.testing.assert_allclose(e.analyse_image(img, False).probs,
                               analyser.analyse_image(img, False).probs, atol=1e-5)


def test_mistyped_model_path_serves_the_bundled_model_and_says_why():
    e = Analyser.from_spec("/no/such/model-folder", warmup=False)
    assert e.info.trained and e.info.source == "bundled weights"
    assert "/no/such/model-folder" in e.info.notice and "bundled model instead" in e.info.notice


def test_unloadable_model_falls_back_or_serves_untrained_never_crashes(tmp_path, monkeypatch):
    import shutil

    from vit import model_folder

    broken = tmp_path / "broken"
    shutil.copytree(model_folder.BUNDLED_DIR, broken)
    weights = broken / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # fails the sha256 in metrics.json
    weights.write_bytes(bytes(data))
    e = Analyser.from_spec(str(broken), warmup=False)
    assert e.info.trained and e.info.source == "bundled weights"
    assert "bundled model instead" in e.info.notice
    # a Space serving a Hub model has no bundled weights to fall back on
    monkeypatch.setattr(model_folder, "bundled_available", lambda *a, **k: False)
    e = Analyser.from_spec(str(broken), warmup=False)
    assert not e.info.trained and str(broken) in e.info.notice and "UNTRAINED" in e.info.notice


# ---------------------------------------------------------------- trust
def _faithfulness(**deletion):
    return {"n": 10, "methods": {name: {"deletion": {"mean": value, "ci95": 0.01}}
                                 for name, value in deletion.items()}}


def test_lead_maps_follow_the_measured_deletion_scores():
    model = vit.build_vit(vit.get_preset("tiny"))
    unmeasured = Analyser(model, vit.data.CIFAR100_LABELS, ModelInfo(source="t"), warmup=False)
    assert unmeasured.lead_maps() == ["occlusion", "class_map", "rollout"]
    assert "not measured" in unmeasured.trust_line("rollout")
    info = ModelInfo(source="t", faithfulness=_faithfulness(
        random=0.2, rollout=0.1, class_map=0.15, occlusion=0.19, raw=0.21))
    e = Analyser(model, vit.data.CIFAR100_LABELS, info, warmup=False)
    assert e.lead_maps() == ["rollout", "class_map", "occlusion"]
    assert "0.100" in e.trust_line("rollout") and "0.200" in e.trust_line("rollout")
    assert "finds the evidence well" in e.trust_line("rollout")  # 0.5x random
    assert "little better than chance" in e.trust_line("occlusion")  # 0.95x
    assert "no better than chance" in e.trust_line("raw")
    assert e.map_label("class_map") == "Class map · deletion 0.150"
    assert unmeasured.map_label("class_map") == "Class map"


def test_map_labels_quote_the_score_of_the_setting_shown():
    model = vit.build_vit(vit.get_preset("tiny"))
    info = ModelInfo(source="t", faithfulness=_faithfulness(
        random=0.2, rollout=0.1, rollout_max=0.12, **{"rollout_min_d0.9": 0.13}, raw=0.21))
    e = Analyser(model, vit.data.CIFAR100_LABELS, info, warmup=False)
    last = e.predictor.num_blocks
    assert e.map_label("rollout") == "Attention rollout · deletion 0.100"
    assert "deletion 0.120" in e.map_label("rollout", fusion="max", discard=0.0)
    assert "deletion 0.130" in e.map_label("rollout", fusion="min", discard=0.9)
    assert "not scored at this setting" in e.map_label("rollout", fusion="max", discard=0.3)
    assert e.map_label("raw", block=last) == (
        f"Raw attention, block {last}, all heads · deletion 0.210")
    for setting in (dict(block=1), dict(block=last, head=0), dict(fusion="max")):
        assert "not scored at this setting" in e.map_label("raw", **setting), setting
    assert "block 1, head 2" in e.map_label("raw", block=1, head=1)


def test_not_sure_below_the_threshold_only():
    model = vit.build_vit(vit.get_preset("tiny"))
    rule = {"threshold": 0.4, "validation": {"accuracy_below": 0.31}}
    e = Analyser(model, vit.data.CIFAR100_LABELS, ModelInfo(source="t", not_sure=rule),
                  warmup=False)
    probs = np.full(100, 0.3 / 99)
    probs[7] = 0.7
    confident = vit.analysis.Analysis(None, None, probs, [])
    assert e.not_sure(confident) is None
    probs = np.full(100, 0.65 / 99)
    probs[7] = 0.35
    doubtful = vit.analysis.Analysis(None, None, probs, [])
    assert "Not sure" in e.not_sure(doubtful) and "35%" in e.not_sure(doubtful)
    assert e.labels[7] in e.not_sure(doubtful) and "right only 31%" in e.not_sure(doubtful)
    e.info.not_sure = None  # an uncalibrated model makes no such claim
    assert e.not_sure(doubtful) is None


def test_occlusion_is_the_drop_of_the_class_probability(analyser, analysis):
    c = analysis.top_class
    drops = analyser.occlusion_grid(analysis, c)
    assert drops.shape == (analyser.grid, analyser.grid)
    # recompute one cell by hand: grey it out and run the classifier
    r, col = np.unravel_index(np.argmax(drops), drops.shape)
    px = analyser.predictor.patch_px
    masked = analysis.pixels.copy()
    masked[r * px:(r + 1) * px, col * px:(col + 1) * px] = analyser.predictor.baseline_pixel
    p = analyser.predictor.predict(masked[None])[0][0, c]
    np.testing.assert_allclose(drops[r, col], analysis.probs[c] - p, atol=1e-5)
    picture = analyser.occlusion(analysis, c)
    assert picture.shape == (DISPLAY, DISPLAY, 3)


def test_deletion_plot_has_one_curve_per_map(analyser, analysis):
    c = analysis.top_class
    grids = {"occlusion": analyser.occlusion_grid(analysis, c),
             "rollout": analyser.rollout_grid(analysis)}
    fig = analyser.deletion_plot(analysis, grids, c)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_ydata()[0], 100 * analysis.probs[c], rtol=1e-4)
    assert all("area" in line.get_label() for line in lines)


def test_a_model_folder_brings_its_temperature_and_a_broken_one_is_said(tmp_path, analyser):
    import json

    model = analyser.predictor.model
    model.save(tmp_path, zipped=False)
    record = {"temperature": 0.5, "not_sure": {"threshold": 0.3}}
    (tmp_path / "calibration.json").write_text(json.dumps(record))
    (tmp_path / "faithfulness.json").write_text("{not json")  # optional: ignored
    e = Analyser.from_spec(str(tmp_path), warmup=False)
    assert e.predictor.temperature == 0.5 and e.info.not_sure == {"threshold": 0.3}
    assert e.info.faithfulness is None and e.info.notice is None
    img = Image.open(ROOT / "examples" / "whale.png")
    sharp = e.analyse_image(img, False).probs
    plain = analyser.analyse_image(img, False).probs  # temperature 1
    z = np.log(plain) / 0.5
    np.testing.assert_allclose(sharp, np.exp(z - z.max()) / np.exp(z - z.max()).sum(),
                               rtol=1e-3, atol=1e-6)
    (tmp_path / "calibration.json").write_text('{"temperature": -1}')
    e = Analyser.from_spec(str(tmp_path), warmup=False)
    assert e.predictor.temperature == 1.0 and "uncalibrated" in e.info.notice


def test_calibration_and_faithfulness_of_other_weights_are_not_applied(tmp_path, analyser):
    import json

    from vit import model_folder

    analyser.predictor.model.save(tmp_path, zipped=False)
    sha = model_folder.weights_sha256(str(tmp_path))
    (tmp_path / "metrics.json").write_text(json.dumps({"weights_sha256": sha}))
    faith = {"n": 10, "methods": {}}

    def write(stamp):
        record = {"temperature": 0.5, "not_sure": {"threshold": 0.3}, "weights_sha256": stamp}
        (tmp_path / "calibration.json").write_text(json.dumps(record))
        (tmp_path / "faithfulness.json").write_text(json.dumps({**faith, "weights_sha256": stamp}))
        return Analyser.from_spec(str(tmp_path), warmup=False)

    e = write(sha)  # measured on these weights: used
    assert e.predictor.temperature == 0.5 and e.info.faithfulness["n"] == 10
    assert e.info.notice is None
    e = write("0" * 64)  # measured on other weights: not applied, and said
    assert e.predictor.temperature == 1.0 and e.info.not_sure is None
    assert e.info.faithfulness is None
    assert "fitted for other weights" in e.info.notice
    assert "faithfulness.json was measured on other weights" in e.info.notice
    # the same weights served with the test-time flip: one-view records are another model's
    config = vit.get_preset("tiny").replace(test_time_flip=True).to_dict()
    (tmp_path / "metrics.json").write_text(json.dumps({"weights_sha256": sha, "config": config}))
    e = write(sha)
    assert e.predictor.test_time_flip and e.predictor.temperature == 1.0
    assert e.info.faithfulness is None and "another test-time flip" in e.info.notice


def test_the_model_folders_test_time_flip_reaches_the_predictor(analyser):
    """The app classifies the way the folder's figures were measured."""
    model = analyser.predictor.model
    flipped = Analyser(model, vit.data.CIFAR100_LABELS,
                       ModelInfo(source="t", test_time_flip=True), warmup=False)
    assert flipped.predictor.test_time_flip and not analyser.predictor.test_time_flip
    upload = str(ROOT / "examples" / "apple.png")
    a, b = analyser.analyse(upload), flipped.analyse(upload)
    logits = vit.evaluation.predict_logits(model, a.pixels[None], test_time_flip=True)[0]
    want = np.exp(logits - logits.max())
    np.testing.assert_allclose(b.probs, want / want.sum(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(a.probs, b.probs)
