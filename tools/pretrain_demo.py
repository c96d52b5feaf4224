"""Pretext pre-training of the demo presets' backbones, saved in the published formats the real runs load.

    python tools/pretrain_demo.py --method cten --out data/demo/weights       # the 3D ResNet and the audio ResNet
    python tools/pretrain_demo.py --method mbt --out data/demo/weights        # the video ViT and the AST (mart: same)

The real presets start from backbones trained on sets unrelated to the emotion classes (Kinetics, ImageNet,
AudioSet); the demo's stand-in is tools/pretext_data.py (shapes, colours and motions; noises, tones, chirps and
clicks, with labels of their own). Each backbone is built exactly as the method's demo preset builds it (the
preset's options through the recipe's build_model), trained supervised on a fresh pretext batch per step (one
linear head over the factor labels, one cross-entropy per factor), and written in the layout of the file it stands
for, so that main.py loads it through the same flag, loader, weight guard and results.json record as a real run:

| file | flag | layout of |
| --- | --- | --- |
| `r3d_pretext.pth` | `--visual-weights` | Hara et al.'s `resnet-101-kinetics.pth`: `{'state_dict'}`, keys `module.*`, no BatchNorm counters, `fc` over the pretext logits |
| `audio_resnet_pretext.pth` | `--audio-weights` | a torchvision ResNet state dict: a 3-channel `conv1` (the one-channel kernel / 3 per channel, which the loader sums back), `fc` |
| `videomae_pretext.pth` | `--videomae-weights` | a fine-tuned VideoMAE file: `{'model'}`, `blocks.i.attn.{q,v}_bias`, `fc_norm`, `head` |
| `ast_pretext.pth` | `--ast-weights` | the AudioSet AST file: `module.v.*` and `module.mlp_head.*` (the positional embedding on the preset's own grid) |

Deterministic from --seed (data and initialisation; the thread count is fixed by --threads). A manifest
(`manifest.json` in --out: per file its SHA-256, the configuration that made it, the pretext accuracy and the
seconds) makes a second call skip every file whose configuration and digest match.
"""
import argparse
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opts  # noqa: E402
from core import methods  # noqa: E402
from core.weights import sha256_of  # noqa: E402
from models.ast import AST  # noqa: E402
from models.audio_resnet import AudioResNet  # noqa: E402
from models.resnet3d import ResNet3D  # noqa: E402
from models.video_vit import VideoViT  # noqa: E402
from tools import pretext_data  # noqa: E402
from tools.pretext_data import AUDIO_FACTORS, IGNORE, VIDEO_FACTORS  # noqa: E402

MANIFEST = "manifest.json"
DATA_VERSION = 1  # bump when tools/pretext_data.py changes what it draws
N_HELD_OUT = 4  # held-out batches for the pretext accuracy (stream indices from 10 ** 6)
IMAGE_STREAM = 10 ** 7  # the still images' batch indices start here (apart from the clips')


@dataclass(frozen=True)
class Plan:
    """How one backbone is pre-trained: `steps` on its own input; for the 3D ResNet first `image_steps` of its
    2D twin on still images (then centre-inflated into it)."""
    file: str
    steps: int
    batch: int
    lr: float
    image_steps: int = 0
    image_batch: int = 0


# backbone -> default plan. The CTEN pair took 49.5 + 34.3 s on 2 idle cores (README, the demo from pretrained
# backbones). The video ViT's plan does not learn yet (loss at chance after
# 200 of its 300 steps); the AST's is not measured.
PLANS = {
    "r3d": Plan("r3d_pretext.pth", steps=20, batch=16, lr=1e-3, image_steps=240, image_batch=32),
    "audio_resnet": Plan("audio_resnet_pretext.pth", steps=80, batch=32, lr=1e-3),
    "video_vit": Plan("videomae_pretext.pth", steps=300, batch=16, lr=5e-4),
    "ast": Plan("ast_pretext.pth", steps=200, batch=32, lr=5e-4),
}
BACKBONES = {"cten": ("r3d", "audio_resnet"), "mbt": ("video_vit", "ast"), "mart": ("video_vit", "ast")}


# ---------------------------------------------------------------------------------------------- the networks

