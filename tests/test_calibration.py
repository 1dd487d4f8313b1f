"""vit.calibration on constructed data whose answers are known (no real data, no model)."""

import json

import numpy as np
import pytest

from vit import calibration as calib


def sample_labels(logits, temperature, rng):
    """Labels drawn from softmax(logits / temperature): a model whose calibrated T is known."""
    p = calib.softmax(logits, temperature)
    u = rng.random(len(p))[:, None]
    return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)


def test_softmax_is_stable_and_keeps_the_argmax():
    z = np.array([[1e4, 0.0, -1e4], [3.0, 2.0, 1.0]])
    for t in (0.01, 1.0, 50.0):
        p = calib.softmax(z, t)
        assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1)
        assert (p.argmax(axis=1) == z.argmax(axis=1)).all()
    assert calib.softmax(z[1:], 2.0) == pytest.approx(calib.softmax(z[1:] / 2.0))
    with pytest.raises(ValueError):
        calib.softmax(z, 0.0)


def test_ece_of_a_perfectly_calibrated_model_is_within_sampling_error():
    # top-1 confidence c ~ U(0.15, 1) on class 0, right with probability exactly c
    rng = np.random.default_rng(0)
    n, k, bins = 20000, 10, 15
    conf = rng.uniform(0.15, 1.0, n)
    probs = np.column_stack([conf] + [(1 - conf) / (k - 1)] * (k - 1))
    right = rng.random(n) < conf
    labels = np.where(right, 0, rng.integers(1, k, n))
    ece = calib.expected_calibration_error(probs, labels, bins)
    # In bin b, acc_b - conf_b is a mean of n_b independent zero-mean terms of
    # variance c(1-c) <= 1/4, so E|acc_b - conf_b| <= 1 / (2 sqrt(n_b)) and
    # E[ECE] <= sum_b sqrt(n_b) / (2n) <= sqrt(bins / n) / 2 = 0.0137 here.
    bound = np.sqrt(bins / n) / 2
    assert ece < bound
    # the same predictions, 0.2 more confident than they are right: ECE ~ 0.2
    shifted = np.column_stack([np.minimum(conf + 0.2, 1.0)]
                              + [(1 - np.minimum(conf + 0.2, 1.0)) / (k - 1)] * (k - 1))
    assert calib.expected_calibration_error(shifted, labels, bins) > 0.15


def test_ece_known_values():
    # always 99% sure and always wrong: |0 - 0.99| in one bin
    probs = np.full((50, 4), 0.01 / 3)
    probs[:, 0] = 0.99
    assert calib.expected_calibration_error(probs, np.ones(50, int)) == pytest.approx(0.99)
    probs[:, 0], probs[:, 1:] = 1.0, 0.0
    assert calib.expected_calibration_error(probs, np.ones(50, int)) == pytest.approx(1.0)
    # half predict class 0 at 0.9 and are right 6 times in 10; half predict
    # class 1 at 0.7 and are right 7 times in 10: ECE = 0.5 * 0.3 + 0.5 * 0
    probs = np.array([[0.9, 0.1]] * 10 + [[0.3, 0.7]] * 10)
    labels = np.array([0] * 6 + [1] * 4 + [1] * 7 + [0] * 3)
    assert calib.expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.15)
    # the same from what an API answers: top-1 confidence and right/wrong
    right = probs.argmax(axis=1) == labels
    assert calib.confidence_ece(probs.max(axis=1), right, bins=10) == pytest.approx(0.15)


@pytest.mark.parametrize("t_true", [0.6, 0.85, 2.0])
def test_fit_temperature_recovers_the_temperature_labels_were_drawn_with(t_true):
    rng = np.random.default_rng(1)
    n = 20000
    z = rng.normal(0, 3, (n, 100))
    y = sample_labels(z, t_true, rng)
    t = calib.fit_temperature(z, y)
    # The MLE of beta = 1/T has standard error 1 / sqrt(n I), with the Fisher
    # information I = mean Var_p(z) under softmax(beta z); 4 standard errors
    # leave a 6e-5 chance of a false failure for a correct fit.
    p = calib.softmax(z, t_true)
    info = np.mean((p * z * z).sum(1) - (p * z).sum(1) ** 2)
    assert abs(1 / t - 1 / t_true) < 4 / np.sqrt(n * info)
    # and it is the minimum, not merely close to the truth
    assert calib.nll(z, y, t) <= min(calib.nll(z, y, t * 0.999), calib.nll(z, y, t * 1.001))


