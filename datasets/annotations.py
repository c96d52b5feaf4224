"""Annotation files: the official JSON, the split lists it is built from, validation carving, new splits.

The JSON (the official CTEN/MART format, kept so existing preprocessed data works):

    {"labels": [class, ...],                                  # index order = class id
     "database": {video_id: {"subset": "training" | "validation", "annotations": {"label": class}}}}

The official releases call their TEST split "validation"; `TRAIN_SUBSET` / `TEST_SUBSET` name the two
values. Our real validation set is carved from training by `carve_validation`. Files written by
`make_splits` add one top-level key, "split_info", recording how the split was drawn.
"""
import json
import math
import random
import warnings
from pathlib import Path
from typing import Optional, Sequence

from datasets.errors import DataError

TRAIN_SUBSET = "training"
TEST_SUBSET = "validation"

VE8_POSITIVE = ("anticipation", "joy", "surprise", "trust")
VE8_CLASSES = ("anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust")
EK6_POSITIVE = ("joy", "surprise")
EK6_CLASSES = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
CAER_CLASSES = ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")  # its folder names
CAER_POSITIVE = ("happy", "surprise")  # as Ekman-6's joy and surprise
CAER_NEUTRAL = ("neutral",)


# ---------------------------------------------------------------------------------------------- JSON


def validate_annotation(data, path="<annotation>") -> dict:
    """Check the JSON's shape and labels; return it unchanged. Raises DataError naming the entry."""
    fix = "regenerate it from the split lists (datasets.annotations.annotation_from_split_lists)"
    if not (isinstance(data, dict) and isinstance(data.get("labels"), list) and isinstance(data.get("database"), dict)):
        raise DataError(path, 'expected an object {"labels": [...], "database": {...}}', fix)
    labels = data["labels"]
    if not labels or not all(isinstance(c, str) and c for c in labels) or len(set(labels)) != len(labels):
        raise DataError(path, f'"labels" must be a non-empty list of distinct class names, got {labels!r}', fix)
    for vid, entry in data["database"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("annotations"), dict)
                and isinstance(entry["annotations"].get("label"), str)):
            raise DataError(path, f'entry {vid!r} must be {{"subset": ..., "annotations": {{"label": ...}}}}, '
                                  f'got {entry!r}', fix)
        if entry.get("subset") not in (TRAIN_SUBSET, TEST_SUBSET):
            raise DataError(path, f'entry {vid!r} has subset {entry.get("subset")!r}; expected '
                                  f'{TRAIN_SUBSET!r} or {TEST_SUBSET!r} (the test split)', fix)
        if entry["annotations"]["label"] not in labels:
            raise DataError(path, f'entry {vid!r} has label {entry["annotations"]["label"]!r}, not one of {labels}',
                            'correct the label or add the class to "labels"')
    return data


def load_annotation(path) -> dict:
    """Read and validate an annotation JSON (format in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "annotation file not found", missing_annotation_fix(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not a JSON file ({e})",
                        "pass the annotation JSON, not a split list or a video") from None
    return validate_annotation(data, path)


def missing_annotation_fix(path: Path) -> str:
    """What to pass instead of a missing annotation file: the other JSON files in its folder (ROOT), if any."""
    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist: check --root (or --annotation)"
    others = sorted(p.name for p in folder.glob("*.json"))
    if not others:
        return (f"{folder} holds no .json file: write one with tools/preprocess (--json NAME), or pass --annotation "
                "PATH")
    return (f"pass --annotation-name NAME for one of the files in {folder}: {', '.join(others[:10])}"
            + (f" (+{len(others) - 10} more)" if len(others) > 10 else "") + "; or --annotation PATH")


def dump_annotation(data: dict, path) -> None:
    """Write in the official files' byte format (json.dumps defaults, no trailing newline)."""
    Path(path).write_text(json.dumps(data), encoding="utf-8")


def subset_entries(data: dict, subset: str) -> list:
    """[(video_id, class_name)] of one official subset ('training' or 'validation' = test), in file order."""
    if subset not in (TRAIN_SUBSET, TEST_SUBSET):
        raise ValueError(f"subset must be {TRAIN_SUBSET!r} or {TEST_SUBSET!r} (the test split), got {subset!r}")
    return [(vid, e["annotations"]["label"]) for vid, e in data["database"].items() if e["subset"] == subset]


# --------------------------------------------------------------------------------------- split lists


def read_class_index(path) -> list:
    """classInd.txt ("1 Anger" per line, 1-based, contiguous) -> class names in index order."""
    path = Path(path)
    rows = [line.split() for line in _read_lines(path)]
    fix = 'write one "<index> <class>" per line, indices 1..C'
    bad = [" ".join(r) for r in rows if len(r) != 2 or not r[0].isdigit()]
    if bad:
        raise DataError(path, f"malformed lines {bad[:3]}", fix)
    if [int(r[0]) for r in rows] != list(range(1, len(rows) + 1)) or not rows:
        raise DataError(path, "class indices are not 1..C in order", fix)
    return [r[1] for r in rows]


