"""A trained checkpoint of an official release -> a checkpoint of this project (what main.py's best.pth holds).

    python tools/convert_release.py CTEN_RELEASE.pth --preset cten_ve8_official --annotation DATA/VE8/ve8.json \
        --out runs/cten_release_ve8/best.pth
    python tools/convert_release.py MART_RELEASE/best.ckpt --preset mbt_ve8_official --annotation DATA/VE8/ve8.json \
        --out runs/mart_release_ve8/best.pth          # or --preset mart_ve8_official (a MART run's stage 2)
    python main.py --preset cten_ve8_official --root DATA/VE8 --eval-only --checkpoint runs/cten_release_ve8/best.pth
    python tools/predict.py clip.mp4 --checkpoint runs/cten_release_ve8/best.pth

Release formats (read from the releases' code; the state_dict as `torch.save(model.state_dict())` writes it, bare or
inside {'state_dict' | 'model' | 'module': ...}, with or without DataParallel's `module.` prefix):

| release | model | its keys -> this project's |
| --- | --- | --- |
| nku-zhichengzhang/CTEN | `VAANetErase` (models/vaanet_erase.py) | `resnet.{0,1,4-7}` -> `visual.{conv1,bn1,layer1-4}`, `a_resnet.{0,1,4-7}` -> `audio.trunk.{conv1,bn1,layer1-4}`, `a_fc` -> `audio.proj`, `nl.0` / `nl_a.0` -> `intra.v` / `intra.a`, `v2a_attn.linear_*` / `a2v_attn.linear_*` -> `inter.to_visual.*` / `inter.to_audio.*`, `ta_net.conv.0` (1, 2D, 1) -> `attention.w2` (1, 2D), `ta_net.conv.1` -> `attention.bn`, `ta_net.fc` -> `attention.w1`, `fc` -> `classifier` |
| nku-zhichengzhang/MART | `MBT` (models/mbt/MBT.py; main.py saves the EMA copy as best.ckpt) | `vid_model` -> `video` (`attn.{q,v}_bias` -> `attn.qkv.{q,v}_bias`), `ast_model.v` -> `audio`, `v_fc` / `a_fc` -> `head_v` / `head_a`, `bottleneck` |

The CTEN release concatenates its joint feature as [visual, audio] and so does models/cten.py: the joint attention's
W2 and the classifier map unchanged. Release tensors the evaluated forward never reads are dropped and listed
(`ignored`): the MBT's ImageNet/VideoMAE/AudioSet heads (`vid_model.head`, `ast_model.v.head`, `ast_model.v.head_dist`,
`ast_model.mlp_head`) and its sentiment heads (`v_s_fc`, `a_s_fc`). The project's MBT has one tensor the release has
not: the video mask token of MART's masked modelling, unused when evaluating, written as zeros (`filled`). Any other
missing, unexpected or mis-shaped key stops the conversion with the file named and the keys listed.

The written file holds 'model', 'config' (the preset's options, then the flags after `--`), 'method', 'arch',
'labels' (the annotation file's class order: the release's classifier rows follow its `labels` list), 'stage' and
'converted_from' (the release file's path, size, SHA-256, ignored and filled keys). After writing it, the tool loads
it back as --eval-only and tools/predict.py do (core/restore.py `load_trained`). It holds no training state: it
evaluates and predicts, it does not --resume. tools/check_release.py checks the mapped forward against the release
code itself.
"""
import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opts  # noqa: E402
from core import checkpoint as ckpt  # noqa: E402
from core import methods  # noqa: E402
from core.restore import checkpoint_record, load_trained  # noqa: E402
from core.weights import file_record  # noqa: E402
from datasets.annotations import load_annotation  # noqa: E402
from models.pretrained import CheckpointError, read_checkpoint, strip_prefix, unwrap_state_dict  # noqa: E402


@dataclass(frozen=True)
class ReleaseFormat:
    """How one release's state_dict keys become this project's.

    prefixes: (release prefix, project prefix), disjoint; a key takes the first that starts it.
    renames: (old, new) substrings replaced after the prefix (leaf names that differ).
    reshaped: project keys whose release tensor holds the same values in another shape (e.g. a 1x1 Conv1d kernel
        for a Linear weight).
    ignored: release prefixes of tensors the release's evaluated forward never reads (dropped, listed).
    filled: project keys the release has no tensor for, written as zeros (each with its reason).
    classifier: the project key whose first dimension is the number of classes.
    signature: a key only this release's files hold (to name the right preset when a file of the other is given).
    """
    name: str
    methods: tuple
    prefixes: tuple
    classifier: str
    signature: str
    renames: tuple = ()
    reshaped: tuple = ()
    ignored: tuple = ()
    filled: dict = field(default_factory=dict)