class Pretext(nn.Module):
    """A backbone's pooled feature (N, D) -> logits over every factor (N, sum(factors)), one linear head."""

    def __init__(self, backbone: nn.Module, features: Callable, dim: int, factors: tuple):
        super().__init__()
        self.backbone, self.features, self.factors = backbone, features, factors
        self.head = nn.Linear(dim, sum(factors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.backbone, x))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum over factors of the cross-entropy; labels (N, n_factors), IGNORE where a factor does not apply."""
        parts = logits.split(self.factors, dim=1)
        return sum(F.cross_entropy(p, labels[:, i], ignore_index=IGNORE) for i, p in enumerate(parts)
                   if (labels[:, i] != IGNORE).any())  # a factor without labels (motion of still images) adds 0

    def correct(self, logits: torch.Tensor, labels: torch.Tensor) -> list:
        """Per factor (right, counted)."""
        out = []
        for i, p in enumerate(logits.split(self.factors, dim=1)):
            keep = labels[:, i] != IGNORE
            out.append((int((p.argmax(1) == labels[:, i])[keep].sum()), int(keep.sum())))
        return out


def preset_model(method: str, preset: str | None = None) -> tuple:
    """(options, model) of a method's preset (default: its demo), built as main.py builds it (8 classes)."""
    args = opts.parse_args(["--method", method, "--preset", preset or f"{method}_demo", "--root", "."])
    recipe = methods.get(method)
    return args, recipe.build_model(recipe.arch_of(args), 8)


def build_pretext(name: str, args, model: nn.Module) -> tuple:
    """(Pretext network, batch function (seed, index, batch) -> (inputs, labels), architecture description) of one
    backbone; the backbone is a fresh, trainable copy of the one in `model`."""
    if name == "r3d":
        net = ResNet3D(model.visual.depth, model.visual.input_preset, frozen=False)
        arch = {"depth": net.depth, "input_preset": net.input_preset, "frames": args.snippet_duration,
                "size": args.sample_size}
        return (Pretext(net, lambda m, x: m(x), net.feature_dim, VIDEO_FACTORS),
                lambda s, i, b: pretext_data.video_batch(s, i, b, args.snippet_duration, args.sample_size), arch)
    if name == "audio_resnet":
        audio = model.audio
        if audio.first_conv != "imagenet":
            raise ValueError("the torchvision layout holds a 7x7 RGB conv1: pre-train with --audio-first-conv imagenet")
        net = AudioResNet(audio.arch, audio.out_dim, audio.first_conv, audio.resize)
        arch = {"arch": audio.arch, "first_conv": audio.first_conv, "resize": audio.resize, "frames": args.audio_frames}
        features = lambda m, x: m.trunk_features(x[:, None])[:, 0]  # noqa: E731  (N, F, M) -> (N, trunk_dim)
        return (Pretext(net, features, net.trunk_dim, AUDIO_FACTORS),
                lambda s, i, b: pretext_data.audio_batch(s, i, b, args.audio_frames), arch)
    if name == "video_vit":
        cfg = model.video.cfg
        net = VideoViT(cfg)
        arch = {**asdict(cfg), "pool": args.mbt_pool}
        return (Pretext(net, lambda m, x: m(x, pool=args.mbt_pool), cfg.dim, VIDEO_FACTORS),
                lambda s, i, b: pretext_data.video_batch(s, i, b, cfg.num_frames, cfg.img_size), arch)
    if name == "ast":
        cfg = model.audio.cfg
        net = AST(cfg)
        arch = {**asdict(cfg), "pool": args.mbt_pool}
        return (Pretext(net, lambda m, x: m(x, pool=args.mbt_pool), cfg.dim, AUDIO_FACTORS),
                lambda s, i, b: pretext_data.audio_batch(s, i, b, cfg.n_frames), arch)
    raise ValueError(f"unknown backbone {name!r}; one of {sorted(PLANS)}")


# ---------------------------------------------------------------------------------------------- the 3D ResNet's 2D twin
# A 3D ResNet from scratch learns nothing in the CPU budget of the demo build (about 60 steps of 8-frame clips: the
# loss stayed at chance); its 2D twin (every 3D conv, BatchNorm and pool without the time axis) costs a fraction per
# image and learns shape and colour in a few hundred steps. Its kernels then become the centre time slice of the 3D
# kernels, the other slices zero (centre inflation): on any clip the 3D network computes the 2D one per frame
# (temporally max-pooled once, averaged at the end), and the short 3D stage after it learns motion into the other
# slices.