def read_split_list(path, labels: Sequence[str]) -> list:
    """trainlist/testlist ("Class/video_id" with an optional 1-based class index column) -> [(video_id, class)]."""
    path = Path(path)
    entries = []
    for n, line in enumerate(_read_lines(path), 1):
        parts = line.split()
        if len(parts) not in (1, 2) or parts[0].count("/") != 1:
            raise DataError(path, f"line {n} {line!r} is not 'Class/video_id [index]'", "fix or remove the line")
        cls, vid = parts[0].split("/")
        if cls not in labels:
            raise DataError(path, f"line {n}: unknown class {cls!r} (classes: {list(labels)})",
                            "use a class name from classInd.txt")
        if len(parts) == 2 and (not parts[1].isdigit() or int(parts[1]) != labels.index(cls) + 1):
            raise DataError(path, f"line {n}: index {parts[1]!r} does not match class {cls!r} "
                                  f"(classInd.txt gives {labels.index(cls) + 1})", "correct the index column")
        entries.append((vid, cls))
    return entries


def annotation_from_split_lists(class_ind, train_list, test_list) -> dict:
    """Build the annotation JSON from the official split lists (reproduces ve8_01.json / ek6_01.json exactly).

    Entries keep the lists' order, training first. A video listed twice keeps its first position and its
    last label and subset, as the released JSON does for VE-8's 3527012618_7ceb8fb27b_700 (Disgust and
    Fear in trainlist01; Fear kept); each such duplicate is reported in one warning.
    """
    labels = read_class_index(class_ind)
    database, seen = {}, {}
    for subset, lst in ((TRAIN_SUBSET, train_list), (TEST_SUBSET, test_list)):
        for vid, cls in read_split_list(lst, labels):
            seen.setdefault(vid, []).append(f"{cls} ({subset})")
            database[vid] = {"subset": subset, "annotations": {"label": cls}}
    dups = {vid: where for vid, where in seen.items() if len(where) > 1}
    if dups:
        warnings.warn("videos listed more than once (the last listing is kept): "
                      + "; ".join(f"{vid}: {' then '.join(w)}" for vid, w in dups.items()), stacklevel=2)
    return {"labels": labels, "database": database}


def _read_lines(path: Path) -> list:
    if not path.is_file():
        raise DataError(path, "file not found", "pass the folder's classInd.txt / trainlist01.txt / testlist01.txt")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not a text file ({e})", "pass the plain-text split list") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------ validation and splits


