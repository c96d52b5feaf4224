"""Shared fixtures. `../shared` (the official split files) sits beside the checkout; VEA_SHARED overrides."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VEA_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "annotations").is_dir():
        pytest.fail(f"official annotations not found under {SHARED}; set VEA_SHARED to the folder holding annotations/")
    return SHARED