def flat_twin(r3d: ResNet3D) -> nn.Module:
    """A copy of `r3d` with every Conv3d / BatchNorm3d / MaxPool3d replaced by its 2D counterpart (time dropped from
    kernel, stride and padding; weights taken from the centre time slice)."""
    twin = copy.deepcopy(r3d)
    for name, module in list(twin.named_modules()):
        if isinstance(module, nn.Conv3d):
            flat = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size[1:], module.stride[1:],
                             module.padding[1:], bias=module.bias is not None)
            flat.weight.data.copy_(module.weight.data[:, :, module.kernel_size[0] // 2])
        elif isinstance(module, nn.BatchNorm3d):
            flat = nn.BatchNorm2d(module.num_features)
            flat.load_state_dict(module.state_dict())
        elif isinstance(module, nn.MaxPool3d):
            flat = nn.MaxPool2d(module.kernel_size, module.stride, module.padding)
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(twin.get_submodule(parent) if parent else twin, leaf, flat)
    return twin


def twin_features(twin: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ResNet3D.forward for the 2D twin: uint8 (N, 3, 1, S, S) still images -> (N, feature_dim)."""
    x = x[:, :, 0].float() / twin.pixel_std[..., 0] - twin.pixel_mean[..., 0] / twin.pixel_std[..., 0]
    x = twin.maxpool(twin.relu(twin.bn1(twin.conv1(x))))
    x = twin.layer4(twin.layer3(twin.layer2(twin.layer1(x))))
    return x.mean(dim=(2, 3))


def inflate_centre(r3d: ResNet3D, twin: nn.Module) -> None:
    """Writes the twin's kernels into the centre time slice of r3d's (the rest zero) and copies its BatchNorm."""
    flat = dict(twin.named_modules())
    for name, module in r3d.named_modules():
        if isinstance(module, nn.Conv3d):
            module.weight.data.zero_()
            module.weight.data[:, :, module.kernel_size[0] // 2] = flat[name].weight.data
        elif isinstance(module, nn.BatchNorm3d):
            module.load_state_dict(flat[name].state_dict())


# ---------------------------------------------------------------------------------------------- published layouts

def hara_layout(net: Pretext) -> dict:
    """resnet-101-kinetics.pth's layout: {'state_dict': {'module.<key>'}}, no BatchNorm counters, fc included."""
    state = {k: v for k, v in net.backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    state.update({"fc.weight": net.head.weight, "fc.bias": net.head.bias})
    return {"state_dict": {f"module.{k}": v.detach().clone() for k, v in state.items()}}


def torchvision_layout(net: Pretext) -> dict:
    """A torchvision ResNet state dict: the one-channel conv1 spread over RGB (kernel / 3 each: the loader's sum
    gives it back), the pretext head as fc."""
    state = {k: v.detach().clone() for k, v in net.backbone.trunk.state_dict().items()}
    state["conv1.weight"] = (state["conv1.weight"] / 3).expand(-1, 3, -1, -1).clone()  # (64, 3, 7, 7)
    state.update({"fc.weight": net.head.weight.detach().clone(), "fc.bias": net.head.bias.detach().clone()})
    return state


def videomae_layout(net: Pretext) -> dict:
    """A fine-tuned VideoMAE file: {'model': ...} without CLS / mask tokens (VideoMAE has none), q/v biases named
    `attn.q_bias` / `attn.v_bias`, the pretext head as `head`."""
    state = {}
    for k, v in net.backbone.state_dict().items():
        if k in ("cls_token", "mask_token"):
            continue
        state[k.replace(".attn.qkv.q_bias", ".attn.q_bias").replace(".attn.qkv.v_bias", ".attn.v_bias")] = v.clone()
    state.update({"head.weight": net.head.weight.detach().clone(), "head.bias": net.head.bias.detach().clone()})
    return {"model": state}


def ast_layout(net: Pretext) -> dict:
    """The AudioSet AST file's layout: a DataParallel state dict, `module.v.*` the transformer, `module.mlp_head.*`
    (LayerNorm, Linear) the head; the positional embedding on the model's own patch grid."""
    state = {f"module.v.{k}": v.detach().clone() for k, v in net.backbone.state_dict().items()}
    dim = net.head.in_features
    state.update({"module.mlp_head.0.weight": torch.ones(dim), "module.mlp_head.0.bias": torch.zeros(dim),
                  "module.mlp_head.1.weight": net.head.weight.detach().clone(),
                  "module.mlp_head.1.bias": net.head.bias.detach().clone()})
    return state


LAYOUTS = {"r3d": hara_layout, "audio_resnet": torchvision_layout, "video_vit": videomae_layout, "ast": ast_layout}


# ---------------------------------------------------------------------------------------------- training

def train(net: Pretext, batches: Callable, plan: Plan, seed: int, log_every: int = 0) -> dict:
    """Adam with cosine decay, one fresh pretext batch per step; then the pretext accuracy per factor on held-out
    batches (eval mode). Returns {'loss' (mean of the last 10 steps), 'accuracy' [per factor]}."""
    opt = torch.optim.Adam(net.parameters(), lr=plan.lr)
    losses = []
    net.train()
    for step in range(plan.steps):
        for group in opt.param_groups:
            group["lr"] = plan.lr * 0.5 * (1 + math.cos(math.pi * step / plan.steps))
        x, y = batches(seed, step, plan.batch)
        loss = net.loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{plan.steps} loss {sum(losses[-log_every:]) / log_every:.3f}", flush=True)
    net.eval()
    counts = [[0, 0] for _ in net.factors]
    with torch.no_grad():
        for i in range(N_HELD_OUT):
            x, y = batches(seed, 10 ** 6 + i, plan.batch)  # a stream index no training step reaches
            for c, (right, n) in zip(counts, net.correct(net(x), y)):
                c[0] += right
                c[1] += n
    return {"loss": sum(losses[-10:]) / max(len(losses[-10:]), 1),
            "accuracy": [round(r / max(n, 1), 4) for r, n in counts]}


def pretrain(name: str, out: Path, method: str, seed: int = 0, steps: int | None = None, batch: int | None = None,
             log_every: int = 0) -> dict:
    """Pre-trains one backbone of `method`'s demo preset into out/<plan file> unless the manifest holds the same
    configuration and the file's digest; returns its manifest entry (with 'cached': bool)."""
    args, model = preset_model(method)
    base = PLANS[name]
    plan = replace(base, **({} if steps is None else {"steps": steps, "image_steps": min(steps, base.image_steps)}),
                   **({} if batch is None else {"batch": batch, "image_batch": batch if base.image_batch else 0}))
    torch.manual_seed(seed)
    net, batches, arch = build_pretext(name, args, model)
    config = {"backbone": name, "arch": arch, "seed": seed, **asdict(plan), "data_version": DATA_VERSION}
    path = out / plan.file
    manifest = read_manifest(out)
    entry = manifest.get(plan.file)
    if entry and entry["config"] == config and path.is_file() and sha256_of(path) == entry["sha256"]:
        return {**entry, "cached": True}
    start = time.perf_counter()
    result = {}
    if plan.image_steps:  # the 3D ResNet: its 2D twin on still images first, then centre-inflated
        twin = Pretext(flat_twin(net.backbone), twin_features, net.backbone.feature_dim, VIDEO_FACTORS)
        twin.head = net.head  # one head for both stages
        images = lambda s, i, b: pretext_data.video_batch(s, IMAGE_STREAM + i, b, 1, args.sample_size)  # noqa: E731
        image = train(twin, images, replace(plan, steps=plan.image_steps, batch=plan.image_batch), seed, log_every)
        inflate_centre(net.backbone, twin.backbone)
        result = {"image_loss": image["loss"], "image_accuracy": image["accuracy"]}
    result.update(train(net, batches, plan, seed, log_every))
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(LAYOUTS[name](net), tmp)
    tmp.replace(path)
    entry = {"config": config, "sha256": sha256_of(path), "seconds": round(time.perf_counter() - start, 1), **result}
    manifest = read_manifest(out)  # re-read: another backbone may have been written meanwhile
    manifest[plan.file] = entry
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return {**entry, "cached": False}


def read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=sorted(BACKBONES), required=True,
                   help="whose demo preset's backbones: cten (3D ResNet + audio ResNet), mbt / mart (ViT + AST)")
    p.add_argument("--out", type=Path, required=True, help="folder of the weight files and manifest.json")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of every backbone (default: each one's plan, see PLANS in this file)")
    p.add_argument("--batch", type=int, default=None, help="pretext batch (default: each one's plan)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s; fixes the result)")
    p.add_argument("--log-every", type=int, default=20, help="print the loss every N steps (0: never)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in BACKBONES[args.method]:
        print(f"== pretext pre-training of the {args.method} demo's {name} -> {args.out / PLANS[name].file}",
              flush=True)
        entry = pretrain(name, args.out, args.method, args.seed, args.steps, args.batch, args.log_every)
        if entry["cached"]:
            print(f"  cached (sha256 {entry['sha256'][:12]}, same configuration)")
        else:
            print(f"  {entry['seconds']} s, loss {entry['loss']:.3f}, held-out pretext accuracy per factor "
                  f"{entry['accuracy']}, sha256 {entry['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
