"""A trained run back from its checkpoint: the configuration it was trained with, and its model ready to predict.

Every checkpoint main.py writes holds 'model' (a state_dict), 'config' (the resolved options), 'method', 'arch'
(the options that fix the architecture: the recipe's dataclass fields and the input shape, core/methods/base.py),
'stage' and 'labels'. Checkpoints written before 'method'/'arch' existed still restore: both are read from their
'config'. `--eval-only`, tools/predict.py and tools/visualize.py all go through `restore_args`.

`--eval-only --checkpoint PATH` needs nothing else: `eval_options` lays the flags given on its command line over the
checkpoint's training configuration (data root, annotation, polarity file, --gt-segments, detection rule, ...).
"""
import argparse
import copy
from pathlib import Path
from typing import Optional

import torch

import opts
from core import checkpoint as ckpt
from core import methods
from core.methods.base import INPUT_ARCH
from datasets.annotations import load_annotation, run_polarity
from models.pretrained import CheckpointError


# Options that describe this invocation, not the trained model: an evaluation never takes them from the checkpoint.
INVOCATION = ("eval_only", "checkpoint", "name", "output", "overwrite", "resume", "resume_override", "device",
              "workers", "progress", "log_every", "allow_random_init", "trust_weights")
# What an evaluation reads besides the model; each comes from the checkpoint's config unless a flag gives it.
EVAL_DATA = ("root", "annotation", "annotation_name", "polarity_file", "positive_classes", "gt_segments")
# The checkpoint format main.py writes. 2: CTEN concatenates its streams [visual, audio] (the release's order);
# 1 (no 'format' field): [audio, visual]. `model_state` brings an older checkpoint's weights to the current format.
FORMAT = 2


def checkpoint_file(path) -> Path:
    """A checkpoint file as given, or a run folder's best.pth (else last.pth; a run of stages: its last stage's)."""
    path = Path(path)
    if path.is_dir():
        for found in (path / "best.pth", path / "last.pth", *sorted(path.glob("*/best.pth"), reverse=True)):
            if found.is_file():
                return found
        raise FileNotFoundError(f"{path} holds no best.pth or last.pth; pass a run folder written by main.py "
                                "(runs/<name>/) or a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a best.pth / last.pth written by main.py, "
                                "or its run folder")
    return path


def given_options(argv) -> set:
    """The option names (dests) set on the command line `argv`, as opposed to a default or a preset."""
    parser = opts.build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_known_args(argv)[0]))


def eval_options(args, argv) -> argparse.Namespace:
    """--eval-only's options: the checkpoint's training configuration, under the flags given on the command line
    (and this invocation's own options, INVOCATION). The annotation file is --annotation, else ROOT/<annotation-name>
    when either was given, else the checkpoint's. Records in 'eval_sources' where each of EVAL_DATA came from."""
    if not args.checkpoint:
        raise FileNotFoundError("--eval-only needs --checkpoint PATH (a best.pth / last.pth written by main.py, or "
                                "its run folder)")
    path = checkpoint_file(args.checkpoint)
    given = given_options(argv)
    state = read_trained(path, args.method)
    out = opts.defaults()
    vars(out).update(state["config"])
    for k in {*given, *INVOCATION}:
        setattr(out, k, getattr(args, k))
    out.checkpoint = str(path)
    if "annotation" not in given and given & {"root", "annotation_name"}:
        out.annotation = str(Path(out.root) / out.annotation_name)
        given.add("annotation")
    out.eval_sources = {k: "flag" if k in given else "checkpoint" for k in EVAL_DATA}
    return out


def checkpoint_record(args, recipe, labels, stage: str) -> dict:
    """What every checkpoint of a run stores besides the weights and the training state."""
    arch = {**{k: getattr(args, k) for k in INPUT_ARCH}, **vars(recipe.arch_of(args))}
    return {"config": vars(args), "method": recipe.name, "arch": arch, "labels": list(labels), "stage": stage,
            "format": FORMAT}


