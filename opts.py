"""Every option of the project: the shared groups here, each method's own groups and presets in its recipe
(core/methods/).

A preset fills defaults; flags given on the command line override it. The resolved configuration is saved as
`config.json` in the run directory. Paper-vs-official choices are flags (docs/divergences.md); the whole
configurations are the `_paper` and `_official` presets, every value with its source in docs/presets.md.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from core import methods
from core.detection import COMBINE, METHODS, NORMALISE, SCORE_SOURCE, SOURCES

B = argparse.BooleanOptionalAction
USAGE = Path(__file__).resolve().parent / "docs" / "usage.txt"  # main.py --help prints it (regenerate: python opts.py)
EPILOG = ("The defaults shown are the options' own; a preset replaces some of them: `--preset NAME --help` lists "
          "that preset's, `--preset NAME --show-config` prints the resolved configuration.")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """One '(default: X)' per option: none where the help states its default or the default is None or off; a fixed
    width, so that docs/usage.txt does not depend on the terminal."""

    def __init__(self, prog):
        super().__init__(prog, width=110, max_help_position=30)

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(**kwargs) -> argparse.ArgumentParser:
    """main.py's parser: the method and preset, the shared groups, every registered method's groups. A tool adds
    its own group to it instead of re-declaring main's flags."""
    kwargs.setdefault("description", "CTEN / MART video emotion recognition")
    kwargs.setdefault("formatter_class", HelpFormatter)
    kwargs.setdefault("epilog", EPILOG)
    p = argparse.ArgumentParser(**kwargs)
    p.add_argument("--method", choices=methods.names(), default="cten",
                   help="; ".join(f"{r.name}: {r.help}" for r in methods.recipes()))
    p.add_argument("--preset", default=None, help=f"named defaults: {', '.join(methods.presets())} "
                                                  "('demo' = <method>_demo)")
    add_data_options(p.add_argument_group("data"))
    for recipe in methods.recipes():
        recipe.add_options(p)
    add_training_options(p.add_argument_group("training"))
    add_run_options(p.add_argument_group("run"))
    g = p.add_argument_group("detection and visualisation")
    g.add_argument("--gt-segments", default=None, help="JSON video_id -> [[start, end], ...] to score detection")
    add_detection_options(g)
    g.add_argument("--vis-videos", type=int, default=4, help="test videos drawn as timelines in TensorBoard")
    return p


def add_data_options(g) -> None:
    g.add_argument("--root", default=None, help="dataset root holding imgs/, mp3/, srt/")
    g.add_argument("--annotation", default=None, help="annotation JSON (default: ROOT/<annotation-name>)")
    g.add_argument("--annotation-name", default="ve8.json",
                   help="annotation JSON under ROOT when --annotation is not given (ve8.json, ek6.json, caer.json, "
                        "or the --json name given to tools/preprocess)")
    g.add_argument("--seq-len", type=int, default=16, help="T, temporal segments per video in training")
    g.add_argument("--eval-seq-len", type=int, default=None, help="T in evaluation (default: --seq-len)")
    g.add_argument("--snippet-duration", type=int, default=16, help="L, consecutive frames per segment")
    g.add_argument("--sample-size", type=int, default=112, help="S, frame side after cropping")
    g.add_argument("--audio-features", choices=["fbank", "mfcc"], default="fbank",
                   help="per-segment audio features: Kaldi log-mel fbank (the official releases) or MFCC")
    g.add_argument("--audio-frames", type=int, default=100, help="audio feature frames (10 ms each) per segment")
    g.add_argument("--spec-augment", action=B, default=False, help="SpecAugment on training audio")
    g.add_argument("--val-fraction", type=float, default=0.1, help="share of training carved out for model selection")
    g.add_argument("--val-seed", type=int, default=0, help="seed of the carved validation subset's draw")
    g.add_argument("--select", choices=["val", "last"], default="val",
                   help="the tested model: the best epoch on the validation subset, or the last epoch (with "
                        "--val-fraction 0: the papers' protocol, training on the whole training split)")
    g.add_argument("--positive-classes", nargs="+", default=None,
                   help="positive-sentiment classes of a class set other than VE-8/Ekman-6 (PCCE, polarity accuracy)")
    g.add_argument("--polarity-file", default=None,
                   help="JSON {class: positive|negative|neutral} or CSV lines 'class,polarity' for every class "
                        "(PCCE and the polarity metrics; neutral classes count in neither); overrides "
                        "--positive-classes")
    g.add_argument("--missing-audio", choices=["error", "zeros"], default="error",
                   help="a video without usable audio: stop with an error, or use silence (counted and reported)")
    g.add_argument("--on-missing-video", choices=["error", "skip"], default="error",
                   help="an annotated video without a frame folder: stop, or skip it (counted and reported)")
    g.add_argument("--default-fps", type=float, default=30.0, help="fps when neither an fps file nor audio tells it")
    g.add_argument("--feature-cache", default=None,
                   help="folder written by tools/extract_features.py: the loaders return cached frozen-backbone "
                        "features instead of frames (methods that support it; the end-to-end path stays the "
                        "reference)")
    g.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes (default: min(4, the CPU cores this process may use))")
    g.add_argument("--decode-device", choices=["cpu", "cuda"], default="cpu",
                   help="where CTEN's re-sampled erased views are decoded: cpu (PIL in threads) or cuda (the JPEG "
                        "bytes read in threads, decoded batched with torchvision's decode_jpeg on the GPU; falls "
                        "back to cpu without CUDA)")


