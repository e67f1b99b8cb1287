"""Shared fixtures: the read-only reference data in ``../shared/data``.

The data is never copied into this repository. Tests that need it skip with a clear reason
when it is absent (e.g. a clone without ``../shared`` beside it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("IRTSCOPE_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data``; skips the test when it is not there."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared reference data not found at {path} (clone next to ../shared)")
    return path


@pytest.fixture(scope="session")
def ctgov_dir(shared_data: Path) -> Path:
    return shared_data / "ctgov"


@pytest.fixture(scope="session")
def imaging_dir(shared_data: Path) -> Path:
    return shared_data / "imaging"
