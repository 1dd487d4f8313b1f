"""Every benchmark script runs in --smoke mode and ends with its machine-readable line."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
NUM = r"[0-9]+\.[0-9]+"


def run_smoke(script: str, *args: str, env: dict | None = None, whole: bool = False) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout.strip() if whole else proc.stdout.strip().splitlines()[-1]


def test_accuracy_smoke(real_cifar_path):
    last = run_smoke("accuracy.py", "--uploads", "--data-dir", real_cifar_path)
    m = re.fullmatch(rf"top1=({NUM}) top5=({NUM}) upload_jpeg_top1={NUM} delta_jpeg=([+-]{NUM}) "
                     rf"upload_png_top1={NUM} delta_png=([+-]{NUM}) uploads_ok=(yes|no)", last)
    assert m, last
    top1, top5, d_jpeg, d_png = (float(m.group(i)) for i in (1, 2, 3, 4))
    # the bundled model on the first 500 test images (64.9% / 87.0% on all 10,000)
    assert 0.55 < top1 < top5 < 0.95, last
    # Uploads decoded by the app's path: the requirement (within 1 point of raw
    # top-1) is measured on all 10,000 images (README: -0.5 / -0.5). The smoke's
    # 200 images only show a broken decoder (it would lose tens of points); a
    # paired difference at n=200 has a standard error of ~2 points.
    assert abs(d_jpeg) <= 0.05 and abs(d_png) <= 0.05, last
    assert (m.group(5) == "yes") == (abs(d_jpeg) <= 0.01 and abs(d_png) <= 0.01), last


def test_accuracy_measures_through_the_test_time_flip_when_asked(real_cifar_path):
    import vit
    from vit import data, evaluation

    test = data.load_cifar100(real_cifar_path)
    x, y = test.x_test[:200], test.y_test[:200]
    model = vit.load_pretrained()
    for flip in ("off", "on"):
        out = run_smoke("accuracy.py", "--data-dir", real_cifar_path, "--limit", "200",
                        "--test-time-flip", flip, whole=True)
        assert f"test-time flip: {flip}" in out
        want = evaluation.evaluate(model, x, y, test_time_flip=flip == "on")
        assert out.splitlines()[-1] == (f"top1={want['test_top1']:.4f} "
                                        f"top5={want['test_top5']:.4f}"), flip


@pytest.mark.parametrize("flip", ["folder", "on"])
def test_inference_smoke(flip):
    last = run_smoke("inference.py", "--test-time-flip", flip)
    assert re.fullmatch(rf"p50_ms={NUM} p95_ms={NUM} maps_p50_ms={NUM} batch64_ips={NUM} "
                        rf"batch64_attn_ips={NUM} logits_p50_ms={NUM} forward_maps_p50_ms={NUM} "
                        rf"occlusion_p50_ms={NUM} curves_p50_ms={NUM} gflops_per_image={NUM}",
                        last), last
    from vit import model_folder

    views = 2 if flip == "on" or model_folder.uses_test_time_flip(model_folder.BUNDLED_DIR) else 1
    assert 0.1 * views < float(last.rsplit("=", 1)[1]) < 0.3 * views  # compact: ~0.16 GFLOP


def test_faithfulness_smoke(cifar_path):
    out = run_smoke("faithfulness.py", "--data-dir", cifar_path, whole=True).splitlines()
    rows = [re.fullmatch(rf"faithfulness (\S+) deletion=({NUM}) insertion=({NUM}) n=6", line)
            for line in out if line.startswith("faithfulness ")]
    assert all(rows) and len(rows) == 12, out[-14:]
    methods = {m.group(1) for m in rows}
    assert {"random", "raw", "raw_best", "rollout", "class_map", "occlusion"} <= methods
    assert all(0 <= float(m.group(i)) <= 1 for m in rows for i in (2, 3))
    assert re.fullmatch(r"app_default=(occlusion|class_map|rollout)", out[-1]), out[-1]


def test_train_throughput_smoke():
    last = run_smoke("train_throughput.py")
    m = re.fullmatch(rf"tiny=({NUM}) tiny_train_gflop=({NUM}) tiny_gflops=({NUM}) "
                     rf"tiny_input=({NUM})", last)
    assert m, last
    ips, gflop, gflops, input_ips = (float(m.group(i)) for i in (1, 2, 3, 4))
    # fit's steps wait for this pipeline, so it cannot be much slower than they are
    # (a factor 2 of slack: three timed batches on a shared machine are noisy)
    assert input_ips > ips / 2, last
    # the tiny ViT's training step: ~3x its forward pass, a few MFLOP per image
    assert 0.0005 < gflop < 0.02, last
    assert gflops == pytest.approx(ips * gflop, rel=0.02, abs=0.01), last


def test_serving_smoke():
    last = run_smoke("serving.py")
    assert re.fullmatch(rf"cold_start_s={NUM} roundtrip_ratio={NUM} rps={NUM} errors=0 "
                        rf"noop_rps={NUM} rss_mb_start={NUM} rss_mb_end={NUM}", last), last


def test_calibration_smoke(real_cifar_path):
    last = run_smoke("calibration.py", "--data-dir", real_cifar_path)
    m = re.fullmatch(rf"api_ece=({NUM}) api_top1=({NUM}) api_mean_confidence=({NUM}) n=200",
                     last)
    assert m, last
    # 200 images: the bundled model is right about 2 times in 3, and calibrated
    # confidence tracks that within sampling error (~ +-7 points at n=200)
    assert 0.5 < float(m.group(2)) < 0.8 and abs(float(m.group(2)) - float(m.group(3))) < 0.1


def test_robustness_smoke(cifar_path):
    last = run_smoke("robustness.py", "--data-dir", cifar_path)
    kinds = ["clean", "brightness_0.6", "brightness_0.4", "contrast_0.6", "contrast_0.4",
             "noise_15", "noise_25", "blur_1", "blur_2", "jpeg_40", "jpeg_20", "tilt_10",
             "tilt_15", "night_0.6", "night_0.4"]
    m = re.fullmatch(" ".join(f"{k}=({NUM})" for k in kinds) + rf" worst_drop=({NUM})", last)
    assert m, last
    scores = [float(v) for v in m.groups()[:-1]]
    assert all(0 <= s <= 1 for s in scores)
    assert float(m.group(len(kinds) + 1)) == pytest.approx(
        max(100 * (scores[0] - s) for s in scores), abs=0.051)


def test_robustness_damage_does_what_its_name_says():
    """Each damage changes the decoded 32x32 input the way it claims (a no-op
    damage would make any model look robust)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from robustness import damaged_input

    pixels = np.random.default_rng(0).integers(30, 226, (32, 32, 3), dtype=np.uint8)
    pixels[:, :16] //= 3  # some structure, so contrast and blur have something to act on
    got = {name: damaged_input(pixels, name, 0).astype(np.float64)
           for name in ["clean", "brightness_0.4", "contrast_0.4", "noise_25", "blur_2",
                        "jpeg_20", "tilt_15", "night_0.4"]}
    clean = got["clean"]
    assert np.abs(clean - pixels).mean() < 12  # the 128 px round trip alone is mild
    assert got["brightness_0.4"].mean() == pytest.approx(0.4 * clean.mean(), rel=0.05)
    assert got["contrast_0.4"].std() == pytest.approx(0.4 * clean.std(), rel=0.1)
    assert got["contrast_0.4"].mean() == pytest.approx(clean.mean(), rel=0.05)
    assert got["blur_2"].std() < clean.std() - 1
    assert got["night_0.4"].mean() == pytest.approx(0.4 * clean.mean(), rel=0.05)
    for name in ["noise_25", "jpeg_20", "tilt_15", "night_0.4"]:
        assert np.abs(got[name] - clean).mean() > 1.5, name
