"""The real app (python app.py) driven through gradio_client, bad uploads included."""

import json
import urllib.request

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app_server import ROOT, AppServer
from upload_corpus import EXPECTED, make_bad_upload_corpus
from vit.analysis import Analyser
from vit.data import CIFAR100_LABELS

pytestmark = pytest.mark.slow
EXAMPLE = str(ROOT / "examples" / "apple.png")


@pytest.fixture(scope="module")
def server():
    with AppServer() as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


def test_classify_returns_top5_cifar_classes(client):
    result = client.predict(handle_file(EXAMPLE), api_name="/classify")
    confidences = result["confidences"]
    assert len(confidences) == 5
    assert all(c["label"] in CIFAR100_LABELS for c in confidences)
    values = [c["confidence"] for c in confidences]
    assert values == sorted(values, reverse=True) and 0 < sum(values) <= 1.0001
    assert result["label"] == confidences[0]["label"]


def test_explain_returns_label_and_three_maps(client):
    label, rollout, raw, class_map = client.predict(
        handle_file(EXAMPLE), "max", 0.2, 1, 2, "orange", api_name="/explain")
    assert len(label["confidences"]) == 5
    maps = [Image.open(p) for p in (rollout, raw, class_map)]
    assert all(m.size == (320, 320) for m in maps)
    assert len({m.tobytes() for m in maps}) == 3  # three different explanations
    # Lossless: the same map rendered in-process matches the served one (Gradio's
    # default WebP would be off by tens of levels).
    assert all(m.format == "PNG" for m in maps)
    analyser = Analyser.from_spec(None, warmup=False)
    expected = analyser.rollout(analyser.analyse(EXAMPLE), "max", 0.2)
    served = np.asarray(maps[0].convert("RGB"), np.int16)
    assert served.shape == expected.shape
    assert np.abs(served - expected).max() <= 2


def test_classify_returns_the_calibrated_probabilities(client):
    from vit import calibration, model_folder

    temperature = calibration.read_calibration(model_folder.BUNDLED_DIR)["temperature"]
    assert temperature != 1.0
    model = model_folder.load_pretrained()
    analyser = Analyser.from_spec(None, warmup=False)
    pixels = analyser.analyse(EXAMPLE, gradients=False).pixels
    logits = np.asarray(model(pixels[None].astype("float32")))[0]
    want = calibration.softmax(logits, temperature)
    result = client.predict(handle_file(EXAMPLE), api_name="/classify")
    for c in result["confidences"]:
        np.testing.assert_allclose(c["confidence"], want[CIFAR100_LABELS.index(c["label"])],
                                   atol=1e-4)


def test_occlusion_endpoint_returns_the_map_and_its_numbers(client):
    label, picture, record = client.predict(handle_file(EXAMPLE), "orange",
                                            api_name="/occlusion")
    assert len(label["confidences"]) == 5 and Image.open(picture).size == (320, 320)
    assert record["class"] == "orange"
    drops = np.array(record["drops"])
    assert drops.shape == (8, 8) and np.abs(drops).max() > 0
    analyser = Analyser.from_spec(None, warmup=False)
    a = analyser.analyse(EXAMPLE, gradients=False)
    want = analyser.occlusion_grid(a, CIFAR100_LABELS.index("orange"))
    np.testing.assert_allclose(drops, want, atol=1e-4)
    with pytest.raises(Exception, match="unknown class"):
        client.predict(handle_file(EXAMPLE), "unicorn", api_name="/occlusion")


def test_explain_rejects_bad_options(client):
    with pytest.raises(Exception, match="block must be"):
        client.predict(handle_file(EXAMPLE), "mean", 0.0, 99, 0, "", api_name="/explain")


def test_bad_uploads_get_clear_errors_and_server_keeps_serving(client, server, tmp_path):
    corpus = make_bad_upload_corpus(tmp_path)
    for name, path in corpus.items():
        expected = EXPECTED[name]
        if expected is None:
            result = client.predict(handle_file(str(path)), api_name="/classify")
            assert len(result["confidences"]) == 5, name
        else:
            with pytest.raises(Exception) as err:
                client.predict(handle_file(str(path)), api_name="/classify")
            message = str(err.value)
            assert expected in message.lower(), (name, message)
            assert "Traceback" not in message
        assert server.alive(), name
    result = client.predict(handle_file(EXAMPLE), api_name="/classify")
    assert len(result["confidences"]) == 5


