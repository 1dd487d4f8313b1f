"""vit.handlers: every demo event and API endpoint, called as plain functions."""

import numpy as np
import pytest

from tests.conftest import ROOT
from vit import handlers
from vit.analysis import DISPLAY, Analyser

APPLE = str(ROOT / "examples" / "apple.png")  # right, but only 29% sure: "not sure"
LION = str(ROOT / "examples" / "lion.png")  # right and 98% sure


@pytest.fixture(scope="module")
def analyser():
    return Analyser.from_spec(None, warmup=False)  # the bundled model


def test_classify_gives_the_calibrated_top5(analyser):
    top5 = handlers.classify(analyser, APPLE)
    assert list(top5)[0] == "apple" and len(top5) == 5
    assert top5 == analyser.top_k(analyser.analyse(APPLE, gradients=False))


@pytest.mark.parametrize("kwargs, message", [
    (dict(block=99), "block must be 1..6"), (dict(head=9), "head must be 1..4"),
    (dict(head_fusion="median"), "head_fusion must be one of"),
    (dict(discard_ratio=1.0), r"discard_ratio must be in \[0, 1\)"),
    (dict(class_name="unicorn"), "unknown class 'unicorn'"),
])
def test_explain_rejects_bad_options_in_words(analyser, kwargs, message, monkeypatch):
    def model_ran(*args, **kwargs):
        raise AssertionError("the model ran before the options were checked")

    monkeypatch.setattr(analyser, "analyse", model_ran)  # checked first: no wasted model run
    with pytest.raises(handlers.UserError, match=message):
        handlers.explain(analyser, APPLE, **kwargs)


def test_explain_returns_three_maps_for_the_chosen_class(analyser):
    top5, rollout, raw, class_map = handlers.explain(analyser, APPLE, "max", 0.2, 2, 1, "pear")
    a = analyser.analyse(APPLE)
    np.testing.assert_array_equal(rollout, analyser.rollout(a, "max", 0.2))
    np.testing.assert_array_equal(raw, analyser.raw(a, 1, 0, "max"))
    pear = analyser.labels.index("pear")
    np.testing.assert_array_equal(class_map, analyser.class_map(a, pear))
    assert not np.array_equal(class_map, analyser.class_map(a, a.top_class))


def test_missing_and_unreadable_uploads_are_user_errors(analyser, tmp_path):
    with pytest.raises(handlers.UserError, match="upload an image first"):
        handlers.classify(analyser, None)
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(handlers.UserError) as caught:
        handlers.classify(analyser, str(bad))
    assert caught.value.title == "Can't read this image"


def test_new_upload_fills_the_whole_page(analyser):
    page = handlers.new_upload(analyser, LION, "mean", 0.0, 6, handlers.ALL_HEADS)
    assert page.class_name == "lion" and list(page.top5)[0] == "lion"
    assert page.patch == handlers.centre_patch(analyser) == 4 * 8 + 4
    assert page.model_view.shape == (DISPLAY, DISPLAY, 3)
    assert len(page.maps) == len(analyser.lead_maps()) + 3  # + raw, patch, deletion plot
    again = handlers.render(analyser, page.analysis, page.patch, "mean", 0.0, 6, None, "lion")
    for shown, redrawn in zip(page.maps[:-1], again[:-1], strict=True):
        np.testing.assert_array_equal(shown, redrawn)
    assert page.unsure == ""  # a confident answer: no notice


def test_not_sure_notice_lists_the_classes(analyser):
    page = handlers.new_upload(analyser, APPLE, "mean", 0.0, 6, None)
    assert page.class_name == "apple"  # right, at 29%: under the 57% threshold
    assert "Not sure" in page.unsure and "<details>" in page.unsure
    assert "aquarium fish" in page.unsure and "willow tree" in page.unsure


def test_selecting_a_patch_shows_where_it_looks(analyser):
    a = analyser.analyse(APPLE)
    patch, view, looks = handlers.select_patch(analyser, a, 10, 300, 6, "head 2", "mean")
    assert patch == analyser.patch_at(10, 300) == 7 * 8 + 0
    np.testing.assert_array_equal(looks, analyser.patch(a, 5, patch, 1, "mean"))
    assert not np.array_equal(view, analyser.model_view(a, 0))


def test_occlusion_endpoint_reports_the_drops_it_draws(analyser):
    top5, picture, record = handlers.occlusion(analyser, APPLE, "")
    a = analyser.analyse(APPLE, gradients=False)
    assert record["class"] == "apple"
    assert record["probability"] == pytest.approx(float(a.probs[a.top_class]))
    drops = np.array(record["drops"])
    assert drops.shape == (8, 8)
    np.testing.assert_allclose(drops, analyser.occlusion_grid(a, a.top_class), atol=1e-6)
    assert picture.shape == (DISPLAY, DISPLAY, 3)


def test_batch_reports_each_file_and_keeps_going(analyser, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    rows, gallery = handlers.batch(analyser, [APPLE, str(bad)])
    assert rows[0][:2] == ["apple.png", "apple"] and 0.2 < rows[0][2] < 0.4 and rows[0][3] == ""
    assert rows[1][0] == "broken.jpg" and rows[1][2] is None and rows[1][3]
    assert len(gallery) == 1 and gallery[0][1] == "apple.png: apple"
    with pytest.raises(handlers.UserError, match="Choose one or more"):
        handlers.batch(analyser, [])


def test_head_choices_round_trip():
    choices = handlers.head_choices(4)
    assert [handlers.head_index(c) for c in choices] == [None, 0, 1, 2, 3]


def test_map_labels_follow_the_controls(analyser):
    last = analyser.predictor.num_blocks
    default = handlers.map_labels(analyser, "mean", 0.0, last, handlers.ALL_HEADS)
    assert len(default) == len(analyser.lead_maps()) + 1
    assert [label.split(" ·")[0] for label in default[:-1]] == [
        {"occlusion": "Occlusion", "class_map": "Class map",
         "rollout": "Attention rollout"}[name] for name in analyser.lead_maps()]
    assert default[-1].startswith(f"Raw attention, block {last}, all heads")
    moved = handlers.map_labels(analyser, "max", 0.3, 2, "head 3")
    at = analyser.lead_maps().index("rollout")
    assert moved[at] != default[at] and moved[-1].startswith("Raw attention, block 2, head 3")
    # the bundled model ships its faithfulness scores: default settings quote them
    assert "not scored at this setting" in moved[at] and "not scored" in moved[-1]
    assert all("· deletion 0." in label for label in default)
