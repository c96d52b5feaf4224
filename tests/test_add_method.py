"""Adding a method is one model, one recipe, presets and tests (README, "Adding a method"): a third method defined
in this file alone, a linear probe on CTEN's frozen visual backbone, trains, resumes, evaluates and predicts through
main.py's machinery without any other file knowing it."""
import argparse
import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import opts
from core import methods
from core.methods.base import Recipe, Stage, StageContext
from core.run import main as run_main
from fixtures_data import make_video_root, write_video_only
from models.resnet3d import ResNet3D
from tools import predict


# ---------------------------------------------------------------------------------------------- the model file


class LinearProbe(nn.Module):
    """A frozen 3D ResNet per snippet, then one linear layer per segment, averaged over segments.
    video uint8 (B, T, 3, L, S, S) -> {'logits' (B, C), 'seg_logits' (B, T, C)}."""

    def __init__(self, n_classes: int, depth: int, pool: str):
        super().__init__()
        self.backbone = ResNet3D(depth, "kinetics400", frozen=True)
        self.head = nn.Linear(self.backbone.feature_dim, n_classes)
        self.pool = pool

    def forward(self, video: torch.Tensor) -> dict:
        B, T = video.shape[:2]
        with torch.no_grad():
            feats = self.backbone(video.flatten(0, 1)).view(B, T, -1)  # (B, T, D)
        seg_logits = self.head(feats)  # (B, T, C)
        logits = seg_logits.mean(1) if self.pool == "mean" else seg_logits.amax(1)
        return {"logits": logits, "seg_logits": seg_logits}


# ---------------------------------------------------------------------------------------------- the recipe file


class ProbeStep:
    curve_names = ("score_v",)

    def __init__(self, criterion):
        self.criterion = criterion

    def train_step(self, model, batch, epoch):
        out = model(batch["video"])
        loss = self.criterion(out["logits"], batch["label"])
        return loss, {"acc": (out["logits"].argmax(1) == batch["label"]).float().mean().item()}

    def predict(self, model, batch):
        out = model(batch["video"])
        pred = out["logits"].argmax(1)  # (B,)
        out["score_v"] = out["seg_logits"].softmax(-1).gather(2, pred[:, None, None].expand(-1, out["seg_logits"].shape[1], 1))[..., 0]
        return out


@dataclass(frozen=True)
class ProbeArch:
    visual_depth: int
    probe_pool: str


class ProbeRecipe(Recipe):
    name = "probe"
    help = "a linear probe on the frozen visual backbone (tests/test_add_method.py)"
    arch = ProbeArch
    presets = {"probe_tiny": dict(visual_depth=10, seq_len=2, snippet_duration=2, sample_size=16, batch_size=2,
                                  optimizer="adam", lr=1e-2, epochs=3, workers=0, val_fraction=0.25)}

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument_group("linear probe").add_argument("--probe-pool", choices=["mean", "max"], default="mean")

    def inputs(self, args) -> dict:
        return {"audio": False}

    def build_model(self, arch: ProbeArch, n_classes: int) -> LinearProbe:
        return LinearProbe(n_classes, arch.visual_depth, arch.probe_pool)

    def stages(self, args) -> list:
        return [Stage("", args.epochs, method=lambda args, sc: ProbeStep(nn.CrossEntropyLoss()))]

    def predictor(self, args, polarity) -> ProbeStep:
        return self.stages(args)[0].method(args, StageContext(polarity))


@pytest.fixture(scope="module", autouse=True)
def probe_registered():
    """The probe is registered for this file only: every other test sees the shipped methods (and docs/usage.txt)."""
    methods.register(ProbeRecipe())
    yield
    methods.unregister("probe")


# ---------------------------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    ann = make_video_root(root, classes=("Anger", "Joy"), train_per_class=4, test_per_class=2, n_frames=8,
                          audio=False, srt=False)
    return root, ann


def argv(tiny, out, name, *extra):
    root, ann = tiny
    return ["--method", "probe", "--preset", "probe_tiny", "--root", str(root), "--annotation", str(ann),
            "--output", str(out), "--name", name, "--no-progress", "--vis-videos", "1", "--positive-classes", "Joy", *extra]


def test_the_registry_exposes_the_new_method_its_options_and_presets():
    args = opts.parse_args(["--preset", "probe_tiny", "--method", "probe", "--root", "R", "--probe-pool", "max"])
    assert args.method == "probe" and args.probe_pool == "max" and args.visual_depth == 10
    assert methods.presets()["probe_tiny"]["method"] == "probe"
    with pytest.raises(SystemExit):
        opts.parse_args(["--method", "nope", "--root", "R"])
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.get("nope")
    with pytest.raises(ValueError, match="already a preset"):
        methods.register(type("Clash", (ProbeRecipe,), {"name": "clash"})())


def test_a_new_method_trains_resumes_evaluates_and_predicts(tiny, tmp_path):
    assert run_main(argv(tiny, tmp_path, "full")) == 0
    assert run_main(argv(tiny, tmp_path, "cut", "--epochs", "1")) == 0
    assert run_main(argv(tiny, tmp_path, "cut", "--resume", "--resume-override")) == 0  # epochs 1 -> 3
    full = torch.load(tmp_path / "full" / "last.pth", weights_only=False)
    cut = torch.load(tmp_path / "cut" / "last.pth", weights_only=False)
    assert full["epoch"] == cut["epoch"] == 2
    for k, v in full["model"].items():
        assert torch.equal(v, cut["model"][k]), k
    assert full["method"] == "probe" and full["arch"]["probe_pool"] == "mean" and full["arch"]["visual_depth"] == 10

    result = json.loads((tmp_path / "full" / "results.json").read_text())
    assert result["n_test_videos"] == 4 and result["curves"] == ["score_v"]
    assert (tmp_path / "full" / "timelines").is_dir()

    # --eval-only rebuilds the probe from the checkpoint's architecture, whatever the flags say
    assert run_main(argv(tiny, tmp_path, "eval", "--eval-only", "--checkpoint", str(tmp_path / "full" / "best.pth"),
                         "--probe-pool", "max", "--visual-depth", "18")) == 0
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["acc"] == result["acc"] and again["confusion"] == result["confusion"]

    # single-video prediction through the same restore path
    clip = write_video_only(tmp_path / "clip.avi", n=6, size=24)
    assert predict.main([str(clip), "--checkpoint", str(tmp_path / "full" / "best.pth"), "--out",
                         str(tmp_path / "pred")]) == 0
    record = json.loads((tmp_path / "pred" / "clip.json").read_text())
    assert record["method"] == "probe" and set(record["curves"]) == {"score_v"}
    assert abs(sum(record["probs"].values()) - 1) < 1e-4 and not record["reads_text"]
