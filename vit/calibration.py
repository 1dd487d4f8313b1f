"""Calibrated confidences: temperature scaling (Guo et al. 2017), in plain NumPy.

Mixup, CutMix and label smoothing train the model to hedge, so its softmax
is under-confident: the bundled model's mean top-1 confidence is below its
accuracy. Dividing the logits by one temperature T, fitted on the held-out
validation split, fixes most of that without changing any prediction (the
argmax is the same for every T > 0). The record this module writes next to
the weights (`calibration.json`) holds T, before/after metrics on the
validation and test splits, and the threshold under which the app should say
"not sure".
"""

from __future__ import annotations

import json
import os

import numpy as np

CALIBRATION_FILE = "calibration.json"
RELIABILITY_FILE = "reliability.png"
# T is searched in [1/BETA_MAX, 1/BETA_MIN]: wide enough for any sane model,
# bounded so that separable data (NLL falls forever as T -> 0) still returns.
BETA_MIN, BETA_MAX = 1e-2, 1e2
NOT_SURE_RULE = ("the app says 'not sure' when the calibrated top-1 confidence is below the "
                 "threshold: the lowest confidence at which a monotone (isotonic) fit of "
                 "validation top-1 accuracy against confidence reaches {acc:.0%} (rounded to "
                 "0.01), so below it the top guess is more often wrong than right")


class CalibrationError(ValueError):
    """calibration.json is unreadable or lacks what the app needs."""


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) over the last axis, in float64; stable for any logit scale."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)  # exp never overflows; the result is unchanged
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / T)."""
    z = np.asarray(logits, np.float64) / temperature
    labels = np.asarray(labels, np.int64)
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(z)), labels]))


def expected_calibration_error(probs, labels, bins: int = 15) -> float:
    """Guo et al.'s ECE: sum over equal-width confidence bins of (n_b / n) |acc_b - conf_b|.

    Bins are (k/bins, (k+1)/bins] on the top-1 confidence (the first one also
    holds 0); the prediction is the argmax. 0 for a perfectly calibrated model.
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    if len(probs) == 0:
        raise ValueError("no predictions")
    return confidence_ece(probs.max(axis=1), probs.argmax(axis=1) == labels, bins)


def confidence_ece(confidences, correct, bins: int = 15) -> float:
    """The same ECE from top-1 confidences and right/wrong flags (e.g. an API's answers)."""
    conf = np.asarray(confidences, np.float64)
    counts, acc, mean_conf = _bin_stats(conf, np.asarray(correct, bool), bins)
    return float(np.sum(counts / len(conf) * np.abs(acc - mean_conf)))


def _bin_stats(conf, correct, bins: int):
    """(count, accuracy, mean confidence) per equal-width bin; empty bins give 0."""
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    safe = np.maximum(counts, 1)
    acc = np.bincount(idx, weights=correct.astype(np.float64), minlength=bins) / safe
    mean_conf = np.bincount(idx, weights=conf, minlength=bins) / safe
    return counts, acc, mean_conf


