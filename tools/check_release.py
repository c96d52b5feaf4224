"""Checks that a release checkpoint converted by tools/convert_release.py gives the release's own forward pass.

    git clone https://github.com/nku-zhichengzhang/CTEN ../CTEN && python tools/check_release.py cten ../CTEN
    git clone https://github.com/nku-zhichengzhang/MART ../MART && python tools/check_release.py mbt ../MART

No release code is part of this project: the script imports the release's model classes from the checkout given
(in a child process whose import path holds the checkout and not this project, since both have a `models`
package). There it builds the release model (CTEN: `VAANetErase`, wrapped in DataParallel as the release saves it;
MART: `MBT`) with random weights, every
parameter the releases initialise to a constant (LayerNorm and BatchNorm scales and shifts, biases, tokens,
the non-local alpha) moved off it (then, for CTEN, every BatchNorm's statistics set by one pass in training mode,
so that no activation saturates), then runs inputs through it in eval mode. Back here, the state_dict goes
through tools/convert_release.py onto the `_official` preset's model, which runs the same inputs in eval mode.
Printed: the relative error ||ours - release|| / ||release|| of the logits (and CTEN's temporal attention; MBT's
visual and audio logits); exit status 1 when one is 1e-5 or more. A control follows, a mapping error the check must
see (exit status 1 when it does not): CTEN with the two halves of the joint feature exchanged (the order a model
concatenating [audio, visual] would read them in), MBT with the video ViT's q and v biases exchanged.

What the child process changes to make the release code run here, without pretrained files or a network (nothing
in the model's arithmetic): every pretrained load the release makes is replaced by random initialisation, so
nothing is read or downloaded (CTEN: its ImageNet ResNet-18, built here with weights=None, and the 3D ResNet file;
MART: the VideoMAE file, timm's DeiT weights, the AudioSet AST file, whose pos_embed the release cuts to
(1, 110, 768), the shape built here), timm's current names for the DeiT models (`deit_*` for `vit_deit_*`), the
AST's version check (timm 0.4.5), a stub for the `wget` package, and the AST's patch embedding replaced by the
release's own (`ast_models.PatchEmbed`, the timm 0.4.5 behaviour it patches in: current timm builds its own, which
refuses a 128 x 100 input). Full-size models on CPU with small inputs (CTEN: 8-frame snippets at 64 px, the 3D
ResNet's pooling being global either way): measured 1.5-2 minutes for CTEN and 7.5 for the MBT on two shared cores.
"""
import argparse
import functools
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path

import torch

SEED = 0


# ---------------------------------------------------------------------------------------------- release side

def vary_constants(model: torch.nn.Module, scale: float = 0.1) -> None:
    """Moves every parameter that starts constant (all elements equal) off its value, so that a weight mapped to
    the wrong place changes the output."""
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() == 1 or p.std() == 0:
                p.add_(scale * torch.randn_like(p))


