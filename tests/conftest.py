"""Shared fixtures. The official split files ship with the project in annotations/ (nothing beside the checkout is
read)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANNOTATIONS = ROOT / "annotations"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """annotations/ of the checkout: ve8/ and ek6/, each with classInd.txt, trainlist01.txt, testlist01.txt and
    <name>_01.json."""
    return ANNOTATIONS
