"""Multi-worker data parallelism: two local train.py workers (TF_CONFIG, 127.0.0.1) on CPU.

Each test starts real worker processes, as on two machines: the cluster's
collectives run over gRPC between them. The non-chief gets an output folder
of its own, which must stay unwritten.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import vit  # noqa: F401 - registers the layers for load_model
from tests.conftest import ROOT
from vit import distribute
from vit.evaluation import evaluate

RUN = ["--preset", "tiny", "--epochs", 2, "--limit-train", 512, "--seed", 3]
TIMEOUT = 420  # seconds for a two-worker run on a busy 2-core machine (~40 s idle)
DIGEST = re.compile(r"^(worker \d+): final weights sha256 ([0-9a-f]{64})$", re.M)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(out_dirs, *args, log_dir, tag):
    """One train.py per output folder, worker i of a cluster on fresh local ports."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(len(out_dirs))]}
    procs = []
    for i, out in enumerate(out_dirs):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}})}
        log = open(log_dir / f"{tag}-worker{i}.log", "w+")
        cmd = [sys.executable, str(ROOT / "train.py"), *map(str, args), "--strategy",
               "multiworker", "--output-dir", str(out)]
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, text=True), log))
    return procs


def kill_all(procs):
    for proc, _ in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def finish(procs, timeout=TIMEOUT):
    """[(exit status, output)] once every worker has exited; kills them all on timeout."""
    deadline = time.time() + timeout
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        kill_all(procs)
        pytest.fail(f"the workers did not finish within {timeout} s: "
                    + " | ".join(tail(log) for _, log in procs))
    results = []
    for proc, log in procs:
        log.seek(0)
        results.append((proc.returncode, log.read()))
        log.close()
    return results


def tail(log, n=2000):
    log.seek(0)
    return log.read()[-n:]


def digests(outputs):
    """{"worker 0": sha256, ...} from the line each worker prints after training."""
    found = dict(m.groups() for out in outputs for m in DIGEST.finditer(out))
    assert len(found) == len(outputs), outputs[0][-2000:]
    return found


def weights_of(folder):
    return keras.saving.load_model(folder).get_weights()


@pytest.fixture(scope="module")
def two_workers(cifar_path, tmp_path_factory):
    """An uninterrupted two-worker run: (chief folder, non-chief folder, outputs)."""
    tmp = tmp_path_factory.mktemp("two-workers")
    dirs = [tmp / "chief", tmp / "worker1"]
    results = finish(start_workers(dirs, *RUN, "--data-dir", cifar_path, log_dir=tmp, tag="run"))
    for i, (code, out) in enumerate(results):
        assert code == 0, f"worker {i} exited {code}: {out[-3000:]}"
    return dirs[0], dirs[1], [out for _, out in results]


@pytest.mark.slow
def test_two_workers_end_with_identical_weights_and_only_the_chief_writes(two_workers, cifar):
    chief, other, outputs = two_workers
    found = digests(outputs)
    assert found["worker 0"] == found["worker 1"]
    # ...and that is what the chief saved (the non-chief never wrote anything)
    assert distribute.weights_digest(keras.saving.load_model(chief)) == found["worker 0"]
    assert not other.exists()
    for name in ("model.weights.h5", "config.json", "metrics.json", "README.md",
                 "calibration.json", "curves.png"):
        assert (chief / name).is_file(), name
    state = json.loads((chief / "checkpoint" / "latest.json").read_text())
    assert state["epoch"] == 2 and (chief / "checkpoint" / state["model"]).is_file()
    metrics = json.loads((chief / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["train_images"] == 512
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    # the chief scored the model it saved, alone (a local copy: no collective)
    again = evaluate(keras.saving.load_model(chief), cifar.x_test, cifar.y_test)
    assert again["test_top1"] == pytest.approx(metrics["test_top1"], abs=1e-6)
    assert again["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)


@pytest.mark.slow
def test_two_workers_train_as_two_devices_of_one_process(two_workers, cifar_path, tmp_path):
    """Each worker trains on its half of every global batch and the gradients are
    summed: the same computation as MirroredStrategy over two devices in one
    process. Measured: relative L2 difference 1e-6 (summation order); a worker
    that trains on the whole batch instead of its half (no sharding) lands at
    3e-2, one that clips or drops out differently at 1e-3 to 1e-2."""
    reference = tmp_path / "mirrored"
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *map(str, RUN), "--data-dir", cifar_path,
         "--cpu-devices", "2", "--strategy", "mirrored", "--output-dir", str(reference)],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    ours = np.concatenate([w.ravel() for w in weights_of(two_workers[0])])
    theirs = np.concatenate([w.ravel() for w in weights_of(reference)])
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-4


@pytest.mark.slow
def test_killed_two_worker_run_resumes_from_the_chiefs_checkpoint(two_workers, cifar_path,
                                                                  tmp_path):
    dirs = [tmp_path / "chief", tmp_path / "worker1"]
    procs = start_workers(dirs, *RUN, "--data-dir", cifar_path, log_dir=tmp_path, tag="killed")
    latest = dirs[0] / "checkpoint" / "latest.json"
    deadline = time.time() + TIMEOUT
    while (not latest.exists() and time.time() < deadline
           and all(proc.poll() is None for proc, _ in procs)):
        time.sleep(0.02)
    kill_all(procs)
    assert latest.exists(), " | ".join(tail(log) for _, log in procs)
    killed_after = json.loads(latest.read_text())["epoch"]
    assert killed_after == 1, "the run must be interrupted mid-training"
    assert not (dirs[0] / "metrics.json").exists() and not dirs[1].exists()

    # Every worker resumes (none of the run's settings given: the chief's checkpoint
    # has them); only the chief has the checkpoint, and sends it to the other.
    results = finish(start_workers(dirs, "--data-dir", cifar_path, "--resume",
                                   log_dir=tmp_path, tag="resumed"))
    for i, (code, out) in enumerate(results):
        assert code == 0, f"worker {i} exited {code}: {out[-3000:]}"
        assert f"after epoch {killed_after}" in out
    assert not dirs[1].exists()
    metrics = json.loads((dirs[0] / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["replicas"] == 2
    assert metrics["train_images"] == 512 and metrics["preset"] == "tiny"
    # bit for bit the uninterrupted run: batches are a function of (seed, epoch,
    # step), the chief sends its exact variables, a two-way sum is order-free
    found = digests([out for _, out in results])
    assert found["worker 0"] == found["worker 1"] == digests(two_workers[2])["worker 0"]


@pytest.mark.slow
@pytest.mark.parametrize("tf_config, message", [
    (None, "needs TF_CONFIG"),
    ("{cluster", "TF_CONFIG is not JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
     "is not in the cluster"),
], ids=["unset", "not-json", "task-outside-cluster"])
def test_multiworker_without_a_usable_tf_config_is_a_one_line_error(tf_config, message):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--strategy",
                             "multiworker"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]


@pytest.mark.parametrize("tf_config, error", [
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, None),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", "index": 0}},
     None),
    ({"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}},
     "only chief and worker"),
    ({"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}, "host:port"),
    ({"cluster": {"worker": ["a:1"]}}, "needs \"cluster\" and \"task\""),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, "not in the"),
])
def test_read_tf_config(monkeypatch, tf_config, error):
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    if error is None:
        assert distribute.read_tf_config() == tf_config
    else:
        with pytest.raises(distribute.TFConfigError, match=re.escape(error)):
            distribute.read_tf_config()
