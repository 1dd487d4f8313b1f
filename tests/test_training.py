"""Training on real CIFAR-100 subsets: learning, exact resume after kill -9, 2 devices."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import vit
from tests.conftest import ROOT
from vit import training
from vit.evaluation import evaluate

pytestmark = pytest.mark.slow


def run_train(*args, env=None, **kw):
    cmd = [sys.executable, str(ROOT / "train.py"), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, **kw)


def test_short_real_run_learns(cifar, tmp_path):
    config = vit.get_preset("tiny").replace(epochs=4, learning_rate=3e-3)
    model, state = training.fit(config, cifar, str(tmp_path), seed=1, limit_train=4096,
                                verbose=0)
    losses = [row["loss"] for row in state["history"]]
    assert losses[-1] < losses[0] - 0.1, losses
    assert state["history"][-1]["val_top1"] > 0.03  # chance is 0.01
    assert os.path.exists(tmp_path / "checkpoint" / "latest.json")


def test_checkpoints_keep_the_last_n_epochs_and_drop_stale_ones(tmp_path):
    model = vit.build_vit(vit.get_preset("tiny"))
    names = lambda: [os.path.basename(p) for p in training.epoch_checkpoints(str(tmp_path))]
    # a file from an epoch after the current one: a save that was killed, then resumed
    (tmp_path / "epoch-0009.keras").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    for epoch in range(1, 6):
        training.save_checkpoint(str(tmp_path), model, {"epoch": epoch}, keep=3)
    assert names() == ["epoch-0003.keras", "epoch-0004.keras", "epoch-0005.keras"]
    assert json.loads((tmp_path / "latest.json").read_text())["model"] == "epoch-0005.keras"
    assert (tmp_path / "notes.txt").exists()
    training.save_checkpoint(str(tmp_path), model, {"epoch": 6})  # default: the latest only
    assert names() == ["epoch-0006.keras"]
    with pytest.raises(ValueError, match="keep"):
        training.save_checkpoint(str(tmp_path), model, {"epoch": 7}, keep=0)
    assert training.checkpoint_epoch("runs/x/epoch-0123.keras") == 123
    assert training.checkpoint_epoch("epoch-12.keras") is None


def weights_of(folder):
    return keras.saving.load_model(folder).get_weights()


# The second case is the recipe of the long CPU runs: XLA, RandAugment, mixup/CutMix.
@pytest.mark.parametrize("jit, recipe", [
    (False, []),
    (True, ["--set", "augment=trivial", "mixup_alpha=0.2", "cutmix_alpha=1.0",
            "resample_prob=0.25"]),
], ids=["graph-basic", "xla-trivial"])
def test_resume_after_kill_9_matches_uninterrupted_run(cifar_path, tmp_path, jit, recipe):
    run = ["--preset", "tiny", "--epochs", 3, "--limit-train", 2048, "--seed", 5,
           "--data-dir", cifar_path, *(["--jit"] if jit else []), *recipe]
    straight = run_train(*run, "--output-dir", tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-2000:]

    out_b = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, run),
                             "--keep-checkpoints", "3", "--output-dir", str(out_b)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out_b / "checkpoint" / "latest.json"
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = json.loads(latest.read_text())["epoch"]
    assert 1 <= killed_after < 3, "the run must be interrupted mid-training"
    assert not (out_b / "metrics.json").exists()

    # Resumed with none of the run's settings and another batch size: the checkpoint's
    # config (recipe included), seed, --limit-train, --jit and --keep-checkpoints win.
    resumed = run_train("--batch-size", 32, "--data-dir", cifar_path,  # no --preset either
                        "--output-dir", out_b, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after epoch {killed_after}" in resumed.stdout
    assert "checkpoint's limit_train=2048" in resumed.stdout
    history_a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    history_b = json.loads((out_b / "metrics.json").read_text())
    assert history_b["epochs"] == 3 and history_b["train_images"] == 2048
    assert history_b["preset"] == "tiny"
    # bit for bit: batches are a function of (seed, epoch, step) and the CPU
    # kernels are deterministic at a fixed thread count
    assert history_a["test_top1"] == history_b["test_top1"]
    assert history_a["test_loss"] == history_b["test_loss"]
    # the card tells how to reproduce the run: the command that started it
    assert "--resume" not in history_b["command"] and str(out_b) in history_b["command"]
    for wa, wb in zip(weights_of(tmp_path / "a"), weights_of(out_b), strict=True):
        np.testing.assert_array_equal(wa, wb)
    # the checkpoint keeps the compile settings, so a resumed --jit run stays XLA-compiled
    resumed_model, _ = training.load_checkpoint(str(out_b / "checkpoint"))
    assert resumed_model.jit_compile is jit
    kept = [os.path.basename(p) for p in training.epoch_checkpoints(str(out_b / "checkpoint"))]
    assert kept == ["epoch-0001.keras", "epoch-0002.keras", "epoch-0003.keras"]


def test_checkpoint_from_before_settings_resumes(cifar, tmp_path, capsys):
    config = vit.get_preset("tiny").replace(epochs=1)
    training.fit(config, cifar, str(tmp_path), limit_train=256, verbose=0)
    latest = tmp_path / "checkpoint" / "latest.json"
    old = json.loads(latest.read_text())
    for key in ("settings", "preset"):  # what older code did not write
        old.pop(key)
    old["config"]["recipe"]["epochs"] = 2
    latest.write_text(json.dumps(old))
    _, state = training.fit(config, cifar, str(tmp_path), resume=True, limit_train=256,
                            verbose=0)
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    assert "predates recorded settings" in capsys.readouterr().out
    saved = json.loads(latest.read_text())
    assert saved["epoch"] == 2 and saved["settings"]["keep_checkpoints"] == 1


def test_a_new_run_never_overwrites_a_checkpoint(cifar, tmp_path, capsys):
    config = vit.get_preset("tiny").replace(epochs=1)
    training.fit(config, cifar, str(tmp_path), resume=True, limit_train=256, verbose=0)
    assert "no checkpoint in" in capsys.readouterr().out  # nothing to resume: a new run
    before = {p: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()}
    with pytest.raises(training.ExistingRunError, match="add --resume"):
        training.fit(config.replace(epochs=2), cifar, str(tmp_path), limit_train=256, verbose=0)
    assert {p: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()} == before


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras' own "ran out of data" warning
def test_an_epoch_that_runs_out_of_data_is_not_saved(tmp_path):
    config = vit.get_preset("tiny")
    model = vit.build_vit(config)
    training.compile_model(model, config, steps_per_epoch=3)
    x = np.zeros((2 * config.recipe.batch_size, 32, 32, 3), np.float32)
    y = np.eye(100, dtype=np.float32)[np.zeros(len(x), int)]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(config.recipe.batch_size)  # 2 batches
    callback = training.EpochCheckpoint(str(tmp_path), config, 0, [], 0.0, steps=3)
    with pytest.raises(RuntimeError, match="ran out of data after 2 of 3"):
        model.fit(data, epochs=1, steps_per_epoch=3, callbacks=[callback], verbose=0)
    assert not (tmp_path / "latest.json").exists()


def policies(model):
    return {layer.path: layer.dtype_policy.name for layer in model._flatten_layers()
            if layer.weights and not isinstance(layer, keras.Model)}


def test_resume_restores_mixed_precision(cifar, tmp_path):
    config = vit.get_preset("tiny").replace(epochs=1)
    try:
        training.fit(config, cifar, str(tmp_path), limit_train=256, mixed_precision="bf16",
                     verbose=0)
        training.set_precision("off")
        model, state = training.fit(config, cifar, str(tmp_path), resume=True,
                                    limit_train=256, verbose=0)  # asks for float32
        assert state["mixed_precision"] == "bf16"
        resumed = policies(model)
        training.set_precision("bf16")
        assert resumed == policies(vit.build_vit(config))  # every sublayer, as first built
        assert list(resumed.values()).count("mixed_bfloat16") > 10
    finally:
        training.set_precision("off")


def test_gpu_preset_smoke_run_with_bf16_and_xla(tmp_path):
    """The recipe a GPU user runs, as written: TrivialAugment, mixup/CutMix, bf16, XLA.

    On 400 generated images (100 test): a 7-GFLOP-per-image model runs at ~10
    images/s on 2 CPU cores, so scoring the real 10,000 test images alone
    would take minutes."""
    from tests.cifar_layout import write_cifar100_layout

    small = write_cifar100_layout(str(tmp_path / "data"), train_per_class=4, test_per_class=1)
    result = run_train("--preset", "gpu", "--epochs", 1, "--mixed-precision", "bf16", "--jit",
                       "--data-dir", small, "--output-dir", tmp_path / "run", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["preset"] == "gpu" and metrics["mixed_precision"] == "bf16"
    assert metrics["config"]["recipe"]["augment"] == "trivial"
    assert metrics["train_images"] == 360 and metrics["epochs"] == 1
    assert metrics["parameters"] == 3_788_907 and np.isfinite(metrics["test_loss"])
    # published float32, whatever the training precision
    assert "mixed_bfloat16" not in (tmp_path / "run" / "config.json").read_text()


def test_mirrored_strategy_on_two_logical_cpu_devices(cifar_path, cifar, tmp_path):
    result = run_train("--preset", "tiny", "--epochs", 1, "--limit-train", 512,
                       "--data-dir", cifar_path, "--output-dir", tmp_path,
                       "--cpu-devices", 2, "--strategy", "mirrored")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    # the folder holds the model that was scored: re-scored here, same numbers
    again = evaluate(keras.saving.load_model(tmp_path), cifar.x_test, cifar.y_test)
    assert again["test_top1"] == pytest.approx(metrics["test_top1"], abs=1e-6)
    assert again["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)
