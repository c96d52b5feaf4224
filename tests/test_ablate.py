"""tools/ablate.py: variants x seeds through main.py, mean and std per variant, the Markdown table."""
import json
import math

import pytest

from datasets.annotations import EK6_CLASSES
from fixtures_data import make_video_root
from test_run_splits import TINY
from tools import ablate


def test_parse_variant():
    assert ablate.parse_variant("full=") == ("full", [])
    assert ablate.parse_variant("visual=--modalities v --no-inter") == ("visual", ["--modalities", "v", "--no-inter"])
    for bad in ("no_equals", "=--no-erase", "a b=--x"):
        with pytest.raises(Exception, match="NAME=FLAGS"):
            ablate.parse_variant(bad)


def test_flags_set_per_run_and_repeated_names_are_refused():
    for argv in (["--out", "o", "--variant", "a=--seed 3", "--", "--preset", "cten_demo"],
                 ["--out", "o", "--variant", "a=", "--", "--name", "x"],
                 ["--out", "o", "--variant", "a=", "--variant", "a=--no-erase"]):
        with pytest.raises(SystemExit):
            ablate.parse_args(argv)


def test_summarise_mean_std_per_variant():
    det = lambda m3: {"mAP@0.3": m3, "mAP@0.5": m3 / 2}  # noqa: E731
    runs = [{"variant": "full", "metrics": ablate.run_metrics(
                {"acc": a, "detection": det(m), "train_history": [{"empty_key_views": 0.5}, {"empty_key_views": e}],
                 "detection_baselines": {"whole_clip": det(0.2)}}, (0.3, 0.5))}
            for a, m, e in ((0.5, 0.6, 0.0), (0.7, 0.8, 0.1))]
    runs.append({"variant": "v", "metrics": ablate.run_metrics({"acc": 0.4}, (0.3, 0.5))})
    runs.append({"variant": "v", "metrics": None})  # a failed run is not averaged
    s = ablate.summarise(runs, (0.3, 0.5))
    assert s["full"]["acc"]["mean"] == pytest.approx(0.6) and s["full"]["acc"]["std"] == pytest.approx(math.sqrt(0.02))
    assert s["full"]["mAP@0.5"]["mean"] == pytest.approx(0.35)
    assert s["full"]["empty_key_views"]["mean"] == pytest.approx(0.05)  # the last epoch, not the first
    assert s["v"]["n_runs"] == 1 and s["v"]["acc"] == {"mean": 0.4, "std": None, "n": 1}
    assert s["v"]["mAP@0.3"]["mean"] is None
    table = ablate.format_table([("full", []), ("v", ["--modalities", "v"])], s, (0.3, 0.5))
    assert "| full | `(as given)` | 2 | 60.0 ± 14.1 | 70.0 ± 14.1 | 35.0 ± 7.1 | 5.0 ± 7.1 |" in table
    assert "| v | `--modalities v` | 1 | 40.0 | - | - | - |" in table
    assert "whole clip 20.0 ± 0.0 / 10.0 ± 0.0" in table


def test_ablation_end_to_end(tmp_path, capsys):
    root = tmp_path / "root"
    make_video_root(root, classes=EK6_CLASSES, train_per_class=1, test_per_class=1, n_frames=4, audio=False, srt=False)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--seeds", "0", "1", "--variant", "ref=", "--variant", "lr=--lr 0.1",
            "--", *TINY, "--root", str(root), "--annotation-name", "ann.json"]
    assert ablate.main(argv) == 0
    report = json.loads((out / "summary.json").read_text())
    assert [(r["variant"], r["seed"], r["status"]) for r in report["runs"]] == \
        [("ref", 0, "done"), ("ref", 1, "done"), ("lr", 0, "done"), ("lr", 1, "done")]
    for r in report["runs"]:
        config = json.loads((out / "runs" / f"{r['variant']}_seed{r['seed']}" / "config.json").read_text())
        assert config["seed"] == r["seed"] and config["lr"] == (0.1 if r["variant"] == "lr" else 1e-3)
        assert r["metrics"]["acc"] == json.loads((out / "runs" / f"{r['variant']}_seed{r['seed']}"
                                                  / "results.json").read_text())["acc"]
    accs = [r["metrics"]["acc"] for r in report["runs"][:2]]
    assert report["summary"]["ref"]["acc"]["mean"] == pytest.approx(sum(accs) / 2)
    assert "| ref |" in capsys.readouterr().out
    assert ablate.main(argv) == 0  # finished runs are reused
    assert {r["status"] for r in json.loads((out / "summary.json").read_text())["runs"]} == {"reused"}
