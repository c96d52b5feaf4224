import json
from collections import Counter

import pytest

from datasets.annotations import (annotation_from_split_lists, carve_validation, class_polarity, load_annotation, make_splits, parse_ratio, read_split_list, subset_entries)
from datasets.errors import DataError
from tools import make_splits as make_splits_tool

VE8_TRAIN = [74, 64, 75, 113, 114, 64, 166, 61]
VE8_TEST = [27, 36, 39, 54, 66, 36, 70, 39]
DUP = "3527012618_7ceb8fb27b_700"


@pytest.fixture(scope="module")
def ve8(official_dir):
    return load_annotation(official_dir / "ve8" / "ve8_01.json")


@pytest.fixture(scope="module")
def ek6(official_dir):
    return load_annotation(official_dir / "ek6" / "ek6_01.json")


def per_class(data, subset):
    counts = Counter(cls for _, cls in subset_entries(data, subset))
    return [counts[c] for c in data["labels"]]


def test_official_counts(ve8, ek6):
    assert ve8["labels"] == ["Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust"]
    assert ek6["labels"] == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert len(subset_entries(ve8, "training")) == 731 and len(subset_entries(ve8, "validation")) == 367
    assert len(subset_entries(ek6, "training")) == 819 and len(subset_entries(ek6, "validation")) == 818
    assert per_class(ve8, "training") == VE8_TRAIN
    assert per_class(ve8, "validation") == VE8_TEST
    assert ve8["database"][DUP] == {"subset": "training", "annotations": {"label": "Fear"}}


@pytest.mark.parametrize("name", ["ve8", "ek6"])
def test_json_reproduced_from_split_lists(official_dir, name, recwarn):
    d = official_dir / name
    built = annotation_from_split_lists(d / "classInd.txt", d / "trainlist01.txt", d / "testlist01.txt")
    assert json.dumps(built) == (d / f"{name}_01.json").read_text()
    dup_warnings = [str(w.message) for w in recwarn]
    if name == "ve8":
        assert len(dup_warnings) == 1 and DUP in dup_warnings[0] and "Disgust (training) then Fear" in dup_warnings[0]
    else:
        assert dup_warnings == []


def test_split_list_with_and_without_label_column(tmp_path):
    (tmp_path / "l.txt").write_text("Joy/a 2\r\nAnger/b\n\n")
    assert read_split_list(tmp_path / "l.txt", ["Anger", "Joy"]) == [("a", "Joy"), ("b", "Anger")]
    (tmp_path / "bad_index.txt").write_text("Joy/a 1\n")
    with pytest.raises(DataError, match=r"bad_index.txt.*line 1.*does not match class 'Joy'"):
        read_split_list(tmp_path / "bad_index.txt", ["Anger", "Joy"])
    (tmp_path / "bad_class.txt").write_text("Joy/a\nCalm/b\n")
    with pytest.raises(DataError, match=r"bad_class.txt.*line 2: unknown class 'Calm'"):
        read_split_list(tmp_path / "bad_class.txt", ["Anger", "Joy"])


def write(tmp_path, content, name="a.json"):
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


def test_bad_annotation_files(tmp_path):
    with pytest.raises(DataError, match=r"notjson.json: not a JSON file"):
        load_annotation(write(tmp_path, "Anger/a 1\n", "notjson.json"))
    with pytest.raises(DataError, match=r"expected an object"):
        load_annotation(write(tmp_path, [1, 2]))
    with pytest.raises(DataError, match=r"entry 'v1' must be"):
        load_annotation(write(tmp_path, {"labels": ["A"], "database": {"v1": {"subset": "training"}}}))
    with pytest.raises(DataError, match=r"entry 'v1' has subset 'test'"):
        load_annotation(write(tmp_path, {"labels": ["A"], "database": {
            "v1": {"subset": "test", "annotations": {"label": "A"}}}}))
    with pytest.raises(DataError, match=r"a.json: entry 'v2' has label 'Calm', not one of \['A'\]"):
        load_annotation(write(tmp_path, {"labels": ["A"], "database": {
            "v1": {"subset": "training", "annotations": {"label": "A"}},
            "v2": {"subset": "validation", "annotations": {"label": "Calm"}}}}))
    with pytest.raises(DataError, match="annotation file not found"):
        load_annotation(tmp_path / "absent.json")


def test_carve_validation(ve8):
    val = carve_validation(ve8, 0.1, seed=0)
    assert val == carve_validation(ve8, 0.1, seed=0)
    assert val != carve_validation(ve8, 0.1, seed=1)
    test_ids = {v for v, _ in subset_entries(ve8, "validation")}
    assert not set(val) & test_ids
    counts = Counter(ve8["database"][v]["annotations"]["label"] for v in val)
    assert [counts[c] for c in ve8["labels"]] == [round(0.1 * n) for n in VE8_TRAIN]
    assert carve_validation(ve8, 0.0) == []
    with pytest.raises(ValueError):
        carve_validation(ve8, 1.0)


def test_make_splits_stratified_and_recorded(ve8, ek6):
    splits = make_splits(ve8, n=3, ratio="2:1", seed=5, source="ve8_01.json")
    assert [s["split_info"] for s in splits] == [
        {"seed": 5 + k, "ratio": "2:1", "index": k + 1, "source": "ve8_01.json"} for k in range(3)]
    totals = [a + b for a, b in zip(VE8_TRAIN, VE8_TEST)]
    for s in splits:
        assert set(s["database"]) == set(ve8["database"])
        assert per_class(s, "training") == [round(n * 2 / 3) for n in totals]
    assert splits[0]["database"] != splits[1]["database"]
    assert make_splits(ve8, n=1, seed=6)[0]["database"] == splits[1]["database"]  # one split from its own record
    half = make_splits(ek6, n=1, ratio="1:1")[0]
    train = per_class(half, "training")
    assert all(abs(t - (t + v) / 2) <= 0.5 for t, v in zip(train, per_class(half, "validation")))
    with pytest.raises(ValueError, match="ratio"):
        parse_ratio("2-1")


def test_make_splits_tool(official_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        make_splits_tool.main(["--help"])
    assert e.value.code == 0 and "--ratio" in capsys.readouterr().out
    paths = make_splits_tool.main(["--annotation", str(official_dir / "ek6" / "ek6_01.json"),
                                   "--n", "2", "--ratio", "1:1", "--seed", "3", "--out", str(tmp_path)])
    assert [p.name for p in paths] == ["ek6_gen01.json", "ek6_gen02.json"]
    data = load_annotation(paths[1])
    assert data["split_info"]["seed"] == 4 and len(data["database"]) == 1637
    with pytest.raises(SystemExit, match="not a JSON file"):
        make_splits_tool.main(["--annotation", str(official_dir / "ek6" / "classInd.txt"),
                               "--out", str(tmp_path)])


def test_class_polarity():
    ve8 = ["Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust"]
    assert class_polarity(ve8) == [-1, 1, -1, -1, 1, -1, 1, 1]
    assert class_polarity(["anger", "disgust", "fear", "joy", "sadness", "surprise"]) == [-1, -1, -1, 1, -1, 1]
    assert class_polarity(["Surprise", "JOY", "Fear", "Anger", "Sadness", "Disgust"]) == [1, 1, -1, -1, -1, -1]
    with pytest.raises(ValueError, match="--polarity-file FILE or --positive-classes"):
        class_polarity(["calm", "tense"])
    assert class_polarity(["calm", "tense"], positive=["Calm"]) == [1, -1]
    with pytest.raises(ValueError, match="not among the labels"):
        class_polarity(["calm", "tense"], positive=["happy"])
