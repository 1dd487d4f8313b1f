"""train.py end to end on a tiny real run: the whole output folder."""

import csv
import json
import subprocess
import sys

import keras
import pytest

import vit  # noqa: F401  (registers layers for load_model)
from tests.conftest import ROOT
from vit.evaluation import evaluate

pytestmark = pytest.mark.slow


def test_cli_writes_complete_model_folder(cifar_path, cifar, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "train.py", "--preset", "tiny", "--epochs", "2", "--batch-size", "32",
         "--lr", "0.002", "--weight-decay", "0.01", "--limit-train", "1024",
         "--data-dir", cifar_path, "--output-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test top1=" in result.stdout
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metadata.json", "model.weights.h5", "labels.json", "metrics.json",
            "history.csv", "curves.png", "README.md", "checkpoint"} <= names

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_top1", "test_top5", "test_loss", "epochs", "train_seconds",
                "images_per_second", "preset", "config", "weights_sha256"):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and metrics["preset"] == "tiny"
    recipe = metrics["config"]["recipe"]
    assert recipe["batch_size"] == 32 and recipe["learning_rate"] == 0.002
    assert json.loads((out / "labels.json").read_text()) == cifar.label_names
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "val_top1" in rows[0]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    card = (out / "README.md").read_text()
    assert "library_name: keras" in card and "model-index" in card

    model = keras.saving.load_model(out, safe_mode=True)
    reloaded = evaluate(model, cifar.x_test, cifar.y_test)
    assert reloaded["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-4)
    assert reloaded["test_top1"] == pytest.approx(metrics["test_top1"], abs=1e-4)
    assert reloaded["test_top5"] == pytest.approx(metrics["test_top5"], abs=1e-4)

    # the same command again, without --resume, must not start over on top of this run
    again = subprocess.run(result.args, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2
    assert "already holds a run" in again.stderr and "--resume" in again.stderr
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_cli_without_data_offline_prints_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "k"),
           "CIFAR100_DIR": "",
           # an unroutable proxy makes the download fail fast even on a machine with internet
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "train.py", "--preset", "tiny"], cwd=ROOT,
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    error_lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1 and "--data-dir" in error_lines[0]
    assert "Traceback" not in result.stderr


def test_fine_tune_from_a_model_folder_with_config_overrides(cifar_path, tmp_path):
    common = ["--preset", "tiny", "--limit-train", "2048", "--data-dir", cifar_path]
    base = subprocess.run([sys.executable, "train.py", *common, "--epochs", "2",
                           "--output-dir", str(tmp_path / "base")],
                          cwd=ROOT, capture_output=True, text=True)
    assert base.returncode == 0, base.stderr[-2000:]
    tuned = subprocess.run(
        [sys.executable, "train.py", *common, "--epochs", "1", "--lr", "0.0005",
         "--init-from", str(tmp_path / "base"), "--set", "warmup_epochs=0",
         "--set", "resample_prob=0.5", "input_norm=image", "--output-dir", str(tmp_path / "tuned")],
        cwd=ROOT, capture_output=True, text=True)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    tuned_m = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert tuned_m["init_from"] == str(tmp_path / "base")
    tuned_recipe = tuned_m["config"]["recipe"]
    assert tuned_recipe["resample_prob"] == 0.5 and tuned_recipe["warmup_epochs"] == 0
    # the input normalisation may change under fine-tuning, and the saved model applies it
    assert tuned_m["config"]["architecture"]["input_norm"] == "image"
    assert '"per_image": true' in (tmp_path / "tuned" / "config.json").read_text()
    # It reports both stages: totals since random initialisation, and each command.
    base_m = json.loads((tmp_path / "base" / "metrics.json").read_text())
    assert tuned_m["epochs"] == 3 and [st["epochs"] for st in tuned_m["stages"]] == [2, 1]
    assert tuned_m["stages"][0]["weights_sha256"] == base_m["weights_sha256"]
    assert "--init-from" in tuned_m["stages"][1]["command"]
    assert "| 1 | 2 |" in (tmp_path / "tuned" / "README.md").read_text()

    # Same weight shapes, different heads: refused before any training starts.
    other = subprocess.run(
        [sys.executable, "train.py", *common, "--epochs", "1", "--init-from",
         str(tmp_path / "base"), "--set", "num_heads=1", "key_dim=32",
         "--output-dir", str(tmp_path / "other")], cwd=ROOT, capture_output=True, text=True)
    assert other.returncode == 2 and "num_heads: 2 there, 1 here" in other.stderr
    assert not (tmp_path / "other").exists()
    # It starts where the base run ended, not from scratch: its first epoch's loss
    # is below the base run's first epoch.
    base_rows = list(csv.DictReader((tmp_path / "base" / "history.csv").open()))
    tuned_rows = list(csv.DictReader((tmp_path / "tuned" / "history.csv").open()))
    assert [(r["epoch"], r["stage"]) for r in tuned_rows] == [("1", "1"), ("2", "1"), ("3", "2")]
    assert float(tuned_rows[2]["loss"]) < float(base_rows[0]["loss"]) - 0.05


@pytest.mark.parametrize("bad, message", [
    (["--set", "no_such_field=1"], "FIELD=VALUE"),
    (["--set", "epochs=many"], "not a valid int"),
    (["--init-from", "/no/such/folder"], "--init-from"),
    (["--set", "augment=strnog"], "unknown augment"),
    (["--set", "resample_prob=2"], "not a probability"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints"),
])
def test_bad_overrides_are_one_line_errors(cifar_path, bad, message):
    result = subprocess.run([sys.executable, "train.py", "--preset", "tiny",
                             "--data-dir", cifar_path, *bad],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
