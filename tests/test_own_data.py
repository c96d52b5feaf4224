"""CAER and users' own data: neutral classes (no polarity), --polarity-file, CAER's layout, one epoch on 3 classes."""
import json

import pytest
import torch

from core.losses import pcce
from core.metrics import polarity_accuracy
from core.run import main as run_main
from datasets.annotations import class_polarity, read_polarity_file
from datasets.errors import DataError
from fixtures_data import make_video_root, write_video_only
from tools import caer_lists
from tools.preprocess.cli import main as preprocess_main

CLASSES = ("Happy", "Neutral", "Sad")
MBT_TINY = ["--snippet-duration", "4", "--sample-size", "32", "--mbt-depth", "2", "--mbt-width", "32", "--mbt-heads",
            "2", "--n-bottleneck", "4", "--fusion-layer", "1", "--seq-len", "2", "--eval-seq-len", "2"]


def test_caer_classes_are_known_and_neutral_has_no_polarity():
    caer = ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
    assert class_polarity(caer) == [-1, -1, -1, 1, 0, -1, 1]
    assert class_polarity(["a", "b", "c"], positive=["a"], neutral=["c"]) == [1, -1, 0]


@pytest.mark.parametrize("name,text", [
    ("p.json", json.dumps({"happy": "positive", "Neutral": "neutral", "Sad": "negative"})),
    ("p.csv", "class,polarity\nHappy,positive\nNeutral,neutral\nSad,negative\n"),
])
def test_polarity_file_json_or_csv(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    assert read_polarity_file(tmp_path / name, CLASSES) == [1, 0, -1]


def test_polarity_file_missing_a_class_names_the_file_and_the_class(tmp_path):
    (tmp_path / "p.csv").write_text("Happy,positive\nSad,negative\n")
    with pytest.raises(DataError, match=r"(?s)p\.csv.*\['Neutral'\] of the annotation have no polarity"):
        read_polarity_file(tmp_path / "p.csv", CLASSES)
    (tmp_path / "q.json").write_text(json.dumps({"Happy": "positive", "Neutral": "calm", "Sad": "negative"}))
    with pytest.raises(DataError, match="unknown polarity words"):
        read_polarity_file(tmp_path / "q.json", CLASSES)


def test_pcce_and_polarity_accuracy_leave_neutral_out():
    polarity = torch.tensor([1, 0, -1])
    logits = torch.tensor([[0.0, 0.0, 3.0], [3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])  # predicts Sad, Happy, Neutral
    labels = torch.tensor([0, 1, 2])  # Happy (flip: x 1.5), Neutral (never a flip), Sad (neutral pred: no flip)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.isclose(pcce(logits, labels, polarity, 0.5), (ce * torch.tensor([1.5, 1.0, 1.0])).mean())
    # polarity accuracy over the two polar samples: Happy -> Sad wrong, Sad -> Neutral wrong; then one right
    assert polarity_accuracy(logits, labels, polarity) == 0.0
    assert polarity_accuracy(torch.tensor([[3.0, 0, 0], [0, 0, 3.0], [0, 0, 3.0]]), labels, polarity) == 1.0


def test_caer_layout_becomes_split_lists(tmp_path):
    src = tmp_path / "CAER"
    for split, n in (("train", 2), ("validation", 1), ("test", 1)):
        for cls in ("Happy", "Neutral"):
            (src / split / cls).mkdir(parents=True)
            for k in range(n):
                (src / split / cls / f"{k + 1:04d}.avi").write_bytes(b"x")
    out = tmp_path / "lists"
    assert caer_lists.main(["--src", str(src), "--out", str(out)]) == 0
    assert (out / "classInd.txt").read_text() == "1 Happy\n2 Neutral\n"
    train = (out / "trainlist01.txt").read_text().splitlines()
    assert len(train) == 6 and "Happy/validation_Happy_0001 1" in train and "Neutral/train_Neutral_0002 2" in train
    assert (out / "testlist01.txt").read_text().splitlines() == ["Happy/test_Happy_0001", "Neutral/test_Neutral_0001"]
    assert ((out / "videos" / "Happy" / "test_Happy_0001.avi").resolve()
            == (src / "test" / "Happy" / "0001.avi").resolve())
    skipped = tmp_path / "skip"
    caer_lists.main(["--src", str(src), "--out", str(skipped), "--validation", "skip"])
    assert len((skipped / "trainlist01.txt").read_text().splitlines()) == 4
    assert caer_lists.main(["--src", str(tmp_path / "nothing"), "--out", str(out)]) == 2


CAER_CLASSES = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")


def test_caer_published_layout_gives_a_json_with_every_clip(tmp_path, capsys):
    """CAER numbers clips from 0001 in every class folder of every split: 35 clips of 7 classes -> 35 JSON entries
    with their own labels (ids carry split and class; issue 19: 5 entries, all 'Surprise')."""
    src = tmp_path / "CAER"
    clip = write_video_only(tmp_path / "clip.avi", n=2)
    for split, n in (("train", 3), ("validation", 1), ("test", 1)):
        for cls in CAER_CLASSES:
            (src / split / cls).mkdir(parents=True)
            for k in range(n):
                (src / split / cls / f"{k + 1:04d}.avi").write_bytes(clip.read_bytes())
    lists = tmp_path / "lists"
    assert caer_lists.main(["--src", str(src), "--out", str(lists)]) == 0
    assert preprocess_main(["--src", str(lists / "videos"), "--dst", str(tmp_path / "root"), "--split-lists",
                            str(lists), "--json", "caer.json", "--workers", "1", "--asr", "none"]) == 0
    assert "listed twice" not in capsys.readouterr().out
    data = json.loads((tmp_path / "root" / "caer.json").read_text())
    assert data["labels"] == list(CAER_CLASSES)
    db = data["database"]
    assert len(db) == 35
    for cls in CAER_CLASSES:
        assert sorted(v for v, e in db.items() if e["annotations"]["label"] == cls) == sorted(
            [f"train_{cls}_{k:04d}" for k in (1, 2, 3)] + [f"validation_{cls}_0001", f"test_{cls}_0001"])
    assert sum(e["subset"] == "validation" for e in db.values()) == 7  # the official name of the test split


def test_preprocess_refuses_an_id_listed_under_two_classes(tmp_path, capsys):
    """The old CAER lists (<split>_<NNNN> under every class): preprocess stops before any work instead of keeping the
    last entry; --duplicate-ids keep-last is the official VE-8 JSON's behaviour, named in the message."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Happy\n2 Sad\n")
    (lists / "trainlist01.txt").write_text("Happy/train_0001 1\nSad/train_0001 2\n")
    (lists / "testlist01.txt").write_text("Happy/test_0001\n")
    for cls in ("Happy", "Sad"):
        (tmp_path / "videos" / cls).mkdir(parents=True)
        write_video_only(tmp_path / "videos" / cls / "train_0001.avi")
    argv = ["--src", str(tmp_path / "videos"), "--dst", str(tmp_path / "root"), "--split-lists", str(lists),
            "--json", "x.json", "--workers", "1", "--asr", "none"]
    assert preprocess_main(argv) == 2
    err = capsys.readouterr().err
    assert "train_0001 (Happy in trainlist01.txt, Sad in trainlist01.txt)" in err and "--duplicate-ids keep-last" in err
    assert not (tmp_path / "root" / "x.json").exists()
    assert preprocess_main([*argv, "--duplicate-ids", "keep-last", "--keep-going"]) == 0
    db = json.loads((tmp_path / "root" / "x.json").read_text())["database"]
    assert db["train_0001"]["annotations"]["label"] == "Sad"


def test_three_classes_with_a_neutral_one_train_one_epoch(tmp_path, capsys):
    ann = make_video_root(tmp_path / "data", classes=CLASSES, train_per_class=2, test_per_class=1, n_frames=8,
                          seconds=1.0)
    (tmp_path / "polarity.json").write_text(json.dumps({"Happy": "positive", "Neutral": "neutral", "Sad": "negative"}))
    argv = ["--preset", "mbt_demo", "--method", "mbt", "--root", str(tmp_path / "data"), "--annotation", str(ann),
            *MBT_TINY, "--batch-size", "2", "--workers", "0", "--no-progress", "--epochs", "1", "--loss", "pcce",
            "--val-fraction", "0", "--select", "last", "--output", str(tmp_path / "runs"), "--name", "own"]
    assert run_main([*argv, "--polarity-file", str(tmp_path / "polarity.json")]) == 0
    result = json.loads((tmp_path / "runs" / "own" / "results.json").read_text())
    assert result["n_test_videos"] == 3 and len(result["confusion"]) == 3
    preds = json.loads((tmp_path / "runs" / "own" / "predictions.json").read_text())
    sign = {"Happy": 1, "Neutral": 0, "Sad": -1}
    polar = [p for p in preds if p["label"] != "Neutral"]
    assert len(polar) == 2
    expected = sum(sign[p["pred"]] == sign[p["label"]] for p in polar) / len(polar)
    assert result["polarity_acc"] == pytest.approx(expected)  # the neutral test video is left out
    # without a polarity for every class the run stops, naming the file
    (tmp_path / "partial.csv").write_text("Happy,positive\nSad,negative\n")
    assert run_main([*argv, "--name", "partial", "--polarity-file", str(tmp_path / "partial.csv")]) == 2
    assert "partial.csv" in capsys.readouterr().err
