"""A whole run: the recipe's stages trained in turn, then the test split evaluated once with the selected model;
and `--eval-only` of a saved checkpoint. `main` is main.py's entry (options -> run -> exit status); tests call it
in-process."""
import json
import os
import random
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

import opts
from core import checkpoint as ckpt
from core import methods
from core.data import build_datasets, data_summary, dataset_kwargs, feature_cache, make_loader
from core.distributed import cleanup, init_distributed
from core.engine import NonFiniteLoss, TrainContext, predict_all
from core.evaluate import detection_lines, summarise
from core.log import RunLogger, wall_time
from core.methods.base import StageContext
from core.plots import confusion_figure, timeline_figure
from core.restore import checkpoint_record, eval_options, load_trained
from core.train import check_resume, fit
from core.weights import check_expected_weights, file_record
from datasets.annotations import load_annotation, run_polarity
from datasets.errors import DataError
from datasets.video_emotion import VideoEmotionDataset
from models.pretrained import CheckpointError


def main(argv=None) -> int:
    """Parses the options and runs; bad input ends with a one-line message and exit status 2."""
    args = opts.parse_args(argv)
    try:
        if args.eval_only:  # data, annotation, polarity and gt segments from the checkpoint unless flags give them
            args = eval_options(args, argv)
        return run(args)
    except KeyboardInterrupt as e:  # Ctrl-C: one line, no traceback
        print(f"\n{interrupted_message(args, argv, getattr(e, 'finished', None))}", file=sys.stderr)
        discard_failed_start(args)
        return 130
    except (DataError, CheckpointError, OSError, NonFiniteLoss, ValueError) as e:
        discard_failed_start(args)
        if os.environ.get("VEA_DEBUG"):
            raise
        print(f"error: {e}\n(set VEA_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    finally:
        cleanup()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def context(args) -> TrainContext:
    """Device, process group, seeds, and the logger of the run directory (claimed first: see `claim_run_dir`)."""
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    dist = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    seed_everything(args.seed + dist.rank)
    run_dir = eval_dir(args) if args.eval_only else Path(args.output) / args.name
    if dist.is_main:
        claim_run_dir(run_dir, args)
    if dist.enabled:
        torch.distributed.barrier()
    return TrainContext(device=device, logger=RunLogger(run_dir, enabled=dist.is_main), dist=dist, amp=args.amp,
                        accum_steps=args.accum_steps, clip_grad=args.clip_grad, progress=args.progress,
                        log_every=args.log_every)


RUN_FILES = ("config.json", "last.pth", "best.pth", "results.json", "done", "tb")


def failed_start(run_dir: Path) -> bool:
    """A folder left by a run that stopped before it started: nothing in it outside TensorBoard's first (empty)
    event files. Every run writes config.json before it trains or evaluates."""
    return run_dir.is_dir() and all("tb" in p.relative_to(run_dir).parts[:-1] for p in run_dir.rglob("*") if p.is_file())


def discard_failed_start(args) -> None:
    """After an error: removes the run directory this invocation made if the run never started, so the corrected
    command runs without --resume or --overwrite."""
    try:
        run_dir = eval_dir(args) if args.eval_only else Path(args.output) / args.name
    except (OSError, ValueError):
        return
    if failed_start(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)


def claim_run_dir(run_dir: Path, args) -> None:
    """A run directory is never silently reused: one that holds a run continues only with --resume, is replaced
    (emptied first, TensorBoard events included) only with --overwrite; evaluation never writes into a training
    run's folder, and replaces an earlier evaluation named by --name only with --overwrite. A folder left by a failed
    start (`failed_start`) holds nothing to keep and is replaced."""
    if failed_start(run_dir):
        shutil.rmtree(run_dir)
    held = sorted({n for n in RUN_FILES for _ in run_dir.glob(f"**/{n}")}) if run_dir.is_dir() else []
    if not held:
        return
    trained = any(run_dir.glob("**/last.pth"))
    if args.eval_only and trained:
        raise ValueError(f"--eval-only would write into the training run {run_dir}; leave --name out (results go "
                         "to <checkpoint dir>/eval_<file stem>/) or pass another --name")
    if args.resume and not args.eval_only:
        return
    if not args.overwrite:
        what = "an earlier evaluation" if args.eval_only else "a run"
        keep = "" if args.eval_only else "pass --resume to continue it, "
        raise ValueError(f"run directory {run_dir} already holds {what} ({', '.join(held)}); {keep}--overwrite to "
                         "replace it, or --name NAME for a new folder")
    shutil.rmtree(run_dir)


def eval_dir(args) -> Path:
    """Where --eval-only writes: --name under --output, else beside the checkpoint in eval_<file stem>/, or
    eval_<file stem>_2/, _3/, ... when an earlier evaluation holds that folder (never overwritten)."""
    if args.name:
        return Path(args.output) / args.name
    if not args.checkpoint:
        raise FileNotFoundError("--eval-only needs --checkpoint PATH (a best.pth or last.pth written by main.py)")
    ckpt_path = Path(args.checkpoint)
    first = ckpt_path.parent / f"eval_{ckpt_path.stem}"
    k, folder = 1, first
    while folder.exists() and not failed_start(folder):
        k += 1
        folder = first.with_name(f"{first.name}_{k}")
    return folder


def check_data(args) -> None:
    """The dataset root and the annotation file exist and read (before weights are asked for or a folder is made)."""
    root = Path(args.root)
    came = " (recorded in the checkpoint's config)" if getattr(args, "eval_sources", {}).get("root") == "checkpoint" else ""
    if not root.is_dir():
        raise DataError(root, f"dataset root not found{came}",
                        "pass --root the folder holding imgs/, mp3/ and the annotation JSON (tools/preprocess writes it)")
    load_annotation(args.annotation)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; `finished`: (stage folder, epoch) of the last epoch saved, or None."""

    def __init__(self, finished=None):
        super().__init__()
        self.finished = finished


def interrupted_message(args, argv, finished) -> str:
    """The one line a Ctrl-C ends with: where training stopped and the exact command that continues it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.eval_only:
        return f"interrupted; evaluation not finished; rerun: {shlex.join(['python', 'main.py', *argv])}"
    again = [a for a in argv if a not in ("--overwrite", "--no-resume", "--resume")] + ["--resume"]
    where = "before the first epoch finished"
    if finished:
        folder, epoch = finished
        stage = "" if Path(folder) == Path(args.output) / args.name else f" of {Path(folder).name}"
        where = f"after epoch {epoch}{stage}"
    return f"interrupted {where}; continue with: {shlex.join(['python', 'main.py', *again])}"


def run(args) -> int:
    check_data(args)  # before the run directory is claimed: nothing is written for a run that cannot start
    if not args.eval_only:
        check_expected_weights(methods.get(args.method).expected_weights(args), args)
    ctx = context(args)
    try:
        return evaluate_checkpoint(args, ctx) if args.eval_only else train_and_test(args, ctx)
    except KeyboardInterrupt:
        raise Interrupted(ctx.finished) from None


def train_and_test(args, ctx: TrainContext) -> int:
    recipe = methods.get(args.method)
    stages = recipe.stages(args)
    data = build_datasets(args, recipe, text=any(s.text for s in stages))
    labels = data["train"].labels
    polarity = torch.tensor(run_polarity(labels, args.positive_classes, args.polarity_file), device=ctx.device)
    model = recipe.build_model(recipe.arch_of(args), len(labels))
    args.weights = recipe.load_pretrained(model, args)  # recorded in config.json, checkpoints and results.json
    args.counts = {name: len(ds) if ds is not None else 0 for name, ds in data.items()}
    run_dir = ctx.logger.run_dir
    changed = check_resume(run_dir, args) if args.resume else {}
    if changed:  # recorded in config.json
        args.resumed_with_changes = changed
        ctx.logger.print(f"resuming with changed options (--resume-override): {changed}")
    if ctx.dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        opts.save_config(args, run_dir / "config.json")
    ctx.logger.print(start_line(args, ctx.device, stages, data))
    ctx.logger.print(f"run directory: {run_dir}  (tensorboard --logdir {run_dir})")
    for w in args.weights:
        ctx.logger.print(f"weights {w['flag']} {w['path']} sha256 {w['sha256'][:12]}: kept {w.get('kept', '-')}, "
                         f"initialised {len(w.get('initialised', []))}, ignored {len(w.get('ignored', []))}")
    stage_dir, best = train_stages(args, recipe, stages, model, data, polarity, ctx, run_dir)
    selected = ckpt.load_checkpoint(stage_dir / "best.pth")
    ckpt.load_model_state(model, selected["model"], stage_dir / "best.pth")
    issues = {name: ds.counts() for name, ds in data.items() if ds is not None and name != "test"}
    return report_test(args, model.to(ctx.device), recipe.predictor(args, polarity), data["test"], labels, polarity,
                       ctx, selected_epoch=selected["epoch"], best_val=best["acc"] if best else None,
                       data_issues=issues, history=best["history"] if best else None)


def start_line(args, device, stages: list, data: dict) -> str:
    """What the run is about to do: preset, device, epochs (per stage), optimiser, batch, workers, the method's own
    choices (Recipe.describe) and the videos."""
    epochs = " + ".join(f"{s.name} {s.epochs}" if s.name else str(s.epochs) for s in stages)
    own = methods.get(args.method).describe(args)
    return (f"start: {args.preset or args.method} ({args.method}) on {device}; epochs {epochs}; lr {args.lr:g} "
            f"({args.optimizer}, {args.lr_schedule}); batch {args.batch_size}; workers {args.workers}"
            + ("; --bn-recalibrate" if args.bn_recalibrate else "") + (f"; {own}" if own else "")
            + f"; {data_summary(data)}")


def train_stages(args, recipe, stages: list, model, data: dict, polarity, ctx, run_dir: Path) -> tuple:
    """Each stage in turn around `model`, in its sub-folder; a finished stage before the last is not retrained,
    and its selected weights are handed to the next. -> (the last stage's folder, its {'acc', 'epoch'} or None)."""
    best, stage_dir = None, run_dir
    for i, stage in enumerate(stages):
        stage_dir = run_dir / stage.name
        if i > 0:
            ctx.logger = RunLogger(stage_dir, enabled=ctx.dist.is_main)
        if not (stage.handoff and (stage_dir / "done").is_file()):
            make_method = lambda ema: stage.method(args, StageContext(polarity, data["train"], ema, stage.epochs))  # noqa: E731
            inherited = None
            if stage.inherit_optimizer is not None and i > 0:
                path = run_dir / stages[i - 1].name / "last.pth"
                previous = ckpt.load_checkpoint(path)
                if "optimizer_by_name" not in previous:
                    raise ValueError(f"{path} holds no per-parameter optimiser state (written before "
                                     f"{stage.name} could start from it); train {stages[i - 1].name} again (a new "
                                     "--name) or start from a fresh optimiser (e.g. --mart-stage2-start ema)")
                inherited = stage.inherit_optimizer(previous["optimizer_by_name"])
            best = fit(args, stage.model(model), make_method, data, polarity, ctx, stage_dir, stage.epochs,
                       select=stage.select and args.select == "val",
                       recalibrate=args.bn_recalibrate and i == len(stages) - 1,
                       record=checkpoint_record(args, recipe, data["train"].labels, stage.name), ema=stage.ema,
                       optimizer_state=inherited)
        if stage.handoff:
            selected = ckpt.load_checkpoint(stage_dir / "best.pth")
            stage.handoff(model, selected["model"], stage_dir / "best.pth")
    return stage_dir, best


def evaluate_checkpoint(args, ctx: TrainContext) -> int:
    """--eval-only: the checkpoint's model (architecture from the checkpoint, data options from the flags)."""
    model, method, args, labels, state = load_trained(args.checkpoint, ctx.device, base=args)
    # the evaluated file, then the pretrained files its training run started from (its config's record)
    args.weights = [{"flag": "--checkpoint", **file_record(args.checkpoint)}] + state["config"].get("weights", [])
    recipe = methods.get(args.method)
    test = VideoEmotionDataset(**dataset_kwargs(args, recipe, "test", cache=feature_cache(args, recipe)))
    if test.labels != labels:
        raise ValueError(f"the checkpoint's classes {labels} differ from {args.annotation}'s {test.labels}; pass the "
                         "annotation file the model was trained on")
    polarity = torch.tensor(run_polarity(labels, args.positive_classes, args.polarity_file), device=ctx.device)
    if ctx.dist.is_main:
        ctx.logger.run_dir.mkdir(parents=True, exist_ok=True)
        opts.save_config(args, ctx.logger.run_dir / "config.json")
    from_ckpt = [k for k, v in getattr(args, "eval_sources", {}).items() if v == "checkpoint"]
    ctx.logger.print(f"evaluating {args.checkpoint} on the test split of {args.annotation} into {ctx.logger.run_dir}"
                     + (f" ({', '.join(from_ckpt)} from the checkpoint's config)" if from_ckpt else ""))
    return report_test(args, model, method, test, labels, polarity, ctx, selected_epoch=state.get("epoch"),
                       best_val=None)


def report_test(args, model, method, test_ds, labels, polarity, ctx, selected_epoch, best_val,
                data_issues: dict = None, history: list = None) -> int:
    """Evaluates the test split once; results.json also counts every skip or substitution the data needed
    ('data_issues': per subset, see VideoEmotionDataset.counts) and holds the last stage's per-epoch training
    statistics ('train_history': e.g. CTEN's empty_key_views, empty_context_views, keyframe_fraction)."""
    logger = ctx.logger
    records = predict_all(model, method, make_loader(test_ds, args, ctx.dist, train=False), ctx, desc="test")
    gt = None
    if args.gt_segments:
        if not Path(args.gt_segments).is_file():
            raise FileNotFoundError(f"--gt-segments {args.gt_segments} does not exist (the demo writes key_spans.json)")
        gt = json.loads(Path(args.gt_segments).read_text())
    result = summarise(records, labels, polarity.cpu(), gt_segments=gt, curves=method.curve_names,
                       det_rule=opts.detection_rule(args), also=args.det_also)
    collapse = prediction_collapse(result["per_video"])
    result.update(protocol=protocol_record(args, best_val is not None or not args.eval_only),
                  preset=args.preset, weights=getattr(args, "weights", None), selected_epoch=selected_epoch,
                  best_val_acc=best_val, n_test_videos=len(records), prediction_collapse=collapse,
                  data_issues={**(data_issues or {}), "test": test_ds.counts()}, train_history=history or [])
    logger.scalars("test", {**{k: result[k] for k in ("acc", "mean_class_acc", "polarity_acc")},
                            **result.get("detection", {})}, selected_epoch or 0)
    if ctx.dist.is_main:
        logger.write_json("results.json", {k: v for k, v in result.items() if k != "per_video"})
        logger.write_json("predictions.json", result["per_video"])
        draw_figures(args, result, test_ds, labels, gt, logger)
        logger.print(f"test accuracy {result['acc']:.4f} ({len(records)} videos, chance {1 / len(labels):.3f}); "
                     f"mean class accuracy {result['mean_class_acc']:.4f}; polarity accuracy {result['polarity_acc']:.4f}")
        for line in detection_lines(result):  # the model's mAP@tIoU and the three baselines'
            logger.print(line)
        if gt is None:
            logger.print("detection not scored: no ground-truth segments; pass --gt-segments FILE (JSON video_id -> "
                         "[[start, end], ...])" + ("; the checkpoint's config records none" if args.eval_only else ""))
        last = (history or [{}])[-1]
        if "keyframe_fraction" in last:
            logger.print(f"erasing, last epoch: empty keyframe views {last['empty_key_views']:.3f}, empty context "
                         f"views {last['empty_context_views']:.3f}, keyframe fraction {last['keyframe_fraction']:.3f}")
        if test_ds.report():
            logger.print(f"test data: {test_ds.report()}")
        if collapse:
            logger.print(collapse_warning(collapse, args))
        logger.print(f"done in {wall_time(time.monotonic() - ctx.started)}: tested {tested_what(args, selected_epoch)};"
                     f" results: {logger.run_dir / 'results.json'}")
    logger.close()
    return 0


def prediction_collapse(per_video: list) -> dict:
    """{'class', 'videos'} when every prediction is the same class although the videos' labels are not; else None."""
    preds = {p["pred"] for p in per_video}
    if len(preds) != 1 or len({p["label"] for p in per_video}) < 2:
        return None
    return {"class": preds.pop(), "videos": len(per_video)}


def collapse_warning(collapse: dict, args) -> str:
    fix = "train more --epochs" if args.bn_recalibrate else ("retrain with --bn-recalibrate (BatchNorm running "
                                                             "statistics after a short run) or more --epochs")
    return (f"warning: every test prediction is {collapse['class']!r} ({collapse['videos']} videos, more than one "
            f"true class): the model has collapsed onto one class; {fix}")


def tested_what(args, epoch) -> str:
    if args.eval_only:
        return f"{args.checkpoint} (epoch {epoch})"
    rule = "the best on validation" if args.select == "val" else "the last"
    return f"epoch {epoch} ({rule})"


def protocol_record(args, trained: bool) -> dict:
    """What a number in results.json was measured on: the subsets' sizes, the training split's use and the
    selection rule (--select), the preset."""
    counts = getattr(args, "counts", None)
    if not trained:
        return {"test": "test split, original video only", "selection": f"--eval-only of {args.checkpoint}"}
    if args.select == "val":
        selection = (f"best epoch on the validation subset carved from training (--val-fraction {args.val_fraction}, "
                     f"--val-seed {args.val_seed}); trained on the rest")
    else:
        selection = ("last epoch; trained on the whole training split (the papers' protocol)" if args.val_fraction == 0
                     else f"last epoch; trained without the carved validation subset (--val-fraction "
                          f"{args.val_fraction})")
    return {"test": "test split, original video only", "select": args.select, "selection": selection,
            "val_fraction": args.val_fraction, "counts": counts, "preset": args.preset}


def draw_figures(args, result: dict, test_ds, labels, gt, logger) -> None:
    """The confusion matrix and the timelines of the first --vis-videos test videos, as PNGs and in TensorBoard.
    result: summarise's ('confusion', 'per_video', 'curves': the per-segment curves drawn)."""
    cm = confusion_figure(np.array(result["confusion"]), labels, path=logger.run_dir / "confusion.png")
    logger.image("test/confusion", cm, 0)
    by_id = {p["video_id"]: p for p in result["per_video"]}
    for i in range(min(args.vis_videos, len(test_ds))):
        sample = test_ds[i]
        pred = by_id[sample["video_id"]]
        times = sample["seg_times"].numpy()
        fi = sample["frame_indices"]
        video = test_ds.read_frames(i, fi[:, fi.shape[1] // 2:][:, :1], sample["aug"])  # (T, 3, 1, S, S) middle frames
        thumbs = [(float(t.mean()), video[j, :, 0].permute(1, 2, 0).numpy()) for j, t in enumerate(times)]
        curves = {k: np.array(pred[k]) for k in result.get("curves", ()) if k in pred}
        img = timeline_figure(thumbs, times, curves, [tuple(s[:3]) for s in pred["segments"]],
                              (gt or {}).get(sample["video_id"], []), pred["pred"], pred["label"],
                              probs=np.array(pred["probs"]), class_names=labels, title=sample["video_id"],
                              path=logger.run_dir / "timelines" / f"{sample['video_id']}.png")
        logger.image(f"test/timeline_{i}", img, 0)
