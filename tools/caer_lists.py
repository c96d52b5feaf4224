"""CAER's published layout -> the input of tools/preprocess (a <Class>/<video> tree and official-format split lists).

CAER (Lee et al., ICCV 2019) ships CAER/{train,validation,test}/<Class>/<NNNN>.avi with 7 classes (Anger, Disgust,
Fear, Happy, Neutral, Sad, Surprise); every class folder of every split numbers its clips from 0001, so a clip
name repeats across classes and splits. This tool writes
  OUT/videos/<Class>/<split>_<Class>_<NNNN>.avi     symbolic links to the clips (video ids unique over the dataset)
  OUT/classInd.txt, trainlist01.txt, testlist01.txt
and then
  python tools/preprocess --src OUT/videos --dst ROOT --split-lists OUT --json caer.json
builds the dataset root that `--preset cten_caer_paper --root ROOT` reads. CAER's validation clips go into the
training list (`--validation train`, default; the run carves its own validation subset, --val-fraction) or are
left out (`--validation skip`). The annotation format has a training and a test split only.
"""
import argparse
import sys
from pathlib import Path

SPLITS = ("train", "validation", "test")
VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".mov", ".webm")


def caer_clips(src: Path) -> dict:
    """{split: [(class, clip path)]} of a CAER root, classes and clips in name order. Stops when a split folder is
    missing or the splits' class sets differ."""
    out, classes = {}, None
    for split in SPLITS:
        folder = src / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist: --src must be the CAER folder holding "
                                    f"{', '.join(SPLITS)}/<Class>/<clip>.avi")
        names = sorted(d.name for d in folder.iterdir() if d.is_dir())
        if classes is not None and names != classes:
            raise ValueError(f"{folder} has classes {names}, {src / SPLITS[0]} has {classes}")
        classes = names
        out[split] = [(c, p) for c in names for p in sorted((folder / c).iterdir())
                      if p.suffix.lower() in VIDEO_EXTS]
    return out


def clip_id(split: str, cls: str, path: Path) -> str:
    """A video id unique over CAER: its clip number repeats in every class folder of every split."""
    return f"{split}_{cls}_{path.stem}"


def write_lists(clips: dict, out: Path, validation: str = "train") -> dict:
    """Writes OUT/videos links and the split lists; returns {'train': n, 'test': n, 'classes': [...]}."""
    classes = sorted({c for items in clips.values() for c, _ in items})
    train_splits = ("train", "validation") if validation == "train" else ("train",)
    lists = {"train": [], "test": []}
    for split, items in clips.items():
        if split == "validation" and validation == "skip":
            continue
        for cls, path in items:
            vid = clip_id(split, cls, path)
            link = out / "videos" / cls / f"{vid}{path.suffix.lower()}"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(path.resolve())
            lists["train" if split in train_splits else "test"].append((cls, vid))
    (out / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    (out / "trainlist01.txt").write_text("".join(f"{c}/{v} {classes.index(c) + 1}\n" for c, v in lists["train"]))
    (out / "testlist01.txt").write_text("".join(f"{c}/{v}\n" for c, v in lists["test"]))
    return {"train": len(lists["train"]), "test": len(lists["test"]), "classes": classes}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, required=True, help="CAER root holding train/ validation/ test/")
    p.add_argument("--out", type=Path, required=True, help="folder for videos/ and the split lists")
    p.add_argument("--validation", choices=["train", "skip"], default="train",
                   help="CAER's validation clips: into the training list, or left out")
    args = p.parse_args(argv)
    try:
        counts = write_lists(caer_clips(args.src), args.out, args.validation)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{counts['train']} training and {counts['test']} test clips of {len(counts['classes'])} classes "
          f"({', '.join(counts['classes'])}); next:\n  python tools/preprocess --src {args.out / 'videos'} "
          f"--dst ROOT --split-lists {args.out} --json caer.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
