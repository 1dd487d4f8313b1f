"""Every benchmark script runs in --smoke mode and ends with its machine-readable line."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
NUM = r"[0-9]+\.[0-9]+"


def run_smoke(script: str, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_accuracy_smoke(cifar_path):
    last = run_smoke("accuracy.py", "--uploads", "--data-dir", cifar_path)
    assert re.fullmatch(rf"top1={NUM} top5={NUM} upload_jpeg_top1={NUM} delta_jpeg=[+-]{NUM} "
                        rf"upload_png_top1={NUM} delta_png=[+-]{NUM} uploads_ok=(yes|no)",
                        last), last


def test_inference_smoke():
    last = run_smoke("inference.py")
    assert re.match(rf"p50_ms={NUM} p95_ms={NUM} maps_p50_ms={NUM} batch64_ips={NUM}", last), last


def test_train_throughput_smoke():
    last = run_smoke("train_throughput.py")
    assert re.fullmatch(rf"tiny={NUM}", last), last


def test_serving_smoke():
    last = run_smoke("serving.py")
    assert re.fullmatch(rf"cold_start_s={NUM} roundtrip_ratio={NUM} rps={NUM} errors=0 "
                        rf"noop_rps={NUM} rss_mb_start={NUM} rss_mb_end={NUM}", last), last