def test_batch_tab_reports_each_file(client, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    table, gallery = client.predict(
        [handle_file(EXAMPLE), handle_file(str(ROOT / "examples" / "whale.png")),
         handle_file(str(bad))], api_name="/batch")
    rows = table["data"]
    assert [r[0] for r in rows] == ["apple.png", "whale.png", "broken.png"]
    assert rows[0][1] in CIFAR100_LABELS and rows[2][1] == "—" and rows[2][3]
    assert len(gallery) == 2
    assert all(Image.open(item["image"]).format == "PNG" for item in gallery)


def test_upload_size_limit_is_set(server):
    with urllib.request.urlopen(server.url + "/config") as r:
        config = json.loads(r.read())
    assert config.get("max_file_size") == 20 * 1024 * 1024


def test_unreachable_hub_falls_back_with_visible_notice(tmp_path):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"),
           "MODEL_REPO": "someone/missing-model", "HF_TOKEN": "hf_dummy"}
    with AppServer(env=env) as s:
        with urllib.request.urlopen(s.url + "/config") as r:
            page_config = r.read().decode()
        out = s.output()
    assert "notice:" in out and "someone/missing-model" in out
    assert "someone/missing-model" in page_config  # shown in the UI, not only the log


def test_share_offline_prints_one_line_and_keeps_serving():
    # A dead proxy makes the share tunnel fail even on a machine with internet.
    dead_proxy = "http://127.0.0.1:9"
    with AppServer("--share", env={"https_proxy": dead_proxy, "http_proxy": dead_proxy,
                                   "no_proxy": "127.0.0.1,localhost"}) as s:
        import time

        deadline = time.time() + 60
        while "share link" not in s.output() and time.time() < deadline:
            time.sleep(0.5)
        out = s.output()
        assert out.count("Could not create a public share link") == 1
        assert "Traceback" not in out
        assert s.alive()
        result = Client(s.url, verbose=False).predict(handle_file(EXAMPLE), api_name="/classify")
        assert len(result["confidences"]) == 5


def test_explain_rejects_bad_options_through_the_api(client):
    # (that they are checked before the model runs: tests/test_handlers.py)
    for args, message in [(("mean", 1.5, 0, 0, ""), "discard_ratio"),
                          (("mean", 0.0, 0, 9, ""), "head must be"),
                          (("median", 0.0, 0, 0, ""), "median"),  # Gradio checks the choices
                          (("mean", 0.0, 0, 0, "unicorn"), "unknown class")]:
        with pytest.raises(Exception, match=message):
            client.predict(handle_file(EXAMPLE), *args, api_name="/explain")


def test_pictures_go_out_as_fast_lossless_png():
    import io

    import gradio as gr
    from gradio import processing_utils

    import app

    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    probs = np.zeros((100,), np.float32)  # not a picture: left alone
    out = app.lossless(lambda: (picture, probs, "caption", [(picture, "in a gallery")],
                                gr.update(value=picture, label="titled")))()
    image, untouched, caption, gallery, update = out
    assert untouched is probs and caption == "caption" and update["label"] == "titled"
    for pil in (image, gallery[0][0], update["value"]):
        encoded = processing_utils.encode_pil_to_bytes(pil, "png")  # what Gradio runs
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encoded))), picture)
        fast = io.BytesIO()
        Image.fromarray(picture).save(fast, "PNG", compress_level=app.PNG_LEVEL)
        assert encoded == fast.getvalue()


def test_moving_a_control_never_drops_its_last_setting():
    """A render is pending while a slider is dragged: the last value must still run."""
    import app

    demo = app.build_demo(Analyser.from_spec(None, warmup=False))
    renders = [d for d in demo.config["dependencies"]
               if {t[1] for t in d["targets"]} >= {"change", "input"}]
    assert len(renders) == 1 and renders[0]["trigger_mode"] == "always_last"
