"""Shared fixtures: CIFAR-100 (the real one, or a generated stand-in) and paths.

`cifar` / `cifar_path` give the real CIFAR-100 (from $CIFAR100_DIR or
../shared) when this machine has it, else a small generated dataset in the
same python layout (tests/cifar_layout.py), so every pipeline, CLI, training
and resume test runs anywhere. `real_cifar` / `real_cifar_path` are for the
checks that measure accuracy or facts of the real images: without the data
those tests are deselected, with a line saying so, never skipped. Under
CI=true (CI has the data and Chromium) a missing dataset is an error and any
skipped test fails the run.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REAL_DATA_FIXTURES = {"real_cifar", "real_cifar_path"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def cifar_dir():
    """The real data if this machine has it, else None."""
    for candidate in (os.environ.get("CIFAR100_DIR"), ROOT.parent / "shared/data/cifar100"):
        if candidate and (Path(candidate) / "train").is_file():
            return str(candidate)
    return None


def pytest_collection_modifyitems(config, items):
    if cifar_dir() is not None or in_ci():
        return  # in CI, the real_cifar fixture fails loudly instead
    needs_real = [item for item in items
                  if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if needs_real:
        items[:] = [item for item in items if item not in needs_real]
        config.hook.pytest_deselected(items=needs_real)
        config._vit_deselected = [item.nodeid for item in needs_real]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    deselected = getattr(config, "_vit_deselected", [])
    if deselected:
        terminalreporter.write_line(
            f"{len(deselected)} accuracy checks on the real CIFAR-100 were not run: set "
            "CIFAR100_DIR to its python folder (every other test used a generated stand-in)",
            yellow=True)
    skipped = terminalreporter.stats.get("skipped", [])
    if in_ci() and skipped:
        terminalreporter.write_line(
            f"CI=true: {len(skipped)} test(s) skipped; nothing may skip in CI", red=True)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if in_ci() and reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def real_cifar_path():
    path = cifar_dir()
    if path is None:  # only reached in CI: elsewhere these tests are deselected
        pytest.fail("CI=true but CIFAR-100 is not here: set CIFAR100_DIR (CI must run "
                    "the accuracy checks)")
    return path


@pytest.fixture(scope="session")
def real_cifar(real_cifar_path):
    from vit import data

    return data.load_cifar100(real_cifar_path)


@pytest.fixture(scope="session")
def cifar_path(tmp_path_factory):
    path = cifar_dir()
    if path is None:
        from tests.cifar_layout import write_cifar100_layout

        path = write_cifar100_layout(str(tmp_path_factory.mktemp("cifar100-generated")))
    return path


@pytest.fixture(scope="session")
def cifar(cifar_path):
    from vit import data

    return data.load_cifar100(cifar_path)
