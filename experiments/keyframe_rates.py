"""Empty-view rates of the erasing rules (models/erasing.py) on random attention curves.

    python experiments/keyframe_rates.py [--videos 100000] [--seq-len 6 16] [--theta 0.7] [--seed 0]

Each video gets independent attention curves per modality, drawn uniformly in [0, 1) (`uniform`) or as ReLU of a
standard normal (`relu`, which has exact zeros as a dead ReLU attention does). Prints, per rule, modality count
and T: the share of videos with an empty keyframe view, with an empty context view, and the mean keyframe share.
"""
import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.erasing import ERASE_RULES, erasing_masks, view_stats  # noqa: E402


def random_curves(kind: str, n: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """(n, T) attention curves of one modality."""
    if kind == "uniform":
        return torch.rand(n, T, generator=generator)
    return torch.randn(n, T, generator=generator).relu()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=100000)
    p.add_argument("--seq-len", type=int, nargs="+", default=[6, 16])
    p.add_argument("--theta", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print("| curves | modalities | T | rule | empty keyframe views | empty context views | keyframe fraction |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("uniform", "relu"):
        for n_mod in (2, 1):
            for T in args.seq_len:
                g = torch.Generator().manual_seed(args.seed)
                atts = [random_curves(kind, args.videos, T, g) for _ in range(n_mod)]
                for rule in ERASE_RULES:
                    stats = view_stats(*erasing_masks(atts, args.theta, rule, generator=g))
                    print(f"| {kind} | {n_mod} | {T} | {rule} | {stats['empty_key_views']:.3f} | "
                          f"{stats['empty_context_views']:.3f} | {stats['keyframe_fraction']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
