"""The bundled default model: intact, loadable, and as accurate as documented."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from vit import model_folder
from vit.evaluation import evaluate

def test_bundled_folder_is_complete_and_small():
    names = set(os.listdir(model_folder.BUNDLED_DIR))
    assert {"config.json", "metadata.json", "model.weights.h5", "labels.json", "metrics.json",
            "curves.png", "README.md"} <= names
    size = sum(os.path.getsize(os.path.join(model_folder.BUNDLED_DIR, n)) for n in names
               if os.path.isfile(os.path.join(model_folder.BUNDLED_DIR, n)))
    assert size <= 25 * 1024 * 1024
    model_folder.verify_model_folder(model_folder.BUNDLED_DIR)


@pytest.mark.slow
def test_bundled_weights_reach_their_documented_accuracy(real_cifar):
    cifar = real_cifar
    metrics = json.loads(open(os.path.join(model_folder.BUNDLED_DIR, "metrics.json")).read())
    model = model_folder.load_pretrained()
    measured = evaluate(model, cifar.x_test, cifar.y_test)
    # the same deterministic CPU evaluation as at export: at most 2 of 10,000 images apart
    assert measured["test_top1"] == pytest.approx(metrics["test_top1"], abs=2e-4)
    assert measured["test_top5"] == pytest.approx(metrics["test_top5"], abs=2e-4)
    readme = (ROOT / "README.md").read_text()
    bundled_row = next(line for line in readme.splitlines()
                       if line.startswith("| `compact`, bundled (`vit/weights/`)")).replace("**", "")
    top1, top5 = metrics["test_top1"], metrics["test_top5"]  # the README's table states them
    assert f"{100 * top1:.1f}% ({top1:.4f})" in bundled_row, bundled_row
    assert f"{100 * top5:.1f}% ({top5:.4f})" in bundled_row, bundled_row
    assert np.isfinite(measured["test_loss"])


def test_readme_library_snippet_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
                   if "vit.load_pretrained()" in block)
    check = ("\nassert out['logits'].shape == (2, 100)"
             "\nassert len(out['attention']) == len(vit.block_names(model))")
    result = subprocess.run([sys.executable, "-c", snippet + check], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
