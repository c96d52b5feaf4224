"""What a run tells its user (issue 19, items 3, 8, 10, 12): the start and end lines, the lr each epoch used,
TensorBoard's test scalars and short epochs' train_step, best_val_acc under --select last, the collapse warning,
--bn-recalibrate, and Ctrl-C's one line with the command that continues the run."""
import json
import shlex
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import core.train
from core.engine import TrainContext, recalibrate_bn
from core.log import RunLogger
from core.run import main as run_main
from core.run import prediction_collapse
from fixtures_data import make_video_root

TINY = ["--preset", "cten_demo", "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16",
        "--batch-size", "4", "--workers", "0", "--no-progress", "--positive-classes", "Joy", "--vis-videos", "0"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    ann = make_video_root(root, classes=("Anger", "Joy"), train_per_class=3, test_per_class=1, n_frames=8,
                          seconds=1.0)
    gt = root / "gt.json"
    gt.write_text(json.dumps({vid: [[0.1, 0.6]] for vid in json.loads(ann.read_text())["database"]}))
    return root, ann, gt


def argv(tiny_root, out, name, *extra):
    root, ann, _ = tiny_root
    return [*TINY, "--root", str(root), "--annotation", str(ann), "--output", str(out), "--name", name, *extra]


def scalars(run_dir: Path) -> dict:
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_logs_of_a_short_cosine_run(tiny_root, tmp_path, capsys):
    """2 epochs of 2 steps, cosine schedule, the last epoch tested: lr as each epoch used it (the last not 0),
    best_val_acc null, train_step/* although an epoch has under --log-every steps, test accuracy and mAP in
    TensorBoard, a start line and an end line."""
    code = run_main(argv(tiny_root, tmp_path, "r", "--epochs", "2", "--lr", "1e-3", "--lr-schedule", "cosine",
                         "--gt-segments", str(tiny_root[2])))
    assert code == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [h["lr"] for h in results["train_history"]] == pytest.approx([1e-3, 5e-4])
    assert results["best_val_acc"] is None and results["selected_epoch"] == 1
    tb = scalars(tmp_path / "r")
    assert tb["train/lr"] == pytest.approx([1e-3, 5e-4])
    assert len(tb["train_step/loss"]) == 2  # each epoch's last step (2 steps per epoch, --log-every 10)
    assert tb["test/acc"] == pytest.approx([results["acc"]])
    assert tb["test/mAP@0.1"] == pytest.approx([results["detection"]["mAP@0.1"]])
    start = next(line for line in out.splitlines() if line.startswith("start: "))
    for part in ("cten_demo (cten) on cpu", "epochs 2", "lr 0.001 (adam, cosine)", "batch 4", "train 6 videos",
                 "test 2 videos", "temporal attention per modality (Eq. 7), W1 = I at init; erasing joint; "
                 "detection from cas (+ attention)"):
        assert part in start
    end = out.strip().splitlines()[-1]
    assert end.startswith("done in ") and "tested epoch 1 (the last)" in end
    assert str(tmp_path / "r" / "results.json") in end
    assert "s/epoch" in out and "left" in out  # the estimate for the rest of the run, each epoch


def test_ctrl_c_ends_with_one_line_and_the_resume_command(tiny_root, tmp_path, monkeypatch, capsys):
    """Interrupted in the second epoch: one line naming epoch 0 and the command; that command finishes the run.
    With --select val and --gt-segments, TensorBoard holds validation accuracy and mAP per epoch."""
    real = core.train.train_one_epoch

    def interrupted_at_epoch_1(model, method, loader, optimizer, ctx, epoch, epochs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(model, method, loader, optimizer, ctx, epoch, epochs)

    monkeypatch.setattr(core.train, "train_one_epoch", interrupted_at_epoch_1)
    first = argv(tiny_root, tmp_path, "c", "--epochs", "2", "--overwrite", "--val-fraction", "0.34", "--select", "val",
                 "--gt-segments", str(tiny_root[2]))
    assert run_main(first) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted after epoch 0; continue with: python main.py ")
    again = shlex.split(line.split("continue with: ")[1])[2:]
    assert again == [a for a in first if a != "--overwrite"] + ["--resume"]
    monkeypatch.setattr(core.train, "train_one_epoch", real)
    assert run_main(again) == 0
    assert "resumed from" in capsys.readouterr().out
    assert torch.load(tmp_path / "c" / "last.pth", weights_only=False)["epoch"] == 1
    tb = scalars(tmp_path / "c")  # validation accuracy and mAP per epoch (--gt-segments holds the validation videos)
    assert len(tb["val/acc"]) == len(tb["val/mAP@0.1"]) == 2
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    assert max(tb["val/acc"]) == pytest.approx(results["best_val_acc"])


def test_ctrl_c_before_any_epoch_says_so_and_leaves_no_run_to_resume(tiny_root, tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(core.train, "train_one_epoch", interrupted)
    assert run_main(argv(tiny_root, tmp_path, "c0", "--epochs", "1")) == 130
    assert "interrupted before the first epoch finished; continue with:" in capsys.readouterr().err


def test_prediction_collapse_names_the_class_and_the_count():
    one = [{"pred": "Joy", "label": lab} for lab in ("Joy", "Anger", "Fear")]
    assert prediction_collapse(one) == {"class": "Joy", "videos": 3}
    assert prediction_collapse(one[:1]) is None  # one video: nothing to tell
    assert prediction_collapse([{"pred": "Joy", "label": "Joy"}] * 4) is None  # a one-class test set
    assert prediction_collapse(one + [{"pred": "Fear", "label": "Fear"}]) is None


class TwoBN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trained = torch.nn.BatchNorm1d(3)
        self.frozen = torch.nn.BatchNorm1d(3)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.frozen(self.trained(x))


class Identity:
    def predict(self, model, batch):
        return {"logits": model(batch["x"])}


def test_recalibrate_bn_averages_the_training_batches_and_keeps_frozen_layers_and_the_rng():
    torch.manual_seed(0)
    data = [torch.randn(5, 3) * 2 + torch.tensor([1.0, -3.0, 10.0]) for _ in range(4)]
    model, ema = TwoBN(), TwoBN()
    ema.requires_grad_(False)  # as ModelEMA's copy: nothing in it requires grad
    for m in (model, ema):
        m.trained.running_mean.fill_(100.0)
        m.frozen.running_mean.fill_(7.0)
    ctx = TrainContext(device=torch.device("cpu"), logger=RunLogger("unused", enabled=False), progress=False)
    rng = torch.get_rng_state()
    assert recalibrate_bn(model, Identity(), [{"x": x} for x in data], ctx) == 1
    assert recalibrate_bn(ema, Identity(), [{"x": x} for x in data], ctx, trained=model) == 1
    assert torch.equal(torch.get_rng_state(), rng)
    means = torch.stack([x.mean(0) for x in data]).mean(0)
    variances = torch.stack([x.var(0) for x in data]).mean(0)  # unbiased, as BatchNorm's running_var
    for m in (model, ema):
        assert torch.allclose(m.trained.running_mean, means, atol=1e-5)
        assert torch.allclose(m.trained.running_var, variances, atol=1e-4)
        assert m.trained.momentum == 0.1 and not m.training
        assert torch.all(m.frozen.running_mean == 7.0)
