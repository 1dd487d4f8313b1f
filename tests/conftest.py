"""Shared fixtures: the real CIFAR-100 (from $CIFAR100_DIR or ../shared) and paths."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def cifar_dir():
    """The real data if this machine has it, else None."""
    for candidate in (os.environ.get("CIFAR100_DIR"), ROOT.parent / "shared/data/cifar100"):
        if candidate and (Path(candidate) / "train").is_file():
            return str(candidate)
    return None


@pytest.fixture(scope="session")
def cifar_path():
    path = cifar_dir()
    if path is None:
        pytest.skip("CIFAR-100 not on this machine (set CIFAR100_DIR)")
    return path


@pytest.fixture(scope="session")
def cifar(cifar_path):
    from vit import data

    return data.load_cifar100(cifar_path)
