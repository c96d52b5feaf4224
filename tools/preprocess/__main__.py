"""`python tools/preprocess --help`: run as a folder, this file puts the repository root on sys.path so
the package imports as tools.preprocess (and worker processes can import it too)."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.preprocess.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