def test_fit_temperature_is_the_nll_minimum_on_skewed_logits():
    # a real model's logits: one large true logit, noise elsewhere, some errors
    rng = np.random.default_rng(2)
    for seed in range(4):
        z = rng.normal(0, 1 + seed, (3000, 100))
        y = rng.integers(0, 100, 3000)
        z[np.arange(3000), y] += rng.uniform(0, 8, 3000)
        t = calib.fit_temperature(z, y)
        grid = np.exp(np.linspace(np.log(t) - 0.2, np.log(t) + 0.2, 41))
        assert calib.nll(z, y, t) <= min(calib.nll(z, y, g) for g in grid) + 1e-12


def test_fit_temperature_on_separable_data_stops_at_the_bound():
    z = np.eye(5)[np.arange(50) % 5] * 3.0
    assert calib.fit_temperature(z, np.arange(50) % 5) == pytest.approx(1 / calib.BETA_MAX)


def test_isotonic_accuracy_pools_violators():
    conf = np.array([0.9, 0.1, 0.2, 0.3, 0.4])
    correct = np.array([1, 0, 1, 0, 1])  # sorted: 0, 1, 0, 1, 1
    xs, fitted = calib.isotonic_accuracy(conf, correct)
    np.testing.assert_array_equal(xs, [0.1, 0.2, 0.3, 0.4, 0.9])
    np.testing.assert_allclose(fitted, [0.0, 0.5, 0.5, 1.0, 1.0])
    assert (np.diff(fitted) >= 0).all()


def test_not_sure_threshold_rule():
    per_bin = 100
    conf = np.linspace(0.005, 0.995, 20 * per_bin)
    # accuracy per run of 100: a lone passing run (2) among failing ones pools
    # down below 50%; the dip at run 7 (0.45) pools with run 6 (0.6) to 0.525
    acc = [0.1, 0.2, 0.6, 0.3, 0.45, 0.5, 0.6, 0.45] + [0.8] * 12
    j = np.arange(per_bin)  # correct answers spread evenly through each run
    correct = np.concatenate([np.floor((j + 1) * a) > np.floor(j * a) for a in acc])
    shuffle = np.random.default_rng(0).permutation(len(conf))  # order must not matter
    t = calib.choose_not_sure_threshold(conf[shuffle], correct[shuffle])
    _, fitted = calib.isotonic_accuracy(conf, correct)
    first = np.flatnonzero(fitted >= 0.5)[0]
    assert t == round(conf[first], 2)
    assert 4 * per_bin < first <= 5 * per_bin  # where run 5 starts, not back in run 2
    stats = calib.not_sure_stats(conf, correct, t)
    below = conf < t
    assert stats["fraction_below"] == pytest.approx(below.mean(), abs=1e-4)
    assert stats["accuracy_below"] < 0.5 <= stats["accuracy_above"]
    # right more often than not everywhere: never "not sure"; never: always
    assert calib.choose_not_sure_threshold(conf, np.ones_like(correct)) == 0.0
    assert calib.choose_not_sure_threshold(conf, np.zeros_like(correct)) == 1.0
    assert calib.not_sure_stats(conf, correct, 0.0)["accuracy_below"] is None


