"""What a method is: the `Method` step protocol the engine drives, the `Stage`s a run trains, and the `Recipe` that
ties a method's options, presets, model, inputs and stages together (core/methods/__init__.py registers them).

Adding a method is one model file under models/, one recipe file under core/methods/ that defines `RECIPE`, its
presets in that recipe, and tests; nothing else in the house names methods (README, "Adding a method").
"""
import abc
import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import torch


class Method(Protocol):
    """One training step and one prediction, for core/engine.py.

    train_step(model, batch, epoch) -> (scalar loss, {name: float}) where `model` may be DDP-wrapped;
    predict(model, batch) -> {'logits' (B, C), curve name -> (B, T) for each of `curve_names` it has}."""
    curve_names: Sequence[str]

    def train_step(self, model: torch.nn.Module, batch: dict, epoch: int) -> tuple: ...

    def predict(self, model: torch.nn.Module, batch: dict) -> dict: ...


@dataclass
class StageContext:
    """What a stage's step may need besides the options: the class polarity (C,) of +1/-1, the training dataset
    (for re-reading frames), the EMA copy (a teacher), and the stage's epochs."""
    polarity: torch.Tensor
    train_data: Any = None
    ema: Any = None
    epochs: int = 1


@dataclass
class Stage:
    """One training stage of a run.

    name: the run sub-folder it writes ('' = the run folder itself); epochs; select: choose best.pth on the
    validation subset (else the last epoch); text: the training data reads transcripts;
    model(base) -> the module this stage trains around the recipe's model `base` (default: base itself);
    method(args, ctx) -> the stage's `Method`;
    handoff(base, state, path): puts this stage's selected weights (`state`, a state_dict of the stage's module)
    into `base` before the next stage (default: a strict load);
    ema: the stage keeps an EMA copy when --ema-decay is set (False: never, whatever the option);
    inherit_optimizer(states) -> states: this stage's optimiser starts from the previous stage's per-parameter
    state ({parameter name: state} of its last epoch, mapped onto this stage's parameter names); None: a fresh
    optimiser."""
    name: str
    epochs: int
    method: Callable[[argparse.Namespace, StageContext], Method]
    select: bool = True
    text: bool = False
    model: Callable[[torch.nn.Module], torch.nn.Module] = lambda base: base
    handoff: Optional[Callable[[torch.nn.Module, dict, Path], None]] = None
    ema: bool = True
    inherit_optimizer: Optional[Callable[[dict], dict]] = None


@dataclass(frozen=True)
class WeightFlag:
    """A pretrained weight file a recipe's model expects: the option holding its path and what it must be."""
    dest: str
    expects: str
    metavar: str = "FILE"

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")


class Recipe(abc.ABC):
    """A method, found by name in the registry. Subclasses set the class attributes, must implement the abstract
    hooks (build_model, stages, predictor) and may override the others.

    name: the --method value; help: one line for --help; presets: {preset name: {option: value}} (each preset's
    'method' is filled in with `name`); arch: a dataclass whose fields are the options that fix the architecture
    (read from the options by field name, stored in every checkpoint, and restored from it for evaluation and
    prediction); cache: the method reads --feature-cache features instead of frames."""
    name: str = ""
    help: str = ""
    presets: dict = {}
    arch: type = None
    cache: bool = False

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        """The method's own option group(s). Options shared by several methods are added once (argparse refuses a
        second definition): a recipe that extends another calls the other's add_options only when it is alone."""

    def validate(self, args: argparse.Namespace) -> None:
        """Stops with a ValueError naming the flag when options do not fit together."""

    def describe(self, args: argparse.Namespace) -> str:
        """The method's choices a reader of the start line should see (e.g. CTEN's attention form); '' for none."""
        return ""

    def inputs(self, args: argparse.Namespace) -> dict:
        """Which modalities the dataset reads: {'audio': bool} (text is a property of the stage)."""
        return {"audio": True}

    @abc.abstractmethod
    def build_model(self, arch, n_classes: int) -> torch.nn.Module:
        """The network the run evaluates and predicts with, from the architecture dataclass alone."""

    def expected_weights(self, args: argparse.Namespace) -> list:
        """The WeightFlags of the pretrained files this run's model expects (a non-demo preset refuses to start
        without them unless --allow-random-init: core/weights.py)."""
        return []

    def load_pretrained(self, model: torch.nn.Module, args: argparse.Namespace) -> list:
        """Loads the pretrained weight files the options name into a freshly built model; returns one record per
        file (core.weights.load_weight: path, size, SHA-256, what was kept, ignored and initialised)."""
        return []

    @abc.abstractmethod
    def stages(self, args: argparse.Namespace) -> list:
        """The training stages, in order; the last one's selected model is the one tested."""

    def stage_of(self, state_dict: dict) -> Optional[str]:
        """The stage that wrote a checkpoint older than the 'stage' field, told from its weights (None: the last)."""
        return None

    def upgrade_state(self, model_state: dict, fmt: int, arch: dict) -> dict:
        """The weights of a checkpoint written in format `fmt` (core/restore.py FORMAT) laid out for today's model."""
        return model_state

    @abc.abstractmethod
    def predictor(self, args: argparse.Namespace, polarity: torch.Tensor) -> Method:
        """The step used for evaluation and prediction (its `predict`)."""

    # ------------------------------------------------------------------ shared helpers

    def arch_of(self, args: argparse.Namespace):
        """The architecture dataclass read from the options by field name."""
        return self.arch(**{f.name: getattr(args, f.name) for f in fields(self.arch)})

    def arch_names(self) -> tuple:
        return tuple(f.name for f in fields(self.arch))


@dataclass(frozen=True)
class InputArch:
    """Options every method's checkpoint stores: the input the network was trained on (the evaluation data is
    sampled with these)."""
    eval_seq_len: int
    snippet_duration: int
    sample_size: int
    audio_frames: int
    audio_features: str = "fbank"


INPUT_ARCH = tuple(f.name for f in fields(InputArch))