def fit_temperature(logits, labels, tol: float = 1e-10, max_iter: int = 100) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on (logits, labels).

    With beta = 1/T the NLL is f(beta) = mean(logsumexp(beta z) - beta z_y),
    convex since f'' = mean Var_p(z) >= 0. So f' is increasing and its root is
    the global minimum: a safeguarded Newton search (Newton steps, bisection
    whenever a step leaves the bracket) on [BETA_MIN, BETA_MAX] finds it to
    machine precision in a few steps. A minimum beyond the bracket (e.g.
    separable data, where the NLL falls forever as T -> 0) returns the bound.
    """
    z = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    if z.ndim != 2 or len(z) != len(labels) or len(z) == 0:
        raise ValueError(f"logits {z.shape} and labels {labels.shape} do not match")
    z_true = z[np.arange(len(z)), labels]

    def derivatives(beta):
        p = softmax(z * beta)
        ez = (p * z).sum(axis=1)
        return np.mean(ez - z_true), np.mean((p * z * z).sum(axis=1) - ez * ez)

    lo, hi = BETA_MIN, BETA_MAX
    if derivatives(lo)[0] >= 0:
        return 1.0 / lo
    if derivatives(hi)[0] <= 0:
        return 1.0 / hi
    beta = 1.0
    for _ in range(max_iter):
        g, h = derivatives(beta)
        if abs(g) < tol:  # converged: keep this beta (a step from here may be 0/0)
            break
        if g > 0:
            hi = beta
        else:
            lo = beta
        step = beta - g / h if h > 0 else np.inf
        beta = step if lo <= step <= hi else 0.5 * (lo + hi)
        if hi - lo < tol * beta:
            break
    return float(1.0 / beta)


def isotonic_accuracy(confidences, correct) -> tuple[np.ndarray, np.ndarray]:
    """(sorted confidences, non-decreasing accuracy fitted to them): pool adjacent violators.

    Accuracy should not fall as confidence rises; the isotonic fit enforces
    that and pools a noisy dip (a few hundred images per bin give +-3
    points) with its neighbours instead of letting it move a threshold.
    """
    conf = np.asarray(confidences, np.float64)
    correct = np.asarray(correct, np.float64)
    if len(conf) == 0 or len(conf) != len(correct):
        raise ValueError("need as many confidences as correctness flags, at least one")
    order = np.argsort(conf, kind="stable")
    means, weights = [], []
    for value in correct[order]:
        means.append(value)
        weights.append(1.0)
        while len(means) > 1 and means[-2] > means[-1]:
            w = weights[-2] + weights[-1]
            means[-2:] = [(means[-2] * weights[-2] + means[-1] * weights[-1]) / w]
            weights[-2:] = [w]
    fitted = np.repeat(means, np.asarray(weights, int))
    return conf[order], fitted


def choose_not_sure_threshold(confidences, correct, min_accuracy: float = 0.5) -> float:
    """Confidence under which the app should say "not sure"; chosen on validation.

    Rule (NOT_SURE_RULE): the lowest confidence at which the isotonic fit of
    accuracy against confidence reaches min_accuracy, rounded to 0.01; below
    it the top guess is more often wrong than right. 0.0 when even the least
    confident predictions pass (never "not sure"); 1.0 when none do.
    """
    conf, fitted = isotonic_accuracy(confidences, correct)
    passing = np.flatnonzero(fitted >= min_accuracy)
    if len(passing) == 0:
        return 1.0
    if passing[0] == 0:
        return 0.0
    return round(float(conf[passing[0]]), 2)


def not_sure_stats(confidences, correct, threshold: float) -> dict:
    """Fraction of images below the threshold and the accuracy on each side (None if empty)."""
    conf = np.asarray(confidences, np.float64)
    correct = np.asarray(correct, bool)
    below = conf < threshold

    def acc(mask):
        return round(float(correct[mask].mean()), 4) if mask.any() else None

    return {"fraction_below": round(float(below.mean()), 4),
            "accuracy_below": acc(below), "accuracy_above": acc(~below)}


def split_summary(logits, labels, temperature: float, bins: int = 15) -> dict:
    """ECE, NLL and mean top-1 confidence before (T = 1) and after (T), and top-1."""
    labels = np.asarray(labels, np.int64)
    before, after = softmax(logits), softmax(logits, temperature)
    return {"images": int(len(labels)),
            "ece_before": round(expected_calibration_error(before, labels, bins), 4),
            "ece_after": round(expected_calibration_error(after, labels, bins), 4),
            "nll_before": round(nll(logits, labels), 4),
            "nll_after": round(nll(logits, labels, temperature), 4),
            "mean_confidence_before": round(float(before.max(axis=1).mean()), 4),
            "mean_confidence_after": round(float(after.max(axis=1).mean()), 4),
            "top1": round(float(np.mean(before.argmax(axis=1) == labels)), 4)}


def calibrate(logits_val, y_val, logits_test=None, y_test=None, bins: int = 15,
              fitted_on: str | None = None,
              min_accuracy: float = 0.5) -> dict:
    """The calibration record: T fitted on validation, metrics, the "not sure" rule.

    T is rounded to 4 decimals before anything is measured, so the numbers in
    the record are those of the T the app will use. The test split (optional)
    is only measured, never used for a choice.
    """
    temperature = round(fit_temperature(logits_val, y_val), 4)
    y_val = np.asarray(y_val, np.int64)
    record = {"temperature": temperature, "bins": bins,
              "fitted_on": fitted_on or f"validation split: {len(y_val)} images",
              "validation": split_summary(logits_val, y_val, temperature, bins)}
    if logits_test is not None:
        record["test"] = split_summary(logits_test, y_test, temperature, bins)

    def conf_correct(logits, labels):
        p = softmax(logits, temperature)
        return p.max(axis=1), p.argmax(axis=1) == np.asarray(labels, np.int64)

    conf, correct = conf_correct(logits_val, y_val)
    threshold = choose_not_sure_threshold(conf, correct, min_accuracy)
    record["not_sure"] = {
        "threshold": threshold,
        "rule": NOT_SURE_RULE.format(acc=min_accuracy),
        "validation": not_sure_stats(conf, correct, threshold)}
    if logits_test is not None:
        record["not_sure"]["test"] = not_sure_stats(*conf_correct(logits_test, y_test), threshold)
    return record


def describe_validation(n_images: int, validation_split: float, seed: int = 0) -> str:
    """The record's "fitted_on" for train.py's hold-out (vit.data.train_val_split)."""
    return (f"validation split: {n_images} training images held out by train.py "
            f"(validation_split {validation_split:g}, seed {seed})")


def write_calibration(folder: str, record: dict, probs_before=None, probs_after=None,
                      labels=None) -> None:
    """calibration.json (atomically) and, given test probabilities, reliability.png."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, CALIBRATION_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(path + ".tmp", path)
    if probs_before is not None:
        reliability_diagram(probs_before, probs_after, labels,
                            os.path.join(folder, RELIABILITY_FILE), bins=record.get("bins", 15))


