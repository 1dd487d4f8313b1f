"""The layers run on any Keras backend: the bundled model under JAX matches TensorFlow.

Keras fixes its backend at import, and this process runs TensorFlow (conftest),
so the JAX side runs in a subprocess with KERAS_BACKEND=jax on the CPU.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import vit
from tests.conftest import ROOT

JAX_SCRIPT = """
import sys
import numpy as np
import keras
import vit
assert keras.backend.backend() == "jax", keras.backend.backend()
import jax
model = vit.load_pretrained()
logits = model(np.load(sys.argv[1]))
assert isinstance(logits, jax.Array), type(logits)
np.save(sys.argv[2], np.asarray(logits))
"""


def fixed_inputs():
    """The first 8 example images plus 4 seeded noise images, raw 0-255 pixels."""
    names = sorted(p for p in os.listdir(ROOT / "examples") if p.endswith(".png"))[:8]
    examples = [np.asarray(Image.open(ROOT / "examples" / n).convert("RGB")) for n in names]
    noise = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    return np.concatenate([np.stack(examples), noise]).astype("float32")


@pytest.mark.slow
def test_bundled_model_gives_the_same_logits_under_jax_as_under_tensorflow(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.fail("jax is not installed, so the JAX backend cannot be tested: "
                    "pip install -r requirements-dev.txt (it pins jax[cpu])")
    x = fixed_inputs()
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "x.npy"), str(tmp_path / "jax.npy")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jax_logits = np.load(tmp_path / "jax.npy")

    tf_logits = np.asarray(vit.load_pretrained()(x))
    assert jax_logits.shape == tf_logits.shape == (len(x), 100)
    np.testing.assert_allclose(jax_logits, tf_logits, rtol=0, atol=1e-4)
    # Same predictions too, and not trivially equal (e.g. all zeros).
    np.testing.assert_array_equal(jax_logits.argmax(1), tf_logits.argmax(1))
    assert tf_logits.std() > 0.1
