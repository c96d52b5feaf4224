"""main.py's run (core/run.py `main`, in-process) end to end on a tiny dataset: training, resume equivalence,
--eval-only, torchrun with gloo, and the CTEN three-view step on a fixed batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import opts
from core import methods
from core.data import build_datasets
from core.ema import ModelEMA
from core.methods.base import StageContext
from core.run import main as run_main
from datasets.video_emotion import collate_samples
from core.engine import NonFiniteLoss, TrainContext, train_one_epoch
from core.log import RunLogger
from fixtures_data import make_video_root

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "cten_demo", "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16",
        "--batch-size", "2", "--workers", "0", "--val-fraction", "0.25", "--select", "val", "--lr-schedule", "constant", "--no-progress", "--lr", "1e-3", "--positive-classes", "Joy"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    ann = make_video_root(root, classes=("Anger", "Joy"), train_per_class=4, test_per_class=2, n_frames=8, seconds=1.0)
    return root, ann


def argv(tiny_root, out, name, *extra):
    root, ann = tiny_root
    return [*TINY, "--root", str(root), "--annotation", str(ann), "--output", str(out), "--name", name, *extra]


def build(args, n_classes: int = 2):
    """The run's objects for a training step: datasets, the recipe's model (with its pretrained weights) and the
    last stage's Method."""
    recipe = methods.get(args.method)
    data = build_datasets(args, recipe)
    model = recipe.build_model(recipe.arch_of(args), n_classes)
    recipe.load_pretrained(model, args)
    method = recipe.stages(args)[-1].method(args, StageContext(torch.tensor([-1, 1]), data["train"]))
    return data, model, method


def test_fixed_batch_steps_lower_the_loss(tiny_root):
    """PyTorch's W1 init: on this 2-segment toy, cten_demo's W1 = I lets Adam's second step close every attention
    gate (ReLU output 0 in all segments), after which the loss stays flat (docs/cten_attention.md)."""
    torch.manual_seed(0)
    args = opts.parse_args(argv(tiny_root, "unused", "x", "--attention-w1-init", "default"))
    data, model, method = build(args)
    batch = collate_samples([data["train"][i] for i in range(4)])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss, logs = method.train_step(model, batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert {"loss_o", "loss_k", "loss_l", "keyframe_fraction"} <= logs.keys()
    assert losses[-1] < 0.7 * losses[0]
    assert all(p.grad is None for p in model.visual.parameters())  # the backbone stays frozen


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_root, tmp_path):
    assert run_main(argv(tiny_root, tmp_path, "full", "--epochs", "3")) == 0
    assert run_main(argv(tiny_root, tmp_path, "cut", "--epochs", "1")) == 0  # "killed" after one epoch
    # a shorter first run stands in for a killed one; resuming it with other epochs needs the override
    assert run_main(argv(tiny_root, tmp_path, "cut", "--epochs", "3", "--resume")) == 2
    assert run_main(argv(tiny_root, tmp_path, "cut", "--epochs", "3", "--resume", "--resume-override")) == 0
    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert config["epochs"] == 3 and config["resumed_with_changes"] == {"epochs": [1, 3]}
    full = torch.load(tmp_path / "full" / "last.pth", weights_only=False)
    cut = torch.load(tmp_path / "cut" / "last.pth", weights_only=False)
    assert full["epoch"] == cut["epoch"] == 2
    for key, value in full["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    assert json.loads((tmp_path / "full" / "results.json").read_text())["acc"] == \
        json.loads((tmp_path / "cut" / "results.json").read_text())["acc"]


def test_results_and_eval_only_agree(tiny_root, tmp_path):
    assert run_main(argv(tiny_root, tmp_path, "run", "--epochs", "1", "--vis-videos", "1")) == 0
    run = tmp_path / "run"
    result = json.loads((run / "results.json").read_text())
    history = result["train_history"]  # per epoch: the step's statistics, e.g. the erasing ones
    assert [h["epoch"] for h in history] == [0] and history[0]["empty_key_views"] == 0.0
    assert 0 < history[0]["keyframe_fraction"] < 1 and "val_acc" in history[0]
    assert result["n_test_videos"] == 4 and 0.0 <= result["acc"] <= 1.0
    assert "validation subset" in result["protocol"]["selection"] and len(result["confusion"]) == 2
    assert result["protocol"]["counts"] == {"train": 6, "val": 2, "test": 4} and result["protocol"]["select"] == "val"
    assert (run / "confusion.png").is_file() and len(list((run / "timelines").glob("*.png"))) == 1
    preds = json.loads((run / "predictions.json").read_text())
    assert sorted(p["video_id"] for p in preds) == ["anger_4", "anger_5", "joy_4", "joy_5"]
    assert all(p["segments"] and len(p["att_v"]) == 2 for p in preds)
    # --eval-only takes the architecture from the checkpoint even if the flags say otherwise
    assert run_main(argv(tiny_root, tmp_path, "eval", "--eval-only", "--checkpoint", str(run / "best.pth"),
                          "--no-intra")) == 0
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["acc"] == result["acc"] and again["confusion"] == result["confusion"]
    # a checkpoint written before recipes stored 'method', 'arch' and 'stage' restores from its config
    state = torch.load(run / "best.pth", weights_only=False)
    assert state["method"] == "cten" and state["arch"]["intra"] is True and state["stage"] == ""
    old = {k: v for k, v in state.items() if k not in ("method", "arch", "stage")}
    torch.save(old, tmp_path / "old.pth")
    assert run_main(argv(tiny_root, tmp_path, "old", "--eval-only", "--checkpoint", str(tmp_path / "old.pth"),
                         "--no-intra")) == 0
    assert json.loads((tmp_path / "old" / "results.json").read_text())["confusion"] == result["confusion"]


def test_run_directories_are_never_silently_reused(tiny_root, tmp_path, capsys):
    assert run_main(argv(tiny_root, tmp_path, "r", "--epochs", "1", "--lr", "1e-3")) == 0
    first = (tmp_path / "r" / "last.pth").read_bytes()
    assert run_main(argv(tiny_root, tmp_path, "r", "--epochs", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "r" / "last.pth").read_bytes() == first
    # --resume with an option that changes training is refused before anything is written
    assert run_main(argv(tiny_root, tmp_path, "r", "--epochs", "1", "--lr", "0.5", "--resume")) == 2
    err = capsys.readouterr().err
    assert "--lr 0.001 -> 0.5" in err and "--resume-override" in err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["lr"] == 1e-3
    # --eval-only writes beside the checkpoint, never into the training run's files
    results = (tmp_path / "r" / "results.json").read_text()
    root, ann = tiny_root
    assert run_main([*TINY, "--root", str(root), "--annotation", str(ann), "--eval-only", "--checkpoint",
                     str(tmp_path / "r" / "best.pth")]) == 0
    assert (tmp_path / "r" / "eval_best" / "results.json").is_file()
    assert (tmp_path / "r" / "results.json").read_text() == results
    assert run_main(argv(tiny_root, tmp_path, "r", "--eval-only", "--checkpoint", str(tmp_path / "r" / "best.pth"))) == 2
    # --overwrite replaces the run, TensorBoard events included
    events = list((tmp_path / "r" / "tb").iterdir())
    assert run_main(argv(tiny_root, tmp_path, "r", "--epochs", "1", "--overwrite")) == 0
    assert not any(e.exists() for e in events) and not (tmp_path / "r" / "eval_best").exists()
    issues = json.loads((tmp_path / "r" / "results.json").read_text())["data_issues"]
    assert set(issues) == {"train", "val", "test"} and issues["test"]["skipped_without_frames"] == 0


def test_eval_only_with_a_foreign_checkpoint_is_a_clear_error(tiny_root, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"nope": torch.zeros(1)}, "config": {}}, bad)
    assert run_main(argv(tiny_root, tmp_path, "e", "--eval-only", "--checkpoint", str(bad))) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "nope" in err
    bare = tmp_path / "bare.pth"  # a state_dict saved on its own
    torch.save({"head.weight": torch.zeros(2, 2)}, bare)
    assert run_main(argv(tiny_root, tmp_path, "e2", "--eval-only", "--checkpoint", str(bare))) == 2
    err = capsys.readouterr().err
    assert "not a best.pth" in err and str(bare) in err and "Traceback" not in err


