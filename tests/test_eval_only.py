"""--eval-only with nothing but --checkpoint (data, annotation, polarity file and gt segments from the checkpoint's
config, each overridable), evaluations never overwritten silently, and a failed start that leaves nothing behind."""
import json

import pytest
import torch

from core.run import main as run_main
from fixtures_data import make_video_root

TINY = ["--preset", "cten_demo", "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16", "--batch-size",
        "2", "--workers", "0", "--val-fraction", "0", "--select", "last", "--no-progress", "--epochs", "1"]
QUIET = ["--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run on classes no built-in polarity knows (so evaluation needs the run's --polarity-file), with
    --gt-segments; first a start that fails after the run folder was claimed (a missing polarity file)."""
    base = tmp_path_factory.mktemp("evalonly")
    ann = make_video_root(base / "data", classes=("Calm", "Storm"), train_per_class=2, test_per_class=1, n_frames=8,
                          seconds=1.0)
    (base / "polarity.json").write_text(json.dumps({"Calm": "positive", "Storm": "negative"}))
    test_ids = [v for v, e in json.loads(ann.read_text())["database"].items() if e["subset"] == "validation"]
    (base / "gt.json").write_text(json.dumps({v: [[0.0, 0.5]] for v in test_ids}))
    argv = [*TINY, "--root", str(base / "data"), "--annotation", str(ann), "--output", str(base / "runs"), "--name",
            "run", "--gt-segments", str(base / "gt.json")]
    assert run_main([*argv, "--polarity-file", str(base / "nope.json")]) == 2
    assert not (base / "runs" / "run").exists()  # issue 19: runs/run/tb was left and blocked the rerun
    assert run_main([*argv, "--polarity-file", str(base / "polarity.json")]) == 0  # no --resume / --overwrite needed
    return base


def test_eval_only_needs_only_the_checkpoint_and_never_overwrites(trained, capsys):
    run = trained / "runs" / "run"
    trained_result = json.loads((run / "results.json").read_text())
    assert "detection" in trained_result
    capsys.readouterr()
    assert run_main(["--eval-only", "--checkpoint", str(run), *QUIET]) == 0  # a run folder: its best.pth
    out = capsys.readouterr().out
    assert "root, annotation, annotation_name, polarity_file, positive_classes, gt_segments from the checkpoint" in out
    first = json.loads((run / "eval_best" / "results.json").read_text())
    assert first["acc"] == trained_result["acc"] and first["confusion"] == trained_result["confusion"]
    assert first["polarity_acc"] == trained_result["polarity_acc"]
    assert first["detection"] == trained_result["detection"]  # the recorded --gt-segments
    # a second evaluation goes to a new folder, the first is untouched
    before = (run / "eval_best" / "results.json").read_bytes()
    assert run_main(["--eval-only", "--checkpoint", str(run / "best.pth"), *QUIET]) == 0
    assert (run / "eval_best_2" / "results.json").is_file()
    assert (run / "eval_best" / "results.json").read_bytes() == before
    # a named folder holding an evaluation is replaced only with --overwrite
    named = ["--eval-only", "--checkpoint", str(run), "--output", str(trained / "evals"), "--name", "e", *QUIET]
    assert run_main(named) == 0
    assert run_main(named) == 2
    assert "already holds an earlier evaluation" in capsys.readouterr().err
    assert run_main([*named, "--overwrite"]) == 0


def test_eval_only_flags_override_the_checkpoint(trained, capsys, tmp_path):
    run = trained / "runs" / "run"
    # no gt segments recorded: said, not silently skipped; --gt-segments given: scored
    state = torch.load(run / "best.pth", weights_only=False)
    state["config"]["gt_segments"] = None
    torch.save(state, tmp_path / "nogt.pth")
    capsys.readouterr()
    assert run_main(["--eval-only", "--checkpoint", str(tmp_path / "nogt.pth"), *QUIET]) == 0
    assert "detection not scored" in capsys.readouterr().out
    assert "detection" not in json.loads((tmp_path / "eval_nogt" / "results.json").read_text())
    assert run_main(["--eval-only", "--checkpoint", str(tmp_path / "nogt.pth"), "--gt-segments",
                     str(trained / "gt.json"), *QUIET]) == 0
    assert "detection" in json.loads((tmp_path / "eval_nogt_2" / "results.json").read_text())
    # a root that is not there (given, or recorded and moved) stops before any folder is made
    assert run_main(["--eval-only", "--checkpoint", str(tmp_path / "nogt.pth"), "--root", str(tmp_path / "moved"),
                     *QUIET]) == 2
    assert "dataset root not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_nogt", "eval_nogt_2", "nogt.pth"]
