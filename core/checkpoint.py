"""Training checkpoints: model, optimiser, scheduler, scaler, EMA, epoch and every RNG, so a killed run resumes
exactly where its last checkpoint left it."""
import os
import random
from pathlib import Path

import numpy as np
import torch


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **parts) -> None:
    """Writes atomically (temp file + rename) so a kill during the write never leaves a broken checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(parts, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError from its writer
        tmp.unlink(missing_ok=True)
        raise OSError(f"could not write checkpoint {path} ({e}); free space on that disk (the previous {path.name} "
                      "is intact) and resume with --resume") from None


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass --resume/--checkpoint with a file written by main.py")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"checkpoint {path} could not be read ({e}); it is corrupt or not a torch file") from e


def load_model_state(model: torch.nn.Module, state: dict, path) -> None:
    """Strict load with a readable error listing the mismatching keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shape:
        def few(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        lines = [f"checkpoint {path} does not fit the model built from these options:"]
        if missing:
            lines.append(f"  missing keys: {few(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {few(unexpected)}")
        if shape:
            lines.append("  shape mismatch: " + few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape]))
        lines.append("  build the model with the options the checkpoint was trained with (its config.json lies beside it)")
        raise ValueError("\n".join(lines))
    model.load_state_dict(state)
