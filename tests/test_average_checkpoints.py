"""Checkpoint averaging: the maths, and scripts/average_checkpoints.py on a tiny real run."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import vit
from tests.conftest import ROOT
import vit.evaluation
from vit import training
from vit.model_choice import describe_folder


def tiny_model(fill=None):
    model = vit.build_vit(vit.get_preset("tiny"))
    if fill is not None:
        model.set_weights([np.full(w.shape, fill, np.float32) for w in model.get_weights()])
    return model


def test_average_weights_is_the_elementwise_mean():
    rng = np.random.default_rng(0)
    models = [tiny_model() for _ in range(3)]
    for m in models:
        m.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in m.get_weights()])
    mean = training.average_weights(models)
    for i, w in enumerate(mean):
        expected = np.mean([m.get_weights()[i] for m in models], axis=0)
        np.testing.assert_allclose(w, expected, rtol=1e-6, atol=1e-6)
        assert w.dtype == np.float32
    assert [w.tolist() for w in training.average_weights([models[1]])] == \
        [w.tolist() for w in models[1].get_weights()]


def test_average_weights_refuses_other_shapes():
    other = vit.build_vit(vit.get_preset("tiny").replace(projection_dim=48, mlp_units=(64, 48)))
    with pytest.raises(ValueError, match="shape"):
        training.average_weights([tiny_model(), other])
    with pytest.raises(ValueError, match="nothing"):
        training.average_weights([])


@pytest.mark.slow
def test_script_picks_on_validation_and_writes_the_mean(cifar_path, tmp_path):
    run = tmp_path / "run"
    trained = subprocess.run(
        [sys.executable, "train.py", "--preset", "tiny", "--epochs", "2", "--limit-train",
         "2048", "--keep-checkpoints", "2", "--data-dir", cifar_path, "--output-dir", str(run)],
        cwd=ROOT, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-2000:]
    kept = training.epoch_checkpoints(str(run / "checkpoint"))
    assert [p.rsplit("/", 1)[-1] for p in kept] == ["epoch-0001.keras", "epoch-0002.keras"]

    out = tmp_path / "avg"
    result = subprocess.run(  # no snapshot arguments: the run's kept checkpoints
        [sys.executable, "scripts/average_checkpoints.py", str(run), "--candidates", "1", "2",
         "--data-dir", cifar_path, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    scores = metrics["averaging_val_top1"]
    assert set(scores) == {"1", "2"}
    best = max(scores, key=lambda k: (scores[k], -int(k)))
    assert metrics.get("averaged_epochs") == ([1, 2] if best == "2" else None)
    assert metrics["val_top1"] == pytest.approx(scores[best], abs=1e-4)
    assert f"chose the last {best} epoch(s)" in result.stdout
    card = (out / "README.md").read_text()
    assert ("mean of the checkpoints after epochs 1–2" in card) == (best == "2")
    assert ("mean of the checkpoints" in card) == (best == "2")

    a, b = (keras.saving.load_model(p).get_weights() for p in kept)
    expected = [(x + y) / 2 for x, y in zip(a, b)] if best == "2" else b
    for got, want in zip(keras.saving.load_model(out).get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # Snapshots named explicitly: copies kept elsewhere, here a shifted stand-in
    # for epoch 1, so that the mean of the last 2 must differ from the last epoch.
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    shutil.copy(kept[1], snaps / "epoch-0002.keras")
    shifted = keras.saving.load_model(kept[1])
    shifted.set_weights([w + 0.01 for w in shifted.get_weights()])
    shifted.save(snaps / "epoch-0001.keras")
    forced = subprocess.run(
        [sys.executable, "scripts/average_checkpoints.py", str(run), str(snaps / "epoch-0002.keras"),
         str(snaps / "epoch-0001.keras"), "--candidates", "2", "--data-dir", cifar_path,
         "--out", str(tmp_path / "avg2")],
        cwd=ROOT, capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr[-2000:]
    for got, want in zip(keras.saving.load_model(tmp_path / "avg2").get_weights(), b):
        np.testing.assert_allclose(got, want + 0.005, rtol=1e-5, atol=1e-5)

    # --test-time-flip on: the folder serves (and scores) the mean of each image's and
    # its mirror's logits; its metrics, card, calibration and the app all follow it.
    flip_out = tmp_path / "flip"
    flipped = subprocess.run(
        [sys.executable, "scripts/average_checkpoints.py", str(run), "--candidates", "1",
         "--test-time-flip", "on", "--data-dir", cifar_path, "--out", str(flip_out)],
        cwd=ROOT, capture_output=True, text=True)
    assert flipped.returncode == 0, flipped.stderr[-2000:]
    metrics = json.loads((flip_out / "metrics.json").read_text())
    assert metrics["config"]["architecture"]["test_time_flip"] is True
    assert metrics["command"].endswith("(--test-time-flip on)")
    dataset = vit.data.load_cifar100(cifar_path)
    model = keras.saving.load_model(flip_out)
    both = vit.evaluation.evaluate(model, dataset.x_test, dataset.y_test, test_time_flip=True)
    one = vit.evaluation.evaluate(model, dataset.x_test, dataset.y_test)
    assert metrics["test_loss"] == pytest.approx(both["test_loss"], abs=1e-5)
    assert metrics["test_loss"] != pytest.approx(one["test_loss"], abs=1e-5)
    calibrated = json.loads((flip_out / "calibration.json").read_text())
    assert calibrated["test_time_flip"] is True
    assert calibrated["test"]["top1"] == pytest.approx(both["test_top1"], abs=1e-4)
    assert calibrated["test"]["nll_before"] == pytest.approx(both["test_loss"], abs=1e-4)
    assert calibrated["test"]["nll_before"] != pytest.approx(one["test_loss"], abs=1e-4)
    assert metrics["val_top1"] == pytest.approx(metrics["averaging_val_top1"]["1"], abs=1e-4)
    assert "Test-time flip" in (flip_out / "README.md").read_text()
    assert "model(pixels[:, :, ::-1])" in (flip_out / "README.md").read_text()
    _, info = describe_folder(model, str(flip_out), None, None)
    assert info.test_time_flip is True
    assert describe_folder(model, str(out), None, None)[1].test_time_flip is False
    assert "Test-time flip" not in (out / "README.md").read_text()

    gap = subprocess.run(
        [sys.executable, "scripts/average_checkpoints.py", str(run),
         str(snaps / "epoch-0002.keras"), str(snaps / "epoch-0002.keras"),
         "--data-dir", cifar_path, "--out", str(tmp_path / "dup")],
        cwd=ROOT, capture_output=True, text=True)
    assert gap.returncode != 0 and "consecutive epochs, once each" in gap.stderr

    # Only the last epoch kept: a warning, and K=1 is the run itself.
    os.remove(kept[0])
    single = subprocess.run(
        [sys.executable, "scripts/average_checkpoints.py", str(run), "--data-dir", cifar_path,
         "--out", str(tmp_path / "single")], cwd=ROOT, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    assert "nothing to average" in single.stderr and "chose the last 1 epoch(s)" in single.stdout
    os.remove(kept[1])
    empty = subprocess.run(
        [sys.executable, "scripts/average_checkpoints.py", str(run), "--out", str(tmp_path / "e")],
        cwd=ROOT, capture_output=True, text=True)
    assert empty.returncode != 0 and "--keep-checkpoints" in empty.stderr
    assert "Traceback" not in empty.stderr
