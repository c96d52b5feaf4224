"""Supervised training of the audio-visual bottleneck transformer (MART's stage 2): PCCE on both heads; and the
`mbt` recipe (the backbone trained alone, which is also what a MART run evaluates)."""
import argparse
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from core.losses import classification_loss
from core.methods.base import Recipe, Stage, StageContext, WeightFlag
from core.weights import load_weight
from models.ast import ASTConfig
from models.mbt import MBT
from models.pretrained import load_ast, load_videomae
from models.video_vit import VideoViTConfig

DEGREE_SOURCES = (("degree_v", "seg_logits_v"), ("degree_a", "seg_logits_a"), ("degree_dec", "dec_logits"))


def add_degree_curves(out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Temporal degree of the predicted emotion: per segment, the probability of the video's predicted class
    under each per-segment head present in `out` (B, T, C) -> curve (B, T): the visual and audio heads, and
    MART's decoder ('dec_logits') when present."""
    pred = out["logits"].argmax(dim=1)  # (B,)
    for name, key in DEGREE_SOURCES:
        if key in out:
            probs = out[key].float().softmax(dim=-1)  # (B, T, C)
            out[name] = probs.gather(2, pred[:, None, None].expand(-1, probs.shape[1], 1)).squeeze(2)  # (B, T)
    return out


class MBTMethod:
    curve_names = ("degree_v", "degree_a")

    def __init__(self, criterion: Callable):
        self.criterion = criterion

    def predict(self, model, batch: dict) -> dict:
        return add_degree_curves(model(video=batch["video"], audio=batch["audio"]))

    def train_step(self, model, batch: dict, epoch: int):
        out = model(video=batch["video"], audio=batch["audio"])
        labels = batch["label"]
        loss_v = self.criterion(out["logits_v"], labels)
        loss_a = self.criterion(out["logits_a"], labels)
        acc = (out["logits"].argmax(dim=1) == labels).float().mean().item()
        return loss_v + loss_a, {"loss_v": loss_v.item(), "loss_a": loss_a.item(), "acc": acc}


# ---------------------------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class MBTArch:
    """The options that fix the MBT's architecture (stored in its checkpoints)."""
    sample_size: int
    snippet_duration: int
    audio_frames: int
    mbt_depth: int
    mbt_width: int
    mbt_heads: int
    n_bottleneck: int
    fusion_layer: int
    video_scaling: str
    freeze_audio_early: bool
    drop_path: float
    grad_checkpointing: bool
    mbt_pool: str
    mbt_head_init_scale: Optional[float]
    video_patch_size: int
    ast_stride: int
    ast_patch_freq: Optional[int]
    ast_input_mean: float
    ast_input_std: float
    ast_early_fp16: bool = False


# Official MART/MBT settings (Adam 1e-4, wd 1e-3, T = 12 in training and 16 in evaluation, seed 3407).
OFFICIAL = dict(optimizer="adam", lr=1e-4, weight_decay=1e-3, batch_size=4, epochs=150, seq_len=12, eval_seq_len=16,
                snippet_duration=16, sample_size=112, loss="pcce", ema_decay=0.999, seed=3407, spec_augment=True)
# The release's whole configuration (docs/presets.md): effective batch 36 by accumulation (4 x 9 here, the release's
# 1 x 36: the same mean gradient for this LayerNorm-only network, and 36 videos per optimiser and EMA step), the AST
# frozen before the fusion layer, the release's x/255 - 100/255 video scaling, the whole training split and the last
# epoch (the release selects on the test split, which is not reproduced).
# Precision: fp32 (--amp none) except the AST's embedding and blocks before the fusion, which the release runs under
# fp16 autocast on CUDA (--ast-early-fp16; models/ast/ast_models.py:193,210 of the MART release).
OFFICIAL_RELEASE = dict(OFFICIAL, batch_size=4, accum_steps=9, freeze_audio_early=True, video_scaling="official",
                        val_fraction=0.0, select="last", amp="none", ast_early_fp16=True)
# A tiny MBT for the demo set (2 CPU cores).
# (docs/mbt_demo.md): whole-spectrum audio tokens re-normalised to the demo's fbank statistics (mean 0.307, std
# 2 x 0.285, AST's convention), mean-pooled heads, lr 1e-3 with cosine decay.
DEMO = dict(root="data/demo/data", seq_len=6, snippet_duration=4, sample_size=64, workers=2, val_fraction=0.15,
            mbt_depth=4, mbt_width=96, mbt_heads=4, n_bottleneck=8, fusion_layer=2, mbt_pool="mean",
            ast_patch_freq=128, ast_input_mean=0.307, ast_input_std=0.57, optimizer="adam", lr=1e-3,
            lr_schedule="cosine", weight_decay=1e-3, batch_size=8, epochs=60, loss="pcce", ema_decay=0.99,
            ema_warmup=50.0)


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    """The MBT backbone's options (shared by the `mbt` and `mart` recipes; added once)."""
    if any(a.dest == "mbt_depth" for a in parser._actions):
        return
    B = argparse.BooleanOptionalAction
    g = parser.add_argument_group("MBT / MART backbone")
    g.add_argument("--mbt-depth", type=int, default=12, help="blocks of each branch (video ViT and AST)")
    g.add_argument("--mbt-width", type=int, default=768, help="token width of each branch")
    g.add_argument("--mbt-heads", type=int, default=12, help="attention heads per block")
    g.add_argument("--n-bottleneck", type=int, default=32, help="fusion bottleneck tokens")
    g.add_argument("--fusion-layer", type=int, default=8, help="first block that fuses through the bottleneck")
    g.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth of the last block (official: 0)")
    g.add_argument("--grad-checkpointing", action=B, default=False,
                   help="recompute the blocks' activations in the backward pass (less memory, more time)")
    g.add_argument("--freeze-audio-early", action=B, default=False,
                   help="official MART: the AST's embedding and blocks before the fusion layer stay frozen")
    g.add_argument("--ast-early-fp16", action=B, default=False,
                   help="the AST's embedding and blocks before the fusion layer under fp16 autocast on CUDA, the "
                        "rest as --amp says (the MART release); no effect on CPU")
    g.add_argument("--video-scaling", choices=["imagenet", "official"], default="imagenet",
                   help="pixel scaling into the ViT: VideoMAE's ImageNet mean/std, or the official x/255 - 100/255")
    g.add_argument("--mbt-pool", choices=["cls", "mean"], default="cls",
                   help="segment feature of each head: cls (the spec: CLS / CLS + distillation tokens) or mean "
                        "(normalised mean of the patch tokens, VideoMAE's fine-tuning head)")
    g.add_argument("--mbt-head-init-scale", type=float, default=None,
                   help="heads drawn trunc_normal(0.02) x this, zero bias (VideoMAE fine-tuning: 0.001); "
                        "default: nn.Linear's init")
    g.add_argument("--video-patch-size", type=int, default=16, help="spatial patch of the video ViT (VideoMAE: 16)")
    g.add_argument("--ast-stride", type=int, default=10, help="AST patch stride in frequency and time (AST: 10)")
    g.add_argument("--ast-patch-freq", type=int, default=None,
                   help="AST patch height in mel bins (default: 16, square patches); 128 = whole-spectrum time slices")
    g.add_argument("--ast-input-mean", type=float, default=0.0,
                   help="the AST sees (fbank - mean) / std: re-normalises a set whose fbank statistics differ from "
                        "the pipeline's fixed ones (AST normalises each dataset to mean 0, std 0.5)")
    g.add_argument("--ast-input-std", type=float, default=1.0, help="the std of --ast-input-mean's formula")
    g.add_argument("--videomae-weights", default=None, help="VideoMAE ViT-B/16 checkpoint (.pth)")
    g.add_argument("--ast-weights", default=None, help="AST AudioSet checkpoint (audioset_10_10_0.4593.pth)")


def build_mbt(arch: MBTArch, n_classes: int) -> MBT:
    scaling = {} if arch.video_scaling == "imagenet" else dict(mean=(100 / 255,) * 3, std=(1.0,) * 3)
    video = VideoViTConfig(img_size=arch.sample_size, num_frames=arch.snippet_duration, dim=arch.mbt_width,
                           depth=arch.mbt_depth, num_heads=arch.mbt_heads, patch_size=arch.video_patch_size, **scaling)
    audio = ASTConfig(n_frames=arch.audio_frames, dim=arch.mbt_width, depth=arch.mbt_depth, num_heads=arch.mbt_heads,
                      fstride=arch.ast_stride, tstride=arch.ast_stride, patch_freq=arch.ast_patch_freq,
                      input_mean=arch.ast_input_mean, input_std=arch.ast_input_std)
    return MBT(n_classes, video, audio, n_bottleneck=arch.n_bottleneck, fusion_layer=arch.fusion_layer,
               drop_path=arch.drop_path, grad_checkpointing=arch.grad_checkpointing,
               freeze_audio_early=arch.freeze_audio_early, pool=arch.mbt_pool, ast_early_fp16=arch.ast_early_fp16,
               head_init_scale=arch.mbt_head_init_scale)


def supervised_model(mbt: MBT) -> MBT:
    """The MBT as supervised training uses it (the `mbt` method, MART's stage 2): the video mask token serves only
    MART's masked modelling, so it does not train here. Every trained parameter then takes part in each step, which
    DistributedDataParallel requires (no find_unused_parameters: tests/test_main.py, two processes)."""
    mbt.video.mask_token.requires_grad_(False)
    return mbt


class MBTRecipe(Recipe):
    name = "mbt"
    help = "the MART backbone (audio-visual bottleneck transformer) trained supervised: MART's stage 2 alone"
    arch = MBTArch
    presets = {"mbt_demo": DEMO,
               "mbt_ve8_official": dict(OFFICIAL_RELEASE, annotation_name="ve8.json"),
               "mbt_ek6_official": dict(OFFICIAL_RELEASE, annotation_name="ek6.json")}

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        add_backbone_options(parser)

    def build_model(self, arch: MBTArch, n_classes: int) -> MBT:
        return build_mbt(arch, n_classes)

    def expected_weights(self, args) -> list:
        return [WeightFlag("videomae_weights", "videomae_base_patch16_224.pth (a VideoMAE ViT-B/16 checkpoint; its "
                           "width and depth must be --mbt-width / --mbt-depth)"),
                WeightFlag("ast_weights", "audioset_10_10_0.4593.pth (the AudioSet AST; width and depth as "
                           "--mbt-width / --mbt-depth)")]

    def load_pretrained(self, model: MBT, args) -> list:
        trusted = args.trust_weights
        flags = {w.dest: w for w in MBTRecipe.expected_weights(self, args)}
        records = []
        if args.videomae_weights:
            records.append(load_weight(flags["videomae_weights"], args.videomae_weights,
                                       lambda: load_videomae(args.videomae_weights, model.video, trusted=trusted)))
        if args.ast_weights:
            records.append(load_weight(flags["ast_weights"], args.ast_weights,
                                       lambda: load_ast(args.ast_weights, model.audio, trusted=trusted)))
        return records

    def stages(self, args) -> list:
        return [Stage("", args.epochs, method=self.step, model=supervised_model)]

    def step(self, args, sc: StageContext) -> MBTMethod:
        return MBTMethod(classification_loss(args.loss, sc.polarity, args.pcce_lambda))

    def predictor(self, args, polarity) -> MBTMethod:
        return self.step(args, StageContext(polarity))


RECIPE = MBTRecipe()
