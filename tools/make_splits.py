"""Draw further stratified train:test splits of VE-8 / Ekman-6 in the official annotation format.

    python tools/make_splits.py --annotation ve8_01.json --n 10 --ratio 2:1 --seed 0 --out splits/
    python tools/make_splits.py --annotation ek6_01.json --n 10 --ratio 1:1 --seed 0 --out splits/

writes splits/ve8_gen01.json ... ve8_gen10.json. Split k is drawn with seed + k - 1, recorded in the
file's "split_info" with the ratio. The paper's VE-8 splits 2-10 were never published: these are new
draws of the same protocol, and results on them must say so.
"""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.annotations import dump_annotation, load_annotation, make_splits  # noqa: E402
from datasets.errors import DataError  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotation", required=True, help="an annotation JSON whose videos are pooled and re-split")
    p.add_argument("--n", type=int, default=10, help="number of splits to draw (default 10)")
    p.add_argument("--ratio", default="2:1",
                   help="train:test proportion per class (VE-8 2:1, Ekman-6 1:1; default 2:1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first split; split k uses seed + k - 1 (default 0)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--prefix", default=None,
                   help="file name prefix (default: the annotation's name without its _NN suffix, e.g. ve8)")
    return p.parse_args(argv)


def main(argv=None) -> list:
    args = parse_args(argv)
    try:
        splits = make_splits(load_annotation(args.annotation), n=args.n, ratio=args.ratio, seed=args.seed,
                             source=Path(args.annotation).name)
    except (DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    prefix = args.prefix or re.sub(r"_\d+$", "", Path(args.annotation).stem)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in splits:
        info = split["split_info"]
        path = out / f"{prefix}_gen{info['index']:02d}.json"
        dump_annotation(split, path)
        n_train = sum(e["subset"] == "training" for e in split["database"].values())
        n_test = len(split["database"]) - n_train
        print(f"{path}: seed {info['seed']}, ratio {info['ratio']}, {n_train} train / {n_test} test")
        paths.append(path)
    return paths


if __name__ == "__main__":
    main()