def add_training_options(g) -> None:
    g.add_argument("--epochs", type=int, default=100, help="training epochs (MART: of stage 2)")
    g.add_argument("--batch-size", type=int, default=32, help="videos per optimiser step and process")
    g.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="sgd",
                   help="the CTEN paper says SGD; the official code Adam")
    g.add_argument("--lr", type=float, default=2e-4, help="learning rate (the first epoch's)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay (AdamW: decoupled)")
    g.add_argument("--lr-schedule", choices=["constant", "cosine", "step"], default="constant",
                   help="lr over the epochs: constant, cosine decay to 0, or divided by 10 at --lr-steps")
    g.add_argument("--lr-steps", type=int, nargs="*", default=[], help="epochs at which 'step' divides lr by 10")
    g.add_argument("--loss", choices=["ce", "pcce"], default="ce",
                   help="cross-entropy, or polarity-consistent cross-entropy (CTEN Eq. 12)")
    g.add_argument("--pcce-lambda", type=float, default=0.5,
                   help="PCCE: a sample's CE is multiplied by 1 + lambda when its prediction has the opposite polarity")
    g.add_argument("--accum-steps", type=int, default=1, help="gradient accumulation")
    g.add_argument("--clip-grad", type=float, default=0.0, help="gradient norm clipping (0: off)")
    g.add_argument("--amp", choices=["none", "fp16", "bf16"], default="bf16", help="mixed precision (CUDA only)")
    g.add_argument("--ema-decay", type=float, default=0.0, help="EMA of the weights, evaluated and saved (0: off)")
    g.add_argument("--ema-warmup", type=float, default=2000.0, help="EMA decay warm-up in updates")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, sampling and augmentation")
    g.add_argument("--bn-recalibrate", action="store_true",
                   help="after every epoch, recompute the running statistics of trainable BatchNorm layers over "
                        "the training videos before validation, saving and testing (short runs otherwise can "
                        "predict one class for every video; README 'Short runs')")


def add_run_options(g) -> None:
    g.add_argument("--output", default="runs", help="parent folder of run directories")
    g.add_argument("--name", default=None, help="run directory name (default: <preset or method>)")
    g.add_argument("--resume", action=B, default=False, help="continue from <run dir>/last.pth if present")
    g.add_argument("--resume-override", action="store_true",
                   help="with --resume: go on although options that change training differ from the checkpoint's "
                        "(refused otherwise; config.json then records the new values and what changed)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory of the same name (refused otherwise)")
    g.add_argument("--eval-only", action="store_true",
                   help="evaluate --checkpoint on the test split, into --name or <checkpoint dir>/eval_<file stem>")
    g.add_argument("--checkpoint", default=None,
                   help="with --eval-only: the checkpoint (best.pth, last.pth or a run folder) to evaluate")
    g.add_argument("--allow-random-init", action="store_true",
                   help="let a non-demo preset train without the pretrained weight files it expects (random init)")
    g.add_argument("--trust-weights", action="store_true",
                   help="read weight files with full unpickling (can run code from the file; only for files from a "
                        "source you trust); off: tensors and plain containers only")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when available")
    g.add_argument("--progress", action=B, default=True, help="tqdm progress bars")
    g.add_argument("--log-every", type=int, default=10,
                   help="TensorBoard train_step/* every this many steps (and each epoch's last step)")
    g.add_argument("--show-config", action="store_true",
                   help="print the resolved configuration (preset, then flags) as JSON and exit")


