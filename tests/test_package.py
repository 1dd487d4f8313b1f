"""The package: `pip wheel .` gives a wheel holding vit/ and the bundled model, and
the model card's usage snippet works from that wheel alone, outside the checkout.

The wheel is built offline (`--no-build-isolation --no-index`: setuptools comes from
requirements-dev.txt) from a copy of the working tree, so a stale build/ or
*.egg-info in the checkout can neither leak into the wheel nor be left behind.
Installing it into a fresh venv would mean installing TensorFlow again, so it goes
into a `--target` folder instead, and the snippets run with cwd outside the repo and
PYTHONPATH = that folder only (TensorFlow and Keras come from this venv's
site-packages, which has no `vit`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from hub_server import HubServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "vit", "weights")
# The bundled model folder as the app and the card use it.
BUNDLED_FILES = ["model.weights.h5", "config.json", "metadata.json", "labels.json",
                 "metrics.json", "calibration.json", "faithfulness.json", "README.md",
                 "curves.png", "reliability.png", "history.csv"]
REPO_ID = "user/vit-cifar100-compact"
# An example the bundled model gets right: 97% (calibrated) after the JPEG round trip.
PHOTO, PHOTO_CLASS = "lion.png", "lion"
# Never copied into the build tree: not part of any checkout (or regenerated there).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "runs", "out", "build", "dist", "*.egg-info",
                                    "__pycache__", "*.pyc", ".pytest_cache", ".gradio", "flagged")


def _run(cmd, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc


def _code_blocks(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", markdown, flags=re.S | re.M)


def _section(markdown: str, heading: str) -> str:
    """The text under `heading` (e.g. "## Usage") up to the next heading of its level
    or above (a "# comment" inside a code block is no heading)."""
    lines, level, out, fenced = markdown.splitlines(keepends=True), heading.index(" "), None, False
    for line in lines:
        fenced ^= line.startswith("```")
        if out is None:
            out = [] if line.rstrip("\n") == heading else None
            continue
        if not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        out.append(line)
    assert out is not None, f"no {heading!r} section"
    return "".join(out)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
          "--no-index", "--disable-pip-version-check", "-w", str(tmp / "wheels")], cwd=src)
    wheels = glob.glob(str(tmp / "wheels" / "*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_package_metadata_matches_requirements_and_makefile():
    """pyproject.toml's dependencies are requirements.txt's (less Gradio, which only
    app.py uses), each admitting the pinned version; Python 3.11-3.13 as the Makefile."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    deps = [Requirement(d) for d in project["dependencies"]]
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pinned = [Requirement(line.split(" #")[0]) for line in map(str.strip, f)
                  if line and not line.startswith(("#", "-"))]
    runtime = [r for r in pinned if r.name != "gradio"]
    assert len(runtime) == len(pinned) - 1, "requirements.txt lost gradio?"
    assert sorted((d.name, str(d.marker)) for d in deps) == \
        sorted((r.name, str(r.marker)) for r in runtime)
    for req in runtime:
        dep = next(d for d in deps if (d.name, str(d.marker)) == (req.name, str(req.marker)))
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:  # a pin: the package admits that version
            assert dep.specifier.contains(exact[0]), (req, dep)
        else:  # a range: kept as it is
            assert dep.specifier == req.specifier, (req, dep)

    with open(os.path.join(ROOT, "Makefile")) as f:
        lo_major, lo_minor, hi_major, hi_minor = map(int, re.search(
            r"\((\d+), (\d+)\) <= sys\.version_info\[:2\] <= \((\d+), (\d+)\)", f.read()).groups())
    spec = SpecifierSet(project["requires-python"])
    assert spec.contains(f"{lo_major}.{lo_minor}.0") and spec.contains(f"{hi_major}.{hi_minor}.99")
    assert not spec.contains(f"{lo_major}.{lo_minor - 1}.99")
    assert not spec.contains(f"{hi_major}.{hi_minor + 1}.0")
    assert Version(f"{lo_major}.{lo_minor}") <= Version(f"{hi_major}.{hi_minor}")