def model_state(state: dict, method: str) -> dict:
    """A checkpoint's model weights in the current format (the recipe re-lays what an older format stored)."""
    arch = saved_arch(state["config"], method, state.get("arch"))
    return methods.get(method).upgrade_state(state["model"], state.get("format", 1), arch)


def saved_arch(config: dict, method: str, arch: Optional[dict] = None) -> dict:
    """The architecture options of a checkpoint: its 'arch', else (older checkpoints) the same names in its config."""
    if arch:
        return dict(arch)
    names = INPUT_ARCH + methods.get(method).arch_names()
    return {k: config[k] for k in names if k in config}


def restore_args(config: dict, method: Optional[str] = None, arch: Optional[dict] = None,
                 base: Optional[argparse.Namespace] = None, overrides: Optional[dict] = None) -> argparse.Namespace:
    """The options to rebuild and evaluate a trained model.

    base None (prediction, visualisation): opts' defaults, then the saved configuration. base given (--eval-only):
    base's options (data root, run name, ...). Then, in both cases, the saved method and architecture options,
    then `overrides`."""
    method = method or config.get("method")
    if base is None:
        args = opts.defaults()
        vars(args).update(config)
    else:
        args = copy.copy(base)
    args.method = method
    vars(args).update(saved_arch(config, method, arch))
    vars(args).update(overrides or {})
    return args


def saved_method(state: dict, path, fallback: Optional[str] = None) -> str:
    """The method a checkpoint was trained with: its 'method', its config's, else `fallback` (the --method flag)."""
    method = state.get("method") or state["config"].get("method") or fallback
    if method is None:
        raise CheckpointError(f"checkpoint {path} does not say which method trained it (main.py's checkpoints store "
                              "'method' or a config naming it); pass a best.pth / last.pth written by main.py")
    return method


def read_trained(path, fallback_method: Optional[str] = None) -> dict:
    """A checkpoint written by main.py, checked to be one (a bare state_dict or a foreign file is refused), with
    its 'method' filled in."""
    state = ckpt.load_checkpoint(path)
    if not (isinstance(state, dict) and isinstance(state.get("model"), dict) and isinstance(state.get("config"), dict)):
        raise CheckpointError(f"checkpoint {path} is not a best.pth / last.pth written by main.py (expected a dict with "
                              "'model' and 'config'; a bare state_dict has neither); pass one of those")
    state["method"] = saved_method(state, path, fallback_method)
    recipe = methods.get(state["method"])
    final = recipe.stages(restore_args(state["config"], recipe.name, state.get("arch")))[-1].name
    stage = state.get("stage") or recipe.stage_of(state["model"])
    if stage is not None and stage != final:
        raise CheckpointError(f"checkpoint {path} is from stage {stage!r} of a {recipe.name} run, which has no trained "
                              f"classifier to evaluate; pass the {final!r} checkpoint of the same run "
                              f"(<run>/{final}/best.pth)")
    return state


def checkpoint_labels(state: dict, args, path) -> list:
    """Class names: checkpoints store them; an old last.pth takes them from its run's annotation file."""
    if state.get("labels"):
        return list(state["labels"])
    if args.annotation and Path(args.annotation).is_file():
        return load_annotation(args.annotation)["labels"]
    raise CheckpointError(f"checkpoint {path} holds no class names and its annotation file {args.annotation} is not "
                          "here; pass the run's best.pth (it stores them)")


def load_trained(path, device: torch.device, base=None, overrides: Optional[dict] = None) -> tuple:
    """A checkpoint written by main.py -> (model in eval mode on device, predictor Method, args, labels, state)."""
    state = read_trained(path, base.method if base is not None else None)
    args = restore_args(state["config"], state["method"], state.get("arch"), base, overrides)
    recipe = methods.get(args.method)
    labels = checkpoint_labels(state, args, path)
    model = recipe.build_model(recipe.arch_of(args), len(labels))
    ckpt.load_model_state(model, model_state(state, args.method), path)
    polarity = torch.tensor(run_polarity(labels, args.positive_classes, getattr(args, "polarity_file", None)),
                            device=device)
    return model.to(device).eval(), recipe.predictor(args, polarity), args, labels, state
