"""tools/run_splits.py: split generation, aggregation, and the protocol end to end through main.py."""
import json
import math

import pytest

from datasets.annotations import EK6_CLASSES, load_annotation
from fixtures_data import make_video_root
from tools import run_splits

TINY = ["--preset", "cten_demo", "--epochs", "1", "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16",
        "--batch-size", "4", "--workers", "0", "--val-fraction", "0", "--select", "last", "--modalities", "v", "--no-inter",
        "--gt-segments", ""]  # no key spans: the preset names the demo set's


def test_prepare_splits(tmp_path):
    ann = make_video_root(tmp_path / "root", classes=EK6_CLASSES, train_per_class=1, test_per_class=3, n_frames=2,
                          audio=False, srt=False)
    splits = run_splits.prepare_splits(ann, 3, None, 7, tmp_path / "splits")
    assert [s["source"] for s in splits] == ["released", "generated", "generated"]
    assert splits[0]["annotation"] == str(ann.resolve()) and splits[0]["seed"] is None
    assert [s["seed"] for s in splits[1:]] == [7, 8] and splits[1]["ratio"] == "1:1"  # Ekman-6's protocol ratio
    drawn = [load_annotation(s["annotation"]) for s in splits[1:]]
    for d in drawn:
        assert sum(e["subset"] == "training" for e in d["database"].values()) == 12  # 2 of each class's 4
        assert d["database"].keys() == load_annotation(ann)["database"].keys()
    assert drawn[0]["database"] != drawn[1]["database"]
    assert [s["source"] for s in run_splits.prepare_splits(ann, 2, "3:1", 0, tmp_path / "s2", released=False)] == \
        ["generated", "generated"]
    with pytest.raises(ValueError, match="no protocol ratio known.*--ratio"):
        run_splits.prepare_splits(make_video_root(tmp_path / "other", classes=("a", "b"), n_frames=1, audio=False,
                                                  srt=False), 2, None, 0, tmp_path / "s3")


def test_aggregate():
    runs = [{"results": {"acc": 0.5, "mean_class_acc": 0.4, "polarity_acc": 0.7,
                         "per_class_acc": {"x": 1.0, "y": 0.0}}},
            {"results": {"acc": 0.7, "mean_class_acc": 0.6, "polarity_acc": 0.9,
                         "per_class_acc": {"x": 0.5, "y": 0.5}}},
            {"results": None}]
    s = run_splits.aggregate(runs)
    assert s["n_finished"] == 2 and s["n_splits"] == 3
    assert s["acc"]["mean"] == pytest.approx(0.6) and s["acc"]["std"] == pytest.approx(math.sqrt(0.02))
    assert s["per_class_acc"]["x"] == {"mean": pytest.approx(0.75), "std": pytest.approx(math.sqrt(0.125))}
    assert run_splits.mean_std([0.3]) == (0.3, None)


def test_flags_set_per_split_are_refused():
    with pytest.raises(SystemExit):
        run_splits.parse_args(["--annotation", "a.json", "--out", "o", "--", "--name", "x"])


def test_two_splits_end_to_end(tmp_path, capsys):
    root = tmp_path / "root"
    ann = make_video_root(root, classes=EK6_CLASSES, train_per_class=1, test_per_class=1, n_frames=4, audio=False,
                          srt=False)
    out = tmp_path / "out"
    argv = ["--annotation", str(ann), "--n", "2", "--out", str(out), "--", *TINY, "--root", str(root)]
    assert run_splits.main(argv) == 0
    report = json.loads((out / "summary.json").read_text())
    runs = report["runs"]
    assert [r["split"] for r in runs] == [1, 2] and [r["status"] for r in runs] == ["done", "done"]
    assert runs[1]["annotation"] == str((out / "splits" / "split02.json").resolve()) and runs[1]["seed"] == 0
    accs = [json.loads((out / "runs" / f"split0{k}" / "results.json").read_text())["acc"] for k in (1, 2)]
    assert [r["results"]["acc"] for r in runs] == accs
    assert report["summary"]["acc"]["mean"] == pytest.approx(sum(accs) / 2)
    assert report["summary"]["acc"]["std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
    assert list(report["summary"]["per_class_acc"]) == list(EK6_CLASSES)
    assert "NOT the paper's unpublished splits" in report["protocol"]
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "+-" in printed and "generated" in printed
    # finished splits are reused, not run again
    assert run_splits.main(argv) == 0
    assert [r["status"] for r in json.loads((out / "summary.json").read_text())["runs"]] == ["reused", "reused"]
    # a failing split stops the protocol and shows main.py's error
    bad = ["--annotation", str(ann), "--n", "2", "--out", str(tmp_path / "bad"), "--", *TINY,
           "--root", str(tmp_path / "nowhere")]
    assert run_splits.main(bad) == 1
    assert "failed (exit 2)" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "bad" / "summary.json").read_text())["runs"]) == 1