def test_missing_frames_folder_is_a_clear_error(tmp_path, capsys):
    ann = make_video_root(tmp_path, classes=("Anger", "Joy"), train_per_class=2, test_per_class=1, n_frames=4)
    for jpg in (tmp_path / "imgs" / "Joy" / "joy_0").iterdir():
        jpg.unlink()
    (tmp_path / "imgs" / "Joy" / "joy_0").rmdir()
    code = run_main([*TINY, "--root", str(tmp_path), "--annotation", str(ann), "--output", str(tmp_path / "o"),
                      "--epochs", "1"])
    assert code == 2 and "joy_0" in capsys.readouterr().err


class _NanMethod:
    curve_names = ()

    def train_step(self, model, batch, epoch):
        return model(batch["x"]).sum() * float("nan"), {}


def test_non_finite_loss_stops_with_a_message(tmp_path):
    ctx = TrainContext(device=torch.device("cpu"), logger=RunLogger(tmp_path, enabled=False), progress=False)
    model = torch.nn.Linear(2, 1)
    loader = [{"x": torch.ones(1, 2), "video_id": ["v0"]}]
    with pytest.raises(NonFiniteLoss, match="resume from the last checkpoint"):
        train_one_epoch(model, _NanMethod(), loader, torch.optim.SGD(model.parameters(), lr=0.1), ctx, 0)


