"""Pretrained weights a run cannot forget: the guard that stops a non-demo preset without the files it expects, and
the record of every file loaded (path, size, SHA-256, and what the loader kept, ignored and initialised), written to
config.json and results.json.

A recipe names the files its model expects with `expected_weights(args)` (core/methods/base.py, `WeightFlag`) and
loads each through `load_weight`, which names the flag in any error.
"""
import hashlib
from pathlib import Path
from typing import Callable

from models.pretrained import CheckpointError


def is_demo_preset(preset) -> bool:
    """Demo presets (<method>_demo) train tiny networks from scratch on purpose; a run without a preset names its
    own flags."""
    return preset is None or str(preset).endswith("_demo")


def missing_weights(expected, args) -> list:
    """The WeightFlags of `expected` whose option is not set in `args`."""
    return [w for w in expected if not getattr(args, w.dest, None)]


def check_expected_weights(expected, args) -> None:
    """Stops a non-demo preset whose expected weight files are not all given, unless --allow-random-init."""
    if is_demo_preset(args.preset) or args.allow_random_init:
        return
    missing = missing_weights(expected, args)
    if missing:
        width = max(len(f"{w.flag} {w.metavar}") for w in missing)
        lines = "".join(f"\n  {f'{w.flag} {w.metavar}':<{width}}  {w.expects}" for w in missing)
        raise ValueError(f"preset {args.preset} expects pretrained weight files that were not given; pass{lines}\n"
                         "docs/weights.md says where each file is published; or pass --allow-random-init to train "
                         "those parts from random initialisation")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path) -> dict:
    """{'path', 'size' (bytes), 'sha256'} of a file; of a folder (a text model): every file in name order, the
    digest over (relative name, content digest) pairs."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        h = hashlib.sha256()
        for p in files:
            h.update(f"{p.relative_to(path).as_posix()}\0{sha256_of(p)}\n".encode())
        return {"path": str(path.resolve()), "size": sum(p.stat().st_size for p in files), "sha256": h.hexdigest()}
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": sha256_of(path)}


def load_weight(weight, path, loader: Callable[[], dict]) -> dict:
    """Runs `loader` (which reads `path` into a module and returns its report) and returns the file's record:
    {'flag', 'path', 'size', 'sha256', 'kept', 'ignored', 'initialised', ...the loader's other facts}. A file that
    does not fit stops with the flag named and what it expects."""
    try:
        report = loader()
    except CheckpointError as e:
        raise CheckpointError(f"{weight.flag} {path}: {e}\nfix: {weight.flag} expects {weight.expects}") from None
    return {"flag": weight.flag, **file_record(path), **report}
