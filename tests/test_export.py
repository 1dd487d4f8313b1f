"""vit.export: model folders, and the lineage a fine-tuned model carries."""

import json
import subprocess
import sys

import numpy as np
import pytest

import vit
from tests.conftest import ROOT
from vit import data, export, model_folder, training


@pytest.fixture(scope="module")
def tiny():
    """A tiny model and a small synthetic dataset to evaluate it on."""
    import keras

    keras.utils.set_random_seed(0)
    config = vit.get_preset("tiny")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 100, 64)
    dataset = data.Cifar100(x, y, x, y, [f"class_{i}" for i in range(100)])
    return config, vit.build_vit(config), dataset


def _history(epochs, seconds):
    return [{"epoch": e, "loss": 4.0 - e / 10, "top1": 0.01 * e, "val_top1": 0.01 * e,
             "train_seconds": seconds, "images_per_second": 100.0}
            for e in range(1, epochs + 1)]


def _export(tiny, folder, epochs, seconds, command, parent_folder=None, shift=0.0):
    config, model, dataset = tiny
    # each stage gets its own weights, so a mix-up of stages shows in sha and accuracy
    model = vit.build_vit(config)
    model.set_weights([w + shift for w in tiny[1].get_weights()])
    state = {"config": config, "seed": 0, "history": _history(epochs, seconds),
             "init_from": str(parent_folder) if parent_folder else None,
             "parent": model_folder.read_lineage(str(parent_folder)) if parent_folder else None}
    return export.export_run(model, state, dataset, str(folder), preset="tiny", command=command)


def test_plain_run_has_no_stages(tiny, tmp_path):
    metrics = _export(tiny, tmp_path / "a", 2, 10.0, "python train.py --preset tiny")
    assert metrics["epochs"] == 2 and metrics["train_seconds"] == 20.0
    assert "stages" not in metrics and "init_from" not in metrics
    assert "stage |" not in (tmp_path / "a" / "README.md").read_text()


def test_fine_tuned_models_report_every_stage_since_random_init(tiny, tmp_path):
    a = _export(tiny, tmp_path / "a", 2, 10.0, "python train.py --preset tiny")
    b = _export(tiny, tmp_path / "b", 1, 30.0, "python train.py --init-from a", tmp_path / "a",
                shift=0.01)
    c = _export(tiny, tmp_path / "c", 3, 5.0, "python train.py --init-from b", tmp_path / "b",
                shift=0.02)
    assert len({a["weights_sha256"], b["weights_sha256"], c["weights_sha256"]}) == 3

    # Totals since random initialisation, not the last stage's own.
    assert b["epochs"] == 3 and b["train_seconds"] == 50.0
    assert c["epochs"] == 6 and c["train_seconds"] == 65.0
    assert [st["epochs"] for st in c["stages"]] == [2, 1, 3]
    assert [st["train_seconds"] for st in c["stages"]] == [20.0, 30.0, 15.0]
    assert [st["command"] for st in c["stages"]] == [
        "python train.py --preset tiny", "python train.py --init-from a",
        "python train.py --init-from b"]
    # Earlier stages keep the accuracy and weights they ended with.
    for stage, earlier in zip(c["stages"], (a, b)):
        assert stage["test_top1"] == earlier["test_top1"]
        assert stage["weights_sha256"] == earlier["weights_sha256"]
    assert c["stages"][2]["init_from"] == str(tmp_path / "b")

    rows = model_folder.read_history_csv(str(tmp_path / "c" / "history.csv"))
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["stage"] for r in rows] == [1, 1, 2, 3, 3, 3]
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["stages"] == c["stages"]

    card = (tmp_path / "c" / "README.md").read_text()
    assert "since random initialisation" in card
    assert f"| 2 | 1 | 0.01 | {100 * b['test_top1']:.2f}% |" in card
    assert f"| 3 | 3 | 0.00 | {100 * c['test_top1']:.2f}% | `python train.py --init-from b` |" in card