def calibrate_batchnorm(model: torch.nn.Module, run) -> None:
    """Sets every BatchNorm's running statistics to those of one training-mode pass of `run`."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass gives that batch's statistics
    model.train()
    with torch.no_grad():
        run()
    model.eval()


def release_cten(root: str, args) -> dict:
    import torchvision
    plain = torchvision.models.resnet18
    torchvision.models.resnet18 = lambda pretrained=False, **kw: plain(weights=None)
    import models.resnet as release_resnet
    import models.vaanet_erase as release_cten_model
    release_cten_model.pretrained_resnet101 = (
        lambda snippet_duration, sample_size, n_classes, ft_begin_index, pretrained_resnet101_path:
        (release_resnet.resnet101(n_classes, snippet_duration, sample_size), None))
    net = release_cten_model.VAANetErase(snippet_duration=args.frames, sample_size=args.size, n_classes=args.classes,
                                         seq_len=args.seq_len, pretrained_resnet101_path=None,
                                         audio_embed_size=2048, audio_n_segments=args.seq_len)
    model = torch.nn.DataParallel(net)  # on CPU it calls the module; its state_dict has the `module.` prefix
    b, t = args.batch, args.seq_len
    video = torch.randint(0, 256, (b, t, 3, args.frames, args.size, args.size), dtype=torch.uint8)
    audio = torch.randn(b, t * 100, 128)  # the release's layout: T segments of 100 frames one after the other
    run = lambda: model([video.float(), audio.clone()])  # noqa: E731  (it scales the video in place)
    vary_constants(model)
    calibrate_batchnorm(model, run)
    with torch.no_grad():
        logits, gamma = run()
    return {"state_dict": model.state_dict(), "video": video, "audio": audio.view(b, t, 100, 128),
            "outputs": {"logits": logits, "attention": gamma}}


def release_mbt(root: str, args) -> dict:
    import timm
    sys.modules.setdefault("wget", types.ModuleType("wget"))
    timm.__version__ = "0.4.5"
    create = timm.create_model
    timm.create_model = lambda name, pretrained=False, **kw: create(name.replace("vit_deit_", "deit_"), **kw)
    import models.mbt.VanillaViT as release_vit
    release_vit.load_pretrained_model = lambda path, model: model
    import models.ast.ast_models as release_ast
    import models.mbt.MBT as release_mbt_model
    release_mbt_model.ASTModel = functools.partial(release_ast.ASTModel, audioset_pretrain=False,
                                                   imagenet_pretrain=False, verbose=False)
    model = release_mbt_model.MBT(n_classes=args.classes)
    v = model.ast_model.v
    proj = v.patch_embed.proj
    v.patch_embed = release_ast.PatchEmbed(embed_dim=proj.out_channels)
    v.patch_embed.proj = proj
    vary_constants(model)
    model.eval()
    b, t = args.batch, args.seq_len
    video = torch.randint(0, 256, (b, t, 3, 16, 112, 112), dtype=torch.uint8)
    audio = torch.randn(b, t * 100, 128)
    with torch.no_grad():
        (logits_a, logits_v), _ = model(video.float(), audio.clone())
    return {"state_dict": model.state_dict(), "video": video, "audio": audio.view(b, t, 100, 128),
            "outputs": {"logits": logits_v + logits_a, "logits_v": logits_v, "logits_a": logits_a}}


RELEASE_SIDE = {"cten": release_cten, "mbt": release_mbt}


def run_release_side(family: str, root: str, out: str, args) -> None:
    warnings.filterwarnings("ignore")
    sys.path[:] = [root] + [p for p in sys.path if Path(p or ".").resolve() != PROJECT]
    torch.manual_seed(SEED)
    torch.save(RELEASE_SIDE[family](root, args), out)


# ---------------------------------------------------------------------------------------------- project side

PROJECT = Path(__file__).resolve().parents[1]
PRESETS = {"cten": "cten_ve8_official", "mbt": "mbt_ve8_official"}


def relative_error(ours: torch.Tensor, release: torch.Tensor) -> float:
    return ((ours.double() - release.double()).norm() / release.double().norm()).item()


def project_outputs(family: str, model, ref: dict) -> dict:
    with torch.no_grad():
        out = model(video=ref["video"], audio=ref["audio"])
    if family == "cten":
        return {"logits": out["logits"], "attention": out["att_v"]}
    return {k: out[k] for k in ("logits", "logits_v", "logits_a")}


def control_state(family: str, state: dict, model) -> dict:
    """A mapping error the check must see. CTEN: the joint attention's W2 and the classifier with their [visual,
    audio] column halves exchanged (what a model concatenating [audio, visual] reads); MBT: the video ViT's q and v
    biases exchanged."""
    out = dict(state)
    if family == "cten":
        dim = model.feature_dim
        for key in ("attention.w2.weight", "classifier.weight"):
            out[key] = torch.cat([state[key][:, dim:], state[key][:, :dim]], dim=1)
        return out
    for key in state:
        if key.endswith("attn.qkv.q_bias") and key.startswith("video."):
            v_key = key.replace("q_bias", "v_bias")
            out[key], out[v_key] = state[v_key], state[key]
    return out


def check(family: str, ref: dict, args, annotation: Path) -> dict:
    sys.path.insert(0, str(PROJECT))
    from core import methods
    from core.checkpoint import load_model_state
    from models.pretrained import strip_prefix
    from tools.convert_release import FORMATS, convert_state, release_args

    names = [f"class{i}" for i in range(args.classes)]
    annotation.write_text('{"labels": %s, "database": {}}' % str(names).replace("'", '"'))
    flags = ["--seq-len", str(args.seq_len), "--eval-seq-len", str(args.seq_len)]
    if family == "cten":
        flags += ["--snippet-duration", str(args.frames), "--sample-size", str(args.size)]
    margs = release_args(PRESETS[family], annotation, flags)
    recipe = methods.get(margs.method)
    model = recipe.build_model(recipe.arch_of(margs), args.classes).eval()
    state, report = convert_state(strip_prefix(ref["state_dict"], "module."), model.state_dict(), FORMATS[family],
                                  "the release model")
    load_model_state(model, state, "the converted release model")
    errors = {k: relative_error(v, ref["outputs"][k]) for k, v in project_outputs(family, model, ref).items()}
    load_model_state(model, control_state(family, state, model), "the control")
    control = project_outputs(family, model, ref)
    errors.update({f"control {k}": relative_error(v, ref["outputs"][k]) for k, v in control.items()})
    return {"errors": errors, "ignored": report["ignored"], "filled": report["filled"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("family", choices=sorted(RELEASE_SIDE), help="cten: the CTEN release; mbt: the MART release")
    p.add_argument("release_dir", help="a checkout of the release (nku-zhichengzhang/CTEN or nku-zhichengzhang/MART)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=4, help="T segments (CTEN's T x T attention is built for it)")
    p.add_argument("--frames", type=int, default=8, help="CTEN: frames per snippet (the MBT's ViT takes 16)")
    p.add_argument("--size", type=int, default=64, help="CTEN: frame side (the MBT's ViT takes 112)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--tolerance", type=float, default=1e-5)
    p.add_argument("--release-side", default=None, help=argparse.SUPPRESS)  # the child process writes here
    args = p.parse_args(argv)
    root = str(Path(args.release_dir).resolve())
    if args.release_side:
        run_release_side(args.family, root, args.release_side, args)
        return 0
    marker = "models/vaanet_erase.py" if args.family == "cten" else "models/mbt/MBT.py"
    if not (Path(root) / marker).is_file():
        print(f"error: {args.release_dir} has no {marker}; pass a checkout of the "
              f"{'CTEN' if args.family == 'cten' else 'MART'} release", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "release.pt")
        sizes = [f"--{k.replace('_', '-')}={getattr(args, k)}"
                 for k in ("batch", "seq_len", "frames", "size", "classes")]
        child = [sys.executable, str(Path(__file__).resolve()), args.family, root, *sizes, "--release-side", out]
        subprocess.run(child, check=True, cwd=root)  # the release code reads paths relative to its checkout
        ref = torch.load(out, weights_only=False)
        result = check(args.family, ref, args, Path(tmp) / "classes.json")
    print(f"{args.family}: release {args.release_dir} vs {PRESETS[args.family]} with converted weights, eval mode, "
          f"batch {args.batch}, T = {args.seq_len}; ignored {len(result['ignored'])} release keys, filled "
          f"{result['filled'] or 'none'}")
    failed = False
    for name, err in result["errors"].items():
        control = name.startswith("control")
        ok = err >= args.tolerance if control else err < args.tolerance
        failed |= not ok
        print(f"  {name:<20} relative error {err:.2e}  {'ok' if ok else 'FAILED'}"
              + ("  (must differ)" if control else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