@pytest.mark.slow
def test_wheel_holds_vit_and_the_bundled_model(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        weights = {n: zf.read(n) for n in names if n.startswith("vit/weights/")}
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    # only the library and its metadata: no tests/, benchmarks/, scripts/, app.py, ...
    assert {n.split("/")[0] for n in names} == {"vit", dist_info}, sorted(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    modules = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "vit", "*.py")))
    assert "vit/__init__.py" in modules and "vit/card.py" in modules
    assert [m for m in modules if m not in names] == []
    assert {n for n in names if n.endswith(".py")} == set(modules)
    # the bundled model folder, byte for byte, with the weights metrics.json vouches for
    assert sorted(os.path.basename(n) for n in weights) == sorted(BUNDLED_FILES)
    for name, data in weights.items():
        with open(os.path.join(ROOT, name), "rb") as f:
            assert f.read() == data, f"{name} in the wheel differs from the checkout"
    metrics = json.loads(weights["vit/weights/metrics.json"])
    assert hashlib.sha256(weights["vit/weights/model.weights.h5"]).hexdigest() == \
        metrics["weights_sha256"]
    assert len(json.loads(weights["vit/weights/labels.json"])) == 100
    assert "Requires-Python: <3.14,>=3.11" in metadata or "Requires-Python: >=3.11,<3.14" in metadata
    for dist in ("keras", "huggingface_hub", "h5py", "pillow", "matplotlib", "numpy"):
        assert re.search(rf"^Requires-Dist: {dist}\b", metadata, flags=re.M | re.I), dist
    assert "gradio" not in metadata.split("\n\n")[0].lower()
    assert "vit-hub = vit.hub:main" in entry_points


@pytest.mark.slow
def test_installed_wheel_runs_the_model_cards_usage(wheel, tmp_path):
    """Install the wheel alone, push its bundled model with its `vit-hub` command to a
    local stand-in Hub, and run the usage snippet of the card that push wrote (then the
    README's): top-5 classes of a lion photo from the installed package."""
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "--target", str(site), wheel])
    assert (site / "vit" / "weights" / "model.weights.h5").is_file()
    work = tmp_path / "user"  # cwd: outside the checkout
    work.mkdir()
    from PIL import Image

    Image.open(os.path.join(ROOT, "examples", PHOTO)).convert("RGB").save(work / "photo.jpg",
                                                                          quality=95)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    base["PYTHONPATH"] = str(site)

    with HubServer() as hub:
        env = hub.env(hf_home=tmp_path / "hf", base=base)
        # the console script, as pip wrote it (its #! names this venv's python)
        pushed = _run([str(site / "bin" / "vit-hub"), "push", str(site / "vit" / "weights"),
                       REPO_ID], cwd=work, env=env)
        assert f"-> {hub.endpoint}/{REPO_ID}" in pushed.stdout, pushed.stdout
        card = hub.files(REPO_ID)["README.md"].decode()

        usage = _section(card, "## Usage")
        assert "requirements" not in usage
        (install,) = _code_blocks(usage, "bash")
        assert re.search(r'pip install "git\+https://github\.com/[^"]+"', install), install
        (snippet,) = _code_blocks(usage, "python")
        assert f'"hf://{REPO_ID}"' in snippet and '"photo.jpg"' in snippet
        (work / "card_usage.py").write_text(snippet)

        readme = _section(open(os.path.join(ROOT, "README.md")).read(), "### Install as a package")
        (commands,) = _code_blocks(readme, "bash")
        assert re.search(r"^pip install \.\s", commands, flags=re.M), commands
        assert 'pip install "git+' in commands and "pip wheel . --no-deps" in commands
        (readme_usage,) = _code_blocks(readme, "python")
        (work / "readme_usage.py").write_text(readme_usage)

        driver = textwrap.dedent("""
            import json, runpy, sys
            print("PATH", json.dumps(sys.path))
            runpy.run_path("card_usage.py", run_name="__main__")  # first: a fresh interpreter
            import numpy as np, vit
            print("VIT", vit.__file__)
            probs = runpy.run_path("readme_usage.py", run_name="__main__")["probs"]
            print("README", int(np.argmax(probs)), float(np.max(probs)), probs.shape)
        """)
        proc = _run([sys.executable, "-c", driver], cwd=work, env=env)
        assert not hub.unknown, f"the snippet called endpoints the test Hub lacks: {hub.unknown}"

    out = proc.stdout
    path = [p or str(work) for p in json.loads(re.search(r"^PATH (.*)$", out, re.M).group(1))]
    assert [p for p in path if os.path.isdir(os.path.join(p, "vit"))] == [str(site)], path
    assert re.search(r"^VIT (.*)$", out, re.M).group(1) == str(site / "vit" / "__init__.py")
    with open(os.path.join(WEIGHTS, "labels.json")) as f:
        labels = json.load(f)
    top5 = [(m.group(1), float(m.group(2)))
            for m in re.finditer(r"^(\S+): (\d+\.\d)%$", out, flags=re.M)]
    assert len(top5) == 5, out
    names, percents = zip(*top5)
    assert set(names) <= set(labels) and len(set(names)) == 5, top5
    assert list(percents) == sorted(percents, reverse=True) and sum(percents) <= 100.5, top5
    assert names[0] == PHOTO_CLASS and percents[0] >= 90, top5
    index, confidence, shape = re.search(r"^README (\d+) (\S+) \((\d+),\)$", out, re.M).groups()
    assert labels[int(index)] == PHOTO_CLASS and float(confidence) >= 0.9 and shape == "100", out