def read_calibration(folder: str) -> dict | None:
    """A folder's calibration record; None without calibration.json.

    Raises CalibrationError naming the file when it does not parse or lacks a
    positive temperature or a not_sure threshold in [0, 1].
    """
    path = os.path.join(folder, CALIBRATION_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        temperature = float(record["temperature"])
        threshold = float(record["not_sure"]["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(f"{path} is unreadable or corrupted "
                               f"({type(exc).__name__}: {exc})") from None
    if not (np.isfinite(temperature) and temperature > 0 and 0 <= threshold <= 1):
        raise CalibrationError(f"{path}: temperature {temperature} must be > 0 and "
                               f"the not_sure threshold {threshold} in [0, 1]")
    return record


def reliability_diagram(probs_before, probs_after, labels, path: str, bins: int = 15,
                        title: str = "Reliability on the CIFAR-100 test split") -> None:
    """Before / after panels: per-bin accuracy against confidence, the diagonal,
    ECE in the legend, and the share of images per bin underneath."""
    from matplotlib.figure import Figure

    labels = np.asarray(labels, np.int64)
    fig = Figure(figsize=(10, 5.6), dpi=100)
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1], hspace=0.08, wspace=0.18)
    edges = np.linspace(0, 1, bins + 1)
    width, centres = 1 / bins, edges[:-1] + 0.5 / bins
    bottoms = []
    for col, (probs, name) in enumerate(((probs_before, "before (T = 1)"),
                                         (probs_after, "after temperature scaling"))):
        probs = np.asarray(probs, np.float64)
        conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
        counts, acc, mean_conf = _bin_stats(conf, correct, bins)
        ece = expected_calibration_error(probs, labels, bins)
        filled = counts > 0
        top = fig.add_subplot(grid[0, col])
        top.bar(centres[filled], acc[filled], width=width * 0.92, color="#4c72b0",
                label="accuracy")
        # hatched: from a bin's accuracy to its mean confidence (above the bar:
        # over-confident; inside it: under-confident)
        top.bar(centres[filled], (mean_conf - acc)[filled], bottom=acc[filled],
                width=width * 0.92, facecolor="none", edgecolor="#c44e52", hatch="////",
                lw=0.8, label="gap to mean confidence", zorder=3)
        top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration", zorder=4)
        top.set(xlim=(0, 1), ylim=(0, 1), title=name)
        top.tick_params(labelbottom=False)
        top.grid(alpha=0.3)
        legend = top.legend(loc="upper left", fontsize=8.5, framealpha=0.92,
                            title=f"ECE {100 * ece:.1f}%\nmean confidence {100 * conf.mean():.1f}%"
                                  f"\ntop-1 accuracy {100 * correct.mean():.1f}%",
                            title_fontsize=9, alignment="left")
        legend.get_title().set_fontweight("bold")
        if col == 0:
            top.set_ylabel("accuracy")
        bottom = fig.add_subplot(grid[1, col], sharex=top,
                                 sharey=bottoms[0] if bottoms else None)
        bottoms.append(bottom)
        bottom.bar(centres, 100 * counts / len(conf), width=width * 0.92, color="#8c8c8c")
        bottom.set(xlim=(0, 1), xlabel="top-1 confidence")
        bottom.grid(alpha=0.3)
        if col == 0:
            bottom.set_ylabel("% of images")
    fig.suptitle(f"{title} ({len(labels):,} images, {bins} bins)")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.1)
    fig.savefig(path)