def carve_validation(data: dict, fraction: float = 0.1, seed: int = 0) -> list:
    """Video ids of a validation subset carved from the training subset, stratified by class.

    Each class gives round(fraction * n_class) of its training videos (at most n_class - 1, so every class
    keeps one training video), drawn with random.Random(seed): deterministic for a given file, fraction
    and seed. Test ("validation") videos are never carved. Returns the ids in file order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = random.Random(seed)
    by_class = _group_by_class(subset_entries(data, TRAIN_SUBSET), data["labels"])
    carved = set()
    for cls in data["labels"]:
        ids = by_class[cls]
        k = min(round(fraction * len(ids)), max(len(ids) - 1, 0))
        carved.update(rng.sample(ids, k))
    return [vid for vid, _ in subset_entries(data, TRAIN_SUBSET) if vid in carved]


def empty_subset_message(data: dict, subset: str, val_fraction: float) -> tuple:
    """(why, fix) of a DataError for a subset ('train', 'val', 'test') without videos."""
    make = "write one with tools/preprocess (--split-lists or --ratio) or tools/make_splits.py"
    if subset == "test":
        return (f"no test videos (entries with subset {TEST_SUBSET!r}, the official name of the test split)",
                f"use an annotation with a test split; {make}")
    if subset == "train":
        return f"no training videos (entries with subset {TRAIN_SUBSET!r})", f"use an annotation with a training split; {make}"
    if val_fraction <= 0:
        return ("no validation subset: --val-fraction is 0",
                "pass --val-fraction > 0, or --select last (train on the whole training split, test the last epoch)")
    largest = max(len(ids) for ids in _group_by_class(subset_entries(data, TRAIN_SUBSET), data["labels"]).values())
    why = (f"--val-fraction {val_fraction} carves no video: each class gives round({val_fraction} x its training "
           f"videos) and keeps at least one, and the largest class has {largest}")
    papers = "--val-fraction 0 --select last (the papers' protocol: the whole training split, the last epoch tested)"
    if largest < 2:
        return why, f"pass {papers}"
    return why, f"pass --val-fraction {math.ceil(100 * 0.51 / largest) / 100:g} or more, or {papers}"


def parse_ratio(ratio) -> tuple:
    """'2:1' or (2, 1) -> (2, 1): the train:test proportion of a split."""
    parts = ratio.split(":") if isinstance(ratio, str) else list(ratio)
    try:
        a, b = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"ratio must look like '2:1' (train:test, positive integers), got {ratio!r}") from None
    if a <= 0 or b <= 0:
        raise ValueError(f"ratio must look like '2:1' (train:test, positive integers), got {ratio!r}")
    return a, b


def make_splits(data: dict, n: int = 10, ratio="2:1", seed: int = 0, source: str = "") -> list:
    """Draw n stratified train:test splits of all videos in `data` (the papers' 10-split protocol).

    Split k (0-based) shuffles each class with random.Random(seed + k) and gives round(n_c * a / (a + b))
    videos of the class to training, the rest to test. Each result is an annotation in the official
    format plus "split_info": {"seed": seed + k, "ratio": "a:b", "index": k + 1, "source": source}, so one
    split can be regenerated from its own record. VE-8 uses 2:1, Ekman-6 1:1. These are NOT the paper's
    unpublished splits 2-10; results on them must say so.
    """
    a, b = parse_ratio(ratio)
    if n < 1:
        raise ValueError(f"number of splits must be >= 1, got {n}")
    everything = [(vid, e["annotations"]["label"]) for vid, e in data["database"].items()]
    by_class = _group_by_class(everything, data["labels"])
    splits = []
    for k in range(n):
        rng = random.Random(seed + k)
        train = set()
        for cls in data["labels"]:
            ids = list(by_class[cls])
            rng.shuffle(ids)
            train.update(ids[:round(len(ids) * a / (a + b))])
        database = {vid: {"subset": TRAIN_SUBSET if vid in train else TEST_SUBSET, "annotations": {"label": cls}}
                    for vid, cls in everything}
        splits.append({"labels": list(data["labels"]), "database": database,
                       "split_info": {"seed": seed + k, "ratio": f"{a}:{b}", "index": k + 1, "source": source}})
    return splits


def _group_by_class(entries, labels) -> dict:
    groups = {cls: [] for cls in labels}
    for vid, cls in entries:
        groups[cls].append(vid)
    return groups


# ------------------------------------------------------------------------------------------ polarity


def class_polarity(labels: Sequence[str], positive: Optional[Sequence[str]] = None,
                   neutral: Sequence[str] = ()) -> list:
    """+1 (positive sentiment) / -1 (negative) / 0 (neutral: no polarity) per class, in `labels` order.

    VE-8, Ekman-6 and CAER class sets are recognised by name (case-insensitive; CAER's Neutral is neutral); any
    other class set needs `positive`, the names of its positive classes, and `neutral`, those without polarity.
    """
    lower = [c.lower() for c in labels]
    if positive is None:
        if sorted(lower) == sorted(VE8_CLASSES):
            positive = VE8_POSITIVE
        elif sorted(lower) == sorted(EK6_CLASSES):
            positive = EK6_POSITIVE
        elif sorted(lower) == sorted(CAER_CLASSES):
            positive, neutral = CAER_POSITIVE, CAER_NEUTRAL
        else:
            raise ValueError(f"unknown class set {list(labels)}: pass --polarity-file FILE or --positive-classes "
                             "NAME ... (VE-8, Ekman-6 and CAER are known)")
    pos, neu = {p.lower() for p in positive}, {n.lower() for n in neutral}
    unknown = (pos | neu) - set(lower)
    if unknown:
        raise ValueError(f"positive / neutral classes {sorted(unknown)} are not among the labels {list(labels)}")
    return [1 if c in pos else 0 if c in neu else -1 for c in lower]


POLARITY_WORDS = {"positive": 1, "negative": -1, "neutral": 0}


def read_polarity_file(path, labels: Sequence[str]) -> list:
    """+1 / -1 / 0 per class of `labels` from a JSON object {class: "positive" | "negative" | "neutral"} or a CSV
    of lines "class,polarity" (a header line "class,polarity" may lead). Every class must be listed (class names
    match case-insensitively); a missing class or an unknown word stops with the file named."""
    path = Path(path)
    fix = 'list every class once with "positive", "negative" or "neutral"'
    if not path.is_file():
        raise DataError(path, "polarity file not found", "pass --polarity-file PATH (JSON or CSV)")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, f"not a JSON file ({e})", fix) from None
        if not isinstance(table, dict):
            raise DataError(path, "expected a JSON object {class: polarity}", fix)
    else:
        rows = [[c.strip() for c in line.split(",")] for line in text.splitlines() if line.strip()]
        if rows and [c.lower() for c in rows[0]] == ["class", "polarity"]:
            rows = rows[1:]
        if any(len(r) != 2 for r in rows):
            raise DataError(path, "expected CSV lines 'class,polarity'", fix)
        table = dict(rows)
    table = {str(k).lower(): str(v).lower() for k, v in table.items()}
    missing = [c for c in labels if c.lower() not in table]
    if missing:
        raise DataError(path, f"classes {missing} of the annotation have no polarity", fix)
    bad = {k: v for k, v in table.items() if v not in POLARITY_WORDS}
    if bad:
        raise DataError(path, f"unknown polarity words {bad}", fix)
    return [POLARITY_WORDS[table[c.lower()]] for c in labels]


def run_polarity(labels: Sequence[str], positive: Optional[Sequence[str]] = None, polarity_file=None) -> list:
    """The polarity a run uses: --polarity-file when given, else class_polarity with --positive-classes."""
    if polarity_file:
        return read_polarity_file(polarity_file, labels)
    return class_polarity(labels, positive)