def add_detection_options(g) -> None:
    """The --det-* flags of the detection rule (core/detection.py), shared with tools/predict.py."""
    g.add_argument("--det-method", choices=METHODS, default="oic",
                   help="oic: multi-threshold proposals scored by outer-inner contrast, then NMS; threshold: the "
                        "single-threshold rule (with --det-source attention, the paper-literal path)")
    g.add_argument("--det-source", choices=SOURCES, default="auto",
                   help="cas: the classifier on each segment's features, for the predicted class; tcam: the same "
                        "weighted by the temporal attention (each segment's share of the logit); attention: the "
                        "modality attentions combined by --det-combine; auto: cas when the model has it")
    g.add_argument("--det-also", choices=SOURCES[1:], nargs="*", default=[],
                   help="further score sources scored by the same rule and printed beside the main one")
    g.add_argument("--det-thresholds", type=float, nargs="+", default=[i / 10 for i in range(1, 10)],
                   help="oic: thresholds on the min-max normalised curve, each giving proposals")
    g.add_argument("--det-margin", type=float, default=0.25, help="oic: outer margin, as a share of the proposal length")
    g.add_argument("--det-nms-iou", type=float, default=0.5, help="oic: proposals overlapping a better one more are dropped")
    g.add_argument("--det-upsample", type=int, default=4, help="oic: curve bins per segment (linear interpolation)")
    g.add_argument("--det-combine", choices=COMBINE, default="min",
                   help="how the modality curves combine after min-max normalisation (min = the erasing rule)")
    g.add_argument("--det-normalise", choices=NORMALISE, default="minmax",
                   help="threshold rule: how each curve is normalised before --det-threshold")
    g.add_argument("--det-threshold", type=float, default=0.5, help="segments at or above it are emotional")
    g.add_argument("--det-merge-gap", type=float, default=0.0, help="seconds between segments that still merge")
    g.add_argument("--det-min-len", type=float, default=0.0, help="seconds; shorter detections are dropped")
    g.add_argument("--det-score", choices=["mean", "max"], default="mean",
                   help="a detection's score: the mean or the max of the curve over it")
    g.add_argument("--det-score-source", choices=SCORE_SOURCE, default="normalised",
                   help="the curve a detection's score reads: the normalised one or the raw one")
    g.add_argument("--det-class-prob", action=B, default=True, help="multiply scores by the predicted class probability")


def parse_args(argv=None, parser: argparse.ArgumentParser = None) -> argparse.Namespace:
    """Flags over the preset's values over the defaults, then the derived values (annotation path, eval T, run
    name) and the method's own checks. `parser`: build_parser() extended by a tool (default: main.py's)."""
    parser = parser or build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    first, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])  # help after the preset
    if first.preset:
        presets = methods.presets()
        name = f"{first.method}_demo" if first.preset == "demo" else first.preset
        if name not in presets:
            parser.error(f"unknown preset {first.preset!r}; choose from {', '.join(presets)} or 'demo'")
        parser.set_defaults(**presets[name])
    args = parser.parse_args(argv)
    if args.preset == "demo":
        args.preset = f"{args.method}_demo"
    if args.annotation is None and args.root is not None:
        args.annotation = str(Path(args.root) / args.annotation_name)
    if args.eval_seq_len is None:
        args.eval_seq_len = args.seq_len
    if args.name is None and not args.eval_only:
        args.name = args.preset or args.method
    if args.workers is None:
        args.workers = default_workers()
    if getattr(args, "show_config", False):  # before the checks: a preset's values need no --root
        print(json.dumps(vars(args), indent=2, sort_keys=True))
        parser.exit(0)
    if args.root is None and not args.eval_only:  # --eval-only takes it from the checkpoint (core/restore.py)
        parser.error("--root is required (or a preset that sets it, e.g. --preset demo)")
    if args.select == "val" and args.val_fraction <= 0 and not args.eval_only:
        parser.error("--select val needs a validation subset but --val-fraction is 0: pass --select last (the "
                     "papers' protocol: the whole training split, the last epoch tested) or --val-fraction > 0")
    try:
        methods.get(args.method).validate(args)
    except ValueError as e:
        parser.error(str(e))
    return args


def default_workers() -> int:
    """min(4, the CPU cores this process may use): more workers than cores only makes PyTorch warn."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def render_help() -> str:
    """main.py --help as docs/usage.txt holds it (the registered methods' options included)."""
    return build_parser(prog="main.py").format_help()


def defaults() -> argparse.Namespace:
    """Every option at its default (no preset, no flag; --workers resolved): the base a saved configuration is laid
    over."""
    args = build_parser().parse_args([])
    args.workers = default_workers()
    return args


def detection_rule(args: argparse.Namespace) -> dict:
    """Keyword options of core.detection.detect_batch (the rule is documented in core/detection.py)."""
    return dict(combine=args.det_combine, use_class_prob=args.det_class_prob, threshold=args.det_threshold,
                normalise=args.det_normalise, merge_gap=args.det_merge_gap, min_len=args.det_min_len,
                score=args.det_score, score_source=args.det_score_source, method=args.det_method,
                source=args.det_source, oic=dict(thresholds=tuple(args.det_thresholds), margin=args.det_margin,
                                                 nms_iou=args.det_nms_iou, upsample=args.det_upsample))


def split_at_dashes(argv) -> tuple:
    """A tool's own arguments and, after `--`, the main.py flags it passes through: (own, main_args)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def save_config(args: argparse.Namespace, path: Path) -> None:
    Path(path).write_text(json.dumps(vars(args), indent=2, sort_keys=True))


if __name__ == "__main__":  # python opts.py: regenerates docs/usage.txt after an option changes
    USAGE.write_text(render_help())
    print(f"wrote {USAGE}")
