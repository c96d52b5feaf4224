"""A trained run back from its checkpoint: the configuration it was trained with, and its model ready to predict.

Every checkpoint main.py writes holds 'model' (a state_dict), 'config' (the resolved options), 'method', 'arch'
(the options that fix the architecture: the recipe's dataclass fields and the input shape, core/methods/base.py),
'stage' and 'labels'. Checkpoints written before 'method'/'arch' existed still restore: both are read from their
'config'. `--eval-only`, tools/predict.py and tools/visualize.py all go through `restore_args`.
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


def checkpoint_record(args, recipe, labels, stage: str) -> dict:
    """What every checkpoint of a run stores besides the weights and the training state."""
    arch = {**{k: getattr(args, k) for k in INPUT_ARCH}, **vars(recipe.arch_of(args))}
    return {"config": vars(args), "method": recipe.name, "arch": arch, "labels": list(labels), "stage": stage}


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
        raise CheckpointError(f"checkpoint {path} does not say which method trained it; pass --method")
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
    ckpt.load_model_state(model, state["model"], path)
    polarity = torch.tensor(run_polarity(labels, args.positive_classes, getattr(args, "polarity_file", None)),
                            device=device)
    return model.to(device).eval(), recipe.predictor(args, polarity), args, labels, state
