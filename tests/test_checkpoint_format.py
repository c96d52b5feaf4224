"""Checkpoints of the earlier format (no 'format' field: CTEN's streams concatenated [audio, visual]) evaluate as
they were trained after the switch to the release's [visual, audio] order, and are refused by --resume."""
import json

import pytest
import torch

from core.run import main as run_main
from fixtures_data import make_video_root

TINY = ["--preset", "cten_demo", "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16", "--batch-size",
        "2", "--workers", "0", "--val-fraction", "0", "--select", "last", "--no-progress", "--epochs", "1",
        "--temporal-attention", "joint", "--positive-classes", "Joy"]


def as_format_1(state: dict) -> dict:
    """What the earlier code stored for the same trained function: the 2D-wide inputs laid out [audio, visual]."""
    old = {k: v for k, v in state.items() if k != "format"}
    old["model"] = dict(state["model"])
    for key in ("classifier.weight", "attention.w2.weight"):
        visual, audio = old["model"][key].chunk(2, dim=1)
        old["model"][key] = torch.cat([audio, visual], dim=1)
    return old


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("fmt")
    ann = make_video_root(base / "data", train_per_class=2, test_per_class=1, n_frames=8, seconds=1.0)
    assert run_main([*TINY, "--root", str(base / "data"), "--annotation", str(ann), "--output", str(base / "runs"),
                     "--name", "run"]) == 0
    return base / "runs" / "run"


def outputs(folder):
    """Per video: class probabilities and per-segment scores as predictions.json stores them (rounded to 1e-4)."""
    return {p["video_id"]: p["probs"] + sum(p["seg_scores"], [])
            for p in json.loads((folder / "predictions.json").read_text())}


def test_a_format_1_checkpoint_evaluates_as_it_was_trained(run):
    state = torch.load(run / "best.pth", weights_only=False)
    assert state["format"] == 2
    torch.save(as_format_1(state), run / "old.pth")
    assert run_main(["--eval-only", "--checkpoint", str(run / "best.pth"), "--workers", "0", "--no-progress"]) == 0
    assert run_main(["--eval-only", "--checkpoint", str(run / "old.pth"), "--workers", "0", "--no-progress"]) == 0
    new, old = outputs(run / "eval_best"), outputs(run / "eval_old")
    assert new.keys() == old.keys() and new
    for v in new:
        assert new[v] == pytest.approx(old[v], abs=2e-4)


def test_resume_refuses_a_format_1_last_checkpoint(run, capsys):
    state = torch.load(run / "last.pth", weights_only=False)
    torch.save(as_format_1(state), run / "last.pth")
    assert run_main([*TINY, "--root", str(run.parent.parent / "data"), "--output", str(run.parent), "--name", "run",
                     "--annotation", str(run.parent.parent / "data" / "ann.json"), "--resume", "--epochs", "2",
                     "--resume-override"]) == 2
    assert "older version" in capsys.readouterr().err
