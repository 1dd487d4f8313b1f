"""What tests/test_hub.py and tests/test_hub_failures.py share: the client
subprocess runner (huggingface_hub reads HF_ENDPOINT when imported, so every
client runs in a fresh interpreter) and the stand-in Hub fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from hub_server import HubServer, client_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "hf_test_token_do_not_print"

# Prepended to every client script: builds an untrained tiny model folder in ~1 s.
PRELUDE = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    import vit
    from vit import hub, model_folder

    def make_folder(path, seed=0):
        import keras
        from vit import export
        keras.utils.set_random_seed(seed)
        config = vit.get_preset("tiny")
        model = vit.build_vit(config)
        metrics = {"preset": "tiny", "epochs": 0, "test_top1": 0.01, "test_top5": 0.05,
                   "test_loss": 4.6, "train_seconds": 0.0, "images_per_second": 0.0}
        export.write_model_folder(model, path, config=config, metrics=metrics, history=[],
                                  label_names=[f"class_{i}" for i in range(100)])
        return path

    def result(obj):
        print("RESULT " + json.dumps(obj))
''')


def run_client(script: str, env: dict, *args, timeout: int = 600) -> dict:
    """Run PRELUDE + script in a fresh interpreter from the repo root; returns its RESULT."""
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert TOKEN not in output, "the token leaked into the output"
    assert proc.returncode == 0, output[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-4000:]
    print(lines[-1])  # shown by pytest -s or on failure
    return json.loads(lines[-1][len("RESULT "):])


def front_matter(text: str) -> dict:
    assert text.startswith("---\n"), text[:200]
    return yaml.safe_load(text.split("---\n")[1])


# Fixtures named "hub" and "env"; a test module imports them to use them.
@pytest.fixture(scope="module", name="hub")
def hub_fixture():
    with HubServer(token=TOKEN) as server:
        yield server
        assert not server.unknown, f"the client called endpoints the test Hub lacks: {server.unknown}"


@pytest.fixture(name="env")
def env_fixture(hub, tmp_path, cifar_path):
    return client_env(hub.endpoint, hf_home=tmp_path / "hf", token=TOKEN, CIFAR100_DIR=cifar_path)