def test_calibrate_lowers_the_ece_of_an_over_confident_model():
    rng = np.random.default_rng(3)
    z_val, z_test = rng.normal(0, 3, (5000, 100)), rng.normal(0, 3, (5000, 100))
    # labels follow softmax(z / 2): the raw logits are twice as sharp as they should be
    y_val, y_test = sample_labels(z_val, 2.0, rng), sample_labels(z_test, 2.0, rng)
    record = calib.calibrate(z_val, y_val, z_test, y_test, fitted_on="synthetic")
    assert record["temperature"] == pytest.approx(2.0, rel=0.1)
    assert record["fitted_on"] == "synthetic" and record["bins"] == 15
    for split, n in (("validation", 5000), ("test", 5000)):
        s = record[split]
        assert s["images"] == n
        assert s["ece_before"] > 0.1 and s["ece_after"] < s["ece_before"] / 3
        assert s["nll_after"] < s["nll_before"]
        assert s["mean_confidence_after"] < s["mean_confidence_before"]
    assert record["test"]["top1"] == pytest.approx(np.mean(z_test.argmax(1) == y_test), abs=1e-4)
    not_sure = record["not_sure"]
    assert 0 <= not_sure["threshold"] <= 1 and "isotonic" in not_sure["rule"]
    conf = calib.softmax(z_test, record["temperature"]).max(axis=1)
    assert not_sure["test"]["fraction_below"] == pytest.approx(
        np.mean(conf < not_sure["threshold"]), abs=1e-4)
    json.dumps(record)  # plain JSON types only


def test_write_read_round_trip_and_errors(tmp_path):
    assert calib.read_calibration(str(tmp_path)) is None
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, (400, 10))
    y = sample_labels(z, 1.5, rng)
    record = calib.calibrate(z, y, z, y)
    calib.write_calibration(str(tmp_path), record, calib.softmax(z),
                            calib.softmax(z, record["temperature"]), y)
    assert calib.read_calibration(str(tmp_path)) == record
    png = (tmp_path / calib.RELIABILITY_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    path = tmp_path / calib.CALIBRATION_FILE
    path.write_text('{"temperature": 0.8, "not_sure": ')  # truncated
    with pytest.raises(calib.CalibrationError, match="calibration.json"):
        calib.read_calibration(str(tmp_path))
    for broken in ({"not_sure": {"threshold": 0.5}}, {"temperature": -1, "not_sure":
                                                      {"threshold": 0.5}},
                   {"temperature": 0.8, "not_sure": {"threshold": 1.5}}):
        path.write_text(json.dumps(broken))
        with pytest.raises(calib.CalibrationError):
            calib.read_calibration(str(tmp_path))


@pytest.mark.slow
def test_calibrate_script_on_a_model_folder(cifar_path, cifar, tmp_path):
    """scripts/calibrate.py on an (untrained) tiny model folder and the real data."""
    import re
    import subprocess
    import sys

    import keras

    import vit
    from tests.conftest import ROOT
    from vit import export, model_folder

    keras.utils.set_random_seed(0)
    config = vit.get_preset("tiny")
    folder = str(tmp_path / "model")
    export.write_model_folder(vit.build_vit(config), folder, config=config,
                              metrics={"preset": "tiny", "test_top1": 0.01}, history=[],
                              label_names=[str(i) for i in range(100)])
    sha = model_folder.sha256_file(f"{folder}/model.weights.h5")
    result = subprocess.run([sys.executable, "scripts/calibrate.py", folder,
                             "--data-dir", cifar_path],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    record = calib.read_calibration(folder)
    assert last == (f"temperature={record['temperature']} "
                    f"val_ece_before={record['validation']['ece_before']} "
                    f"val_ece_after={record['validation']['ece_after']} "
                    f"test_ece_before={record['test']['ece_before']} "
                    f"test_ece_after={record['test']['ece_after']} "
                    f"not_sure_threshold={record['not_sure']['threshold']}")
    assert re.fullmatch(r"(\w+=[0-9.e-]+ ?){6}", last)
    assert record["validation"]["images"] == round(len(cifar.y_train) *
                                                   config.recipe.validation_split)
    assert record["test"]["images"] == len(cifar.y_test)
    assert model_folder.sha256_file(f"{folder}/model.weights.h5") == sha
    assert "## Calibration" in open(f"{folder}/README.md").read()
