"""The annotation JSON of the official releases, from split lists or from a stratified ratio split.

JSON: {"labels": [class, ...], "database": {video_id: {"subset": "training" | "validation",
"annotations": {"label": class}}}}; the official files name the test split "validation".
Split lists (UCF-101 style, as released for VE-8 and Ekman-6): classInd.txt lines "1 Anger" (1-based);
trainlistXX.txt lines "Class/video_id index"; testlistXX.txt lines "Class/video_id" with or without the index.
"""
import json
import random
from pathlib import Path

from datasets.errors import DataError

LIST_FIX = "fix the split list (lines are 'Class/video_id' optionally followed by the 1-based class index)"


def read_class_ind(path: Path) -> list[str]:
    """Class names in index order from classInd.txt."""
    if not path.is_file():
        raise DataError(path, "classInd.txt not found", "point --split-lists at the folder holding the split lists")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{n}", f"expected '<index> <class>', got {line!r}", "fix classInd.txt")
        rows.append((int(parts[0]), parts[1]))
    if sorted(i for i, _ in rows) != list(range(1, len(rows) + 1)):
        raise DataError(path, "class indices are not 1..N", "fix classInd.txt")
    return [name for _, name in sorted(rows)]


def read_split_list(path: Path, labels: list[str]) -> list[tuple[str, str]]:
    """(class, video_id) per line, in file order; checks each class and index against classInd."""
    if not path.is_file():
        raise DataError(path, "split list not found", "check --split-lists and --split")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2 or parts[0].count("/") != 1:
            raise DataError(f"{path}:{n}", f"cannot parse {line!r}", LIST_FIX)
        label, video_id = parts[0].split("/")
        if label not in labels:
            raise DataError(f"{path}:{n}", f"unknown class {label!r} (classInd.txt has {labels})", LIST_FIX)
        if len(parts) == 2 and parts[1] != str(labels.index(label) + 1):
            raise DataError(f"{path}:{n}", f"class index {parts[1]} does not match {label!r} "
                                           f"(index {labels.index(label) + 1} in classInd.txt)", LIST_FIX)
        rows.append((label, video_id))
    return rows


DUPLICATES = ("refuse", "keep-last")


def split_from_lists(list_dir: Path, split: str, duplicates: str = "refuse"
                     ) -> tuple[list[str], dict[str, tuple[str, str]], list[str]]:
    """Labels, {video_id: (class, subset)} and notes from classInd.txt, trainlist<split>.txt, testlist<split>.txt.

    A JSON entry has one label and one subset, so a video id listed twice would lose one listing. duplicates
    "refuse" (default) raises DataError naming every such id; "keep-last" keeps its last entry (training first, then
    test) with a note, as the official VE-8 JSON does for 3527012618_7ceb8fb27b_700 (Disgust and Fear).
    """
    labels = read_class_ind(list_dir / "classInd.txt")
    listed: dict[str, list[tuple[str, str, str]]] = {}  # video_id -> [(class, subset, list file)]
    for name, subset in ((f"trainlist{split}.txt", "training"), (f"testlist{split}.txt", "validation")):
        for label, video_id in read_split_list(list_dir / name, labels):
            listed.setdefault(video_id, []).append((label, subset, name))
    twice = {v: rows for v, rows in listed.items() if len(rows) > 1}
    if twice and duplicates == "refuse":
        shown = "; ".join(f"{v} ({', '.join(f'{c} in {f}' for c, _, f in rows)})" for v, rows in list(twice.items())[:5])
        more = f" and {len(twice) - 5} more" if len(twice) > 5 else ""
        raise DataError(list_dir, f"{len(twice)} video ids are listed more than once, e.g. {shown}{more}; the JSON "
                                  "would keep one entry of each and lose the others",
                        "give every clip a unique id (tools/caer_lists.py does for CAER), or pass --duplicate-ids "
                        "keep-last to keep the last entry as the official VE-8 JSON does")
    notes = [f"{v} is listed {len(rows)} times ({', '.join(f'{s} {c}' for c, s, _ in rows)}); the last entry "
             f"({rows[-1][0]}) is kept (--duplicate-ids keep-last), as in the official JSON" for v, rows in twice.items()]
    return labels, {v: rows[-1][:2] for v, rows in listed.items()}, notes


def parse_ratio(text: str) -> tuple[int, int]:
    """'2:1' -> (2, 1): training parts : test parts."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--ratio must look like 2:1 (training:test, positive integers), got {text!r}")
    return int(parts[0]), int(parts[1])


def stratified_split(videos: dict[str, str], ratio: tuple[int, int], seed: int) -> dict[str, str]:
    """{video_id: class} -> {video_id: subset}: per class, round(n * test / (train + test)) test videos
    (at least one each side when the class has two or more), drawn with random.Random(seed)."""
    rng = random.Random(seed)
    subsets = {}
    for label in sorted(set(videos.values())):
        ids = sorted(v for v, c in videos.items() if c == label)
        rng.shuffle(ids)
        n_test = round(len(ids) * ratio[1] / sum(ratio))
        if len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        subsets.update({v: "validation" for v in ids[:n_test]})
        subsets.update({v: "training" for v in ids[n_test:]})
    return subsets


def annotation_json(labels: list[str], entries: dict[str, tuple[str, str]]) -> dict:
    """{video_id: (class, subset)} -> the official JSON dict, training videos first, each in entry order."""
    ordered = [v for v, (_, s) in entries.items() if s == "training"] + \
              [v for v, (_, s) in entries.items() if s != "training"]
    return {"labels": list(labels),
            "database": {v: {"subset": entries[v][1], "annotations": {"label": entries[v][0]}} for v in ordered}}


def write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