def test_two_processes_with_gloo(tiny_root, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "main.py",
           *argv(tiny_root, tmp_path, "ddp", "--epochs", "1", "--device", "cpu")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = json.loads((tmp_path / "ddp" / "predictions.json").read_text())
    assert sorted(p["video_id"] for p in preds) == ["anger_4", "anger_5", "joy_4", "joy_5"]  # gathered, no repeats
    assert torch.load(tmp_path / "ddp" / "last.pth", weights_only=False)["epoch"] == 0


def test_training_from_the_feature_cache(tiny_root, tmp_path):
    root, ann = tiny_root
    cache = tmp_path / "cache"
    extract = [sys.executable, "tools/extract_features.py", "--root", str(root), "--annotation", str(ann),
               "--out", str(cache), "--visual-depth", "10", "--visual-input", "kinetics400", "--snippet-duration", "2",
               "--sample-size", "16", "--stride", "2", "--crops", "crops", "--workers", "0", "--no-progress"]
    proc = subprocess.run(extract, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = str(cache / "backbone_random_init.pth")
    cached = argv(tiny_root, tmp_path, "cached", "--epochs", "1", "--feature-cache", str(cache),
                  "--visual-weights", weights)
    # one training batch from the cache carries features, not frames, and the CTEN step runs its erased views on it
    args = opts.parse_args(cached)
    data, model, method = build(args)
    batch = collate_samples([data["train"][i] for i in range(2)])
    assert "video" not in batch and batch["visual_feats"].shape == (2, 2, 512)
    assert batch["grid_feats"].shape[:2] == batch["grid_starts"].shape
    loss, logs = method.train_step(model, batch, 0)
    assert torch.isfinite(loss) and "loss_k" in logs
    assert run_main(cached) == 0
    assert json.loads((tmp_path / "cached" / "results.json").read_text())["n_test_videos"] == 4
    # a cache built for another backbone is refused with the field named
    wrong = argv(tiny_root, tmp_path, "wrong", "--epochs", "1", "--feature-cache", str(cache), "--visual-weights",
                 weights, "--snippet-duration", "4")
    assert run_main(wrong) == 2


MBT_TINY = ["--snippet-duration", "4", "--sample-size", "32", "--mbt-depth", "2", "--mbt-width", "32", "--mbt-heads",
            "2", "--n-bottleneck", "4", "--fusion-layer", "1"]


def test_mbt_steps_on_a_fixed_batch_lower_the_loss_and_the_ema_follows(tiny_root):
    torch.manual_seed(0)
    args = opts.parse_args(argv(tiny_root, "unused", "x", "--method", "mbt", *MBT_TINY, "--preset", "mbt_demo"))
    data, model, method = build(args)
    ema = ModelEMA(model, decay=0.5, warmup=0.0)
    batch = collate_samples([data["train"][i] for i in range(4)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss, logs = method.train_step(model, batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0] and {"loss_v", "loss_a"} <= logs.keys()
    assert not torch.equal(ema.module.head_v.weight, model.head_v.weight)
    out = method.predict(ema.module, batch)
    assert out["degree_v"].shape == (4, 2) and torch.isfinite(out["logits"]).all()


def test_mart_runs_stage_one_then_stage_two(tiny_root, tmp_path):
    extra = ["--preset", "mart_demo", "--method", "mart", *MBT_TINY, "--decoder-width", "16", "--decoder-depth", "1",
             "--decoder-heads", "2", "--comp-heads", "2", "--stage1-epochs", "1", "--epochs", "1"]
    assert run_main(argv(tiny_root, tmp_path, "mart", *extra)) == 0
    run = tmp_path / "mart"
    assert (run / "stage1" / "done").is_file() and (run / "stage1" / "best.pth").is_file()
    stage1 = torch.load(run / "stage1" / "best.pth", weights_only=False)["model"]
    stage2 = torch.load(run / "stage2" / "last.pth", weights_only=False)["model"]
    assert any(k.startswith("decoder.") for k in stage1) and not any(k.startswith("decoder.") for k in stage2)
    result = json.loads((run / "stage2" / "results.json").read_text())
    assert result["n_test_videos"] == 4


def torchrun_gloo(tiny_root, tmp_path, name, *extra):
    """main.py in two CPU processes (gloo) for one epoch of batch 1: three steps per process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "main.py",
           *argv(tiny_root, tmp_path, name, "--device", "cpu", "--batch-size", "1", *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_mbt_with_two_processes_takes_several_steps(tiny_root, tmp_path):
    # the video mask token is unused in supervised training: DDP stops at the 2nd step unless it is frozen there;
    # with accumulation the first micro-step runs under no_sync
    proc = torchrun_gloo(tiny_root, tmp_path, "ddp_mbt", "--preset", "mbt_demo", "--method", "mbt", *MBT_TINY,
                         "--epochs", "1", "--accum-steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = json.loads((tmp_path / "ddp_mbt" / "predictions.json").read_text())
    assert sorted(p["video_id"] for p in preds) == ["anger_4", "anger_5", "joy_4", "joy_5"]


def test_mart_both_stages_with_two_processes(tiny_root, tmp_path):
    proc = torchrun_gloo(tiny_root, tmp_path, "ddp_mart", "--preset", "mart_demo", "--method", "mart", *MBT_TINY,
                         "--decoder-width", "16", "--decoder-depth", "1", "--decoder-heads", "2", "--comp-heads", "2",
                         "--stage1-epochs", "1", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp_mart"
    assert (run / "stage1" / "done").is_file()
    assert json.loads((run / "stage2" / "results.json").read_text())["n_test_videos"] == 4