def _layers(release: str, project: str) -> tuple:
    """A torchvision-style ResNet held as nn.Sequential(conv1, bn1, relu, maxpool, layer1..4, avgpool)."""
    return ((f"{release}.0.", f"{project}.conv1."), (f"{release}.1.", f"{project}.bn1."),
            *((f"{release}.{i + 4}.", f"{project}.layer{i + 1}.") for i in range(4)))


CTEN_RELEASE = ReleaseFormat(
    name="CTEN release (VAANetErase)",
    methods=("cten",),
    prefixes=(*_layers("resnet", "visual"), *_layers("a_resnet", "audio.trunk"), ("a_fc.", "audio.proj."),
              ("nl.0.", "intra.v."), ("nl_a.0.", "intra.a."),
              ("v2a_attn.linear_", "inter.to_visual."), ("a2v_attn.linear_", "inter.to_audio."),
              ("ta_net.conv.0.", "attention.w2."), ("ta_net.conv.1.", "attention.bn."), ("ta_net.fc.", "attention.w1."),
              ("fc.", "classifier.")),
    reshaped=("attention.w2.weight",),  # Conv1d(2D, 1, 1) kernel (1, 2D, 1) -> Linear(2D, 1) weight (1, 2D)
    classifier="classifier.weight",
    signature="ta_net.fc.weight",
)

MBT_RELEASE = ReleaseFormat(
    name="MART release (MBT)",
    methods=("mbt", "mart"),
    prefixes=(("vid_model.", "video."), ("ast_model.v.", "audio."), ("v_fc.", "head_v."), ("a_fc.", "head_a."),
              ("bottleneck", "bottleneck")),
    renames=((".attn.q_bias", ".attn.qkv.q_bias"), (".attn.v_bias", ".attn.qkv.v_bias")),
    ignored=("vid_model.head.", "ast_model.v.head.", "ast_model.v.head_dist.", "ast_model.mlp_head.", "v_s_fc.",
             "a_s_fc."),
    filled={"video.mask_token": "MART's masked-modelling token; the release's MBT has none and evaluation never "
                                "reads it"},
    classifier="head_v.weight",
    signature="bottleneck",
)

FORMATS = {m: f for f in (CTEN_RELEASE, MBT_RELEASE) for m in f.methods}


def project_key(key: str, fmt: ReleaseFormat) -> Optional[str]:
    """The project key of a release key (None: no prefix of the format starts it)."""
    for old, new in fmt.prefixes:
        if key.startswith(old):
            out = new + key[len(old):]
            for a, b in fmt.renames:
                out = out.replace(a, b)
            return out
    return None


def _few(keys: list, n: int = 12) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def other_format(state: dict, fmt: ReleaseFormat) -> Optional[ReleaseFormat]:
    return next((f for f in (CTEN_RELEASE, MBT_RELEASE) if f is not fmt and f.signature in state), None)


def convert_state(state: dict, own: dict, fmt: ReleaseFormat, path) -> tuple:
    """A release state_dict (its `module.` prefix already stripped) -> (this project's state_dict, report).

    own: the project model's state_dict (only names and shapes are read: a model built on the meta device will do).
    report: {'ignored': release keys dropped, 'filled': project keys written as zeros}. Raises CheckpointError naming
    `path` and the missing, unexpected, mis-shaped or doubly mapped keys."""
    out, source, ignored, unexpected, shapes, twice = {}, {}, [], [], [], []
    for key, value in state.items():
        if key.startswith(fmt.ignored):
            ignored.append(key)
            continue
        new = project_key(key, fmt)
        if new is None or new not in own:
            unexpected.append(key if new is None else f"{key} (-> {new})")
            continue
        if new in source:
            twice.append(f"{source[new]} and {key} -> {new}")
            continue
        want = own[new].shape
        if value.shape != want and not (new in fmt.reshaped and value.numel() == want.numel()):
            shapes.append(f"{key} {tuple(value.shape)} -> {new} {tuple(want)}")
            source[new] = key
            continue
        out[new], source[new] = value.reshape(want), key
    missing = [k for k in own if k not in source and k not in fmt.filled]
    if missing or unexpected or shapes or twice:
        lines = [f"release checkpoint {path} does not fit the {fmt.name} format:"]
        for name, keys in (("missing keys (of this project's model)", missing), ("unexpected keys", unexpected),
                           ("shape mismatches", shapes), ("mapped twice", twice)):
            if keys:
                lines.append(f"  {len(keys)} {name}: {_few(keys)}")
        other = other_format(state, fmt)
        if other is not None:
            lines.append(f"  the file looks like a {other.name} checkpoint: pass a preset of "
                         f"{' / '.join(other.methods)}")
        elif shapes:
            lines.append("  a release trained with other options (classes, T, widths) needs the same options here: "
                         "pass them after `--` (e.g. -- --seq-len 12)")
        raise CheckpointError("\n".join(lines))
    filled = [k for k in own if k in fmt.filled]
    for k in filled:
        out[k] = torch.zeros(own[k].shape, dtype=own[k].dtype)
    return {k: out[k] for k in own}, {"ignored": ignored, "filled": filled}