def test_parent_without_history_still_numbers_epochs_from_random_init(tiny, tmp_path):
    _export(tiny, tmp_path / "a", 2, 10.0, "python train.py --preset tiny")
    (tmp_path / "a" / "history.csv").unlink()
    b = _export(tiny, tmp_path / "b", 1, 30.0, "python train.py --init-from a", tmp_path / "a")
    rows = model_folder.read_history_csv(str(tmp_path / "b" / "history.csv"))
    assert [(r["epoch"], r["stage"]) for r in rows] == [(3, 2)]
    assert b["epochs"] == 3 and b["train_seconds"] == 50.0


@pytest.mark.slow
def test_fine_tune_checkpoint_keeps_lineage_through_resume_and_bundling(cifar, cifar_path,
                                                                        tmp_path):
    config = vit.get_preset("tiny").replace(epochs=1)
    model, state = training.fit(config, cifar, str(tmp_path / "base"), limit_train=512,
                                verbose=0, command="python train.py --preset tiny")
    base = export.export_run(model, state, cifar, str(tmp_path / "base"), preset="tiny",
                             command="python train.py --preset tiny")
    command = "python train.py --preset tiny --init-from base"
    training.fit(config, cifar, str(tmp_path / "tuned"), limit_train=512, verbose=0,
                 init_from=str(tmp_path / "base"), init_name="base", command=command)
    latest = tmp_path / "tuned" / "checkpoint" / training.LATEST
    saved = json.loads(latest.read_text())
    assert saved["command"] == command and saved["init_from"] == "base"
    assert saved["parent"]["stages"][0]["weights_sha256"] == base["weights_sha256"]

    # A checkpoint written before lineage existed gets it back on resume.
    latest.write_text(json.dumps({k: v for k, v in saved.items() if k != "parent"}))
    _, resumed = training.fit(config, cifar, str(tmp_path / "tuned"), limit_train=512,
                              verbose=0, resume=True, init_from=str(tmp_path / "base"))
    assert resumed["parent"] == saved["parent"]

    # Bundled mid-training (no metrics.json yet): epochs count from random init.
    latest.write_text(json.dumps(saved))
    result = subprocess.run(
        [sys.executable, "scripts/bundle_weights.py", str(tmp_path / "tuned"),
         "--to", str(tmp_path / "bundle"), "--data-dir", cifar_path],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    bundled = json.loads((tmp_path / "bundle" / "metrics.json").read_text())
    assert bundled["epochs"] == 2 and bundled["epochs_planned"] == 2
    assert bundled["command"] == f"{command}  # checkpoint after epoch 2 of 2"
    assert [st["epochs"] for st in bundled["stages"]] == [1, 1]


def test_export_fits_the_temperature_on_the_training_validation_split(tiny, tmp_path):
    from vit import calibration as calib

    config, _, dataset = tiny
    metrics = _export(tiny, tmp_path / "a", 2, 10.0, "python train.py --preset tiny")
    record = calib.read_calibration(str(tmp_path / "a"))
    assert record is not None and (tmp_path / "a" / "reliability.png").is_file()
    # the validation split training.fit held out, measured again independently
    _, (x_val, y_val) = data.train_val_split(dataset.x_train, dataset.y_train,
                                             config.recipe.validation_split)
    model = model_folder.load_pretrained(str(tmp_path / "a"))
    logits_val = model.predict(x_val.astype("float32"), verbose=0)
    assert record["validation"]["images"] == len(y_val) > 0
    assert record["validation"]["nll_before"] == pytest.approx(
        calib.nll(logits_val, y_val), abs=2e-4)
    assert record["temperature"] == pytest.approx(
        calib.fit_temperature(logits_val, y_val), rel=1e-3)
    assert record["test"]["images"] == len(dataset.y_test)
    assert record["test"]["nll_before"] == pytest.approx(metrics["test_loss"], abs=2e-4)
    assert record["test"]["top1"] == pytest.approx(metrics["test_top1"], abs=1e-4)
    assert f"validation_split {config.recipe.validation_split:g}" in record["fitted_on"]
    # stamped with the weights it was fitted for, so a weight swap cannot reuse it
    assert record["weights_sha256"] == metrics["weights_sha256"]

    card = (tmp_path / "a" / "README.md").read_text()
    assert "## Calibration" in card and f"T = {record['temperature']:.4g}" in card
    assert "![reliability diagram" in card and "(reliability.png)" in card
    ece = record["test"]["ece_before"]
    assert f"| ECE | {100 * ece:.1f}% |" in card
    assert f"(threshold **{record['not_sure']['threshold']:.2f}**)" in card
    assert "not calibrated probabilities" not in card and "temperature-scaled" in card


def test_export_without_validation_split_skips_calibration(tiny, tmp_path, capsys):
    config, model, dataset = tiny
    folder = tmp_path / "a"  # re-exported below: it holds the old export's calibration
    _export(tiny, folder, 1, 1.0, "python train.py --preset tiny")
    assert (folder / "calibration.json").exists() and (folder / "assets").is_dir()
    state = {"config": config.replace(validation_split=0.0), "seed": 0,
             "history": _history(1, 1.0)}
    export.export_run(model, state, dataset, str(folder), preset="tiny", command="x")
    assert "skipping calibration" in capsys.readouterr().out
    # the old weights' calibration is gone, and the card says so
    assert not (folder / "calibration.json").exists() and not (folder / "reliability.png").exists()
    card = (folder / "README.md").read_text()
    assert "## Calibration" not in card and "not calibrated probabilities" in card


def test_model_card_shows_faithfulness_from_the_folder(tiny, tmp_path):
    from vit import card

    folder = tmp_path / "a"
    _export(tiny, folder, 1, 1.0, "python train.py --preset tiny")
    assert "Faithfulness" not in (folder / "README.md").read_text()
    faithfulness = {
        "n": 1000, "seed": 0, "command": "python benchmarks/faithfulness.py --n 1000",
        "baseline": "the training mean colour", "app_default": "occlusion",
        "methods": {
            "random": {"deletion": {"mean": 0.1712, "ci95": 0.0081},
                       "insertion": {"mean": 0.1693, "ci95": 0.0079},
                       "sanity_spearman": None, "description": "a random order"},
            "occlusion": {"deletion": {"mean": 0.0823, "ci95": 0.0061},
                          "insertion": {"mean": 0.3351, "ci95": 0.0112},
                          "sanity_spearman": 0.1234, "description": "grey out each cell"}}}
    (folder / "faithfulness.json").write_text(json.dumps(faithfulness))
    text = str(card.write_model_card(str(folder), repo_id="user/vit"))
    assert (folder / "README.md").read_text() == text
    assert "## Faithfulness of the explanations" in text and "## Calibration" in text
    assert "| random | 0.171 ± 0.008 | 0.169 ± 0.008 | – |" in text
    assert "| **occlusion** | 0.082 ± 0.006 | 0.335 ± 0.011 | 0.12 |" in text
    assert "n images: 1,000" in text and "**occlusion** map first" in text
    assert "hf://user/vit" in text and "`python benchmarks/faithfulness.py --n 1000`" in text
    # measured on other weights: the card leaves out both records
    sha = json.loads((folder / "metrics.json").read_text())["weights_sha256"]
    (folder / "faithfulness.json").write_text(json.dumps({**faithfulness, "weights_sha256": sha}))
    assert "## Faithfulness" in str(card.write_model_card(str(folder)))
    (folder / "faithfulness.json").write_text(json.dumps({**faithfulness,
                                                          "weights_sha256": "0" * 64}))
    calibration = json.loads((folder / "calibration.json").read_text())
    (folder / "calibration.json").write_text(json.dumps({**calibration,
                                                         "weights_sha256": "0" * 64}))
    text = str(card.write_model_card(str(folder)))
    assert "## Faithfulness" not in text and "## Calibration" not in text
    assert "reliability.png" not in text and "not calibrated probabilities" in text
    (folder / "faithfulness.json").write_text("{not json")
    with pytest.raises(ValueError, match="faithfulness.json"):
        card.write_model_card(str(folder))


def test_re_export_drops_measurements_of_the_old_weights(tiny, tmp_path):
    folder = tmp_path / "a"

    def sha():
        return json.loads((folder / "metrics.json").read_text())["weights_sha256"]

    _export(tiny, folder, 1, 1.0, "python train.py --preset tiny")
    old_sha = sha()
    # one stamped with the old weights, then one from before stamping: both describe old weights
    for shift, record in ((0.01, {"weights_sha256": old_sha}), (0.02, {})):
        (folder / "faithfulness.json").write_text(json.dumps({"n": 1, "methods": {}, **record}))
        _export(tiny, folder, 1, 1.0, "python train.py --preset tiny", shift=shift)
        assert sha() != old_sha and not (folder / "faithfulness.json").exists()
        # the calibration is the new weights' own, and the card shows it
        assert json.loads((folder / "calibration.json").read_text())["weights_sha256"] == sha()
        assert "## Calibration" in (folder / "README.md").read_text()
        old_sha = sha()


def test_bundling_a_finished_run_copies_calibration_and_faithfulness(tiny, tmp_path):
    run = tmp_path / "run"
    _export(tiny, run, 1, 1.0, "python train.py --preset tiny")
    (run / "faithfulness.json").write_text('{"n": 1, "methods": {}}')
    result = subprocess.run([sys.executable, "scripts/bundle_weights.py", str(run),
                             "--to", str(tmp_path / "bundle")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("calibration.json", "reliability.png", "faithfulness.json", "README.md"):
        assert (tmp_path / "bundle" / name).read_bytes() == (run / name).read_bytes(), name
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o755  # readable by a server's user


def test_bundling_a_bad_run_leaves_the_bundle_untouched(tiny, tmp_path):
    bundle = tmp_path / "bundle"
    _export(tiny, bundle, 1, 1.0, "python train.py --preset tiny")
    def contents():
        return {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}

    before = contents()
    for run in (tmp_path / "no-such-run", bundle):  # a typo; the bundle itself
        result = subprocess.run([sys.executable, "scripts/bundle_weights.py", str(run),
                                 "--to", str(bundle)],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and "error:" in result.stderr, result.stderr[-2000:]
        assert contents() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging left behind


def test_make_bundle_regenerates_what_the_bundle_feeds_in_order(tmp_path):
    """`make bundle` swaps the model in first and measures faithfulness before the
    browser test takes the screenshot (the page's trust lines read faithfulness.json);
    without RUN it refuses before touching vit/weights."""
    plan = subprocess.run(["make", "-n", "bundle", "RUN=runs/some-run", f"CIFAR100_DIR={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    steps = ["scripts/bundle_weights.py runs/some-run", "benchmarks/accuracy.py",
             "benchmarks/robustness.py", "benchmarks/calibration.py",
             "benchmarks/faithfulness.py", "tests/test_browser.py", "docs/screenshot.png"]
    where = [next((i for i, line in enumerate(plan) if step in line), None) for step in steps]
    assert None not in where, (steps, plan)
    assert where == sorted(where), plan
    assert f"--data-dir {tmp_path}" in plan[where[0]] and f"--data-dir {tmp_path}" in plan[where[1]]

    refused = subprocess.run(["make", "bundle", f"CIFAR100_DIR={tmp_path}"], cwd=ROOT,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "usage: make bundle RUN=" in refused.stderr
    assert not [line for line in refused.stdout.splitlines() if "python" in line]