def read_release(path, trusted: bool = False) -> dict:
    """The state_dict of a release file, `module.` stripped."""
    return strip_prefix(unwrap_state_dict(read_checkpoint(path, trusted), path), "module.")


def release_args(preset: str, annotation, main_args=()) -> argparse.Namespace:
    """main.py's options of `preset` (the method is the preset's family), with the data root beside `annotation` and
    `main_args` (main.py flags) on top."""
    owners = {p: r.name for r in methods.recipes() if r.name in FORMATS for p in r.presets if p.endswith("_official")}
    if preset not in owners:  # another preset builds another network, or feeds it other pixels
        raise ValueError(f"--preset {preset!r} is not one of the release presets: {', '.join(owners)}")
    owner = owners[preset]
    ann = Path(annotation)
    return opts.parse_args(["--method", owner, "--preset", preset, "--root", str(ann.parent), "--annotation", str(ann),
                            *main_args])


def class_names(annotation) -> list:
    """The class names of an annotation JSON in its `labels` order (the releases' class index order)."""
    return load_annotation(annotation)["labels"]


def release_classes(state: dict, fmt: ReleaseFormat) -> Optional[int]:
    """The number of classes of a release state_dict (rows of its classifier), None when it has none."""
    release_key = next((k for k in state if project_key(k, fmt) == fmt.classifier), None)
    return None if release_key is None else int(state[release_key].shape[0])


def convert(release_path, preset: str, annotation, out, main_args=(), trusted: bool = False) -> dict:
    """Converts `release_path`, writes `out` and loads it back as --eval-only does. Returns the report."""
    args = release_args(preset, annotation, main_args)
    recipe = methods.get(args.method)
    fmt = FORMATS[recipe.name]
    labels = class_names(annotation)
    state = read_release(release_path, trusted)
    rows = release_classes(state, fmt)
    if rows is not None and rows != len(labels):
        raise CheckpointError(f"release checkpoint {release_path} has a {rows}-class classifier, but {annotation} "
                              f"lists {len(labels)} classes; pass the annotation file the release was trained on")
    with torch.device("meta"):  # names and shapes only
        own = recipe.build_model(recipe.arch_of(args), len(labels)).state_dict()
    model_state, report = convert_state(state, own, fmt, release_path)
    args.weights = [{"flag": "tools/convert_release.py", **file_record(release_path)}]
    stage = recipe.stages(args)[-1].name
    source = {"release": fmt.name, **file_record(release_path), **report}
    ckpt.save_checkpoint(Path(out), model=model_state, epoch=None, converted_from=source,
                         **checkpoint_record(args, recipe, labels, stage))
    load_trained(out, torch.device("cpu"))  # as --eval-only and tools/predict.py read it
    return {**source, "out": str(out), "method": recipe.name, "stage": stage, "n_keys": len(model_state)}


def main(argv=None) -> int:
    own, main_args = opts.split_at_dashes(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="flags after `--` go to main.py's options (e.g. -- --seq-len 12)")
    p.add_argument("release", help="the release's trained checkpoint (a state_dict, e.g. saved by DataParallel)")
    p.add_argument("--preset", required=True, help="cten_*_official, mbt_*_official or mart_*_official")
    p.add_argument("--annotation", required=True, help="the annotation JSON the release was trained on (class order)")
    p.add_argument("--out", required=True, help="where to write the project checkpoint (e.g. runs/NAME/best.pth)")
    p.add_argument("--trust-weights", action="store_true",
                   help="full unpickling of the release file (only for a file from a source you trust)")
    cli = p.parse_args(own)
    try:
        report = convert(cli.release, cli.preset, cli.annotation, cli.out, main_args, cli.trust_weights)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{report['release']} {cli.release} (sha256 {report['sha256'][:12]}) -> {report['out']}: "
          f"{report['n_keys']} tensors, method {report['method']}"
          + (f", stage {report['stage']}" if report["stage"] else ""))
    print(f"  ignored (never read by the release's forward): {len(report['ignored'])}"
          + (f" ({_few(report['ignored'], 6)})" if report["ignored"] else ""))
    if report["filled"]:
        print(f"  filled with zeros (not in the release): {', '.join(report['filled'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
