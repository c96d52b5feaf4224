"""Training one stage for its epochs: optimiser, schedule, EMA, AMP scaler, DDP, resume, validation, saving.

The per-iteration loop is core/engine.py; this module is the epoch loop around it and the save/restore helpers
(the run state of core/checkpoint.py)."""
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import opts
from core import checkpoint as ckpt
from core.data import make_loader
from core.ema import ModelEMA
from core.engine import TrainContext, predict_all, recalibrate_bn, train_one_epoch, unwrap
from core.evaluate import summarise
from core.log import wall_time
from core.restore import FORMAT, model_state


def build_optimizer(args, params):
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    cls = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=args.lr, weight_decay=args.weight_decay)


def build_scheduler(args, optimizer, epochs: int):
    if args.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if args.lr_schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.lr_steps, gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


@dataclass
class Progress:
    """Where a stage is: the next epoch to train, the selected model so far ({'acc', 'epoch'}) and every epoch's
    training statistics (the step's logs averaged, the epoch's lr, val acc: results.json's 'train_history')."""
    start_epoch: int = 0
    best: dict = None
    history: list = None

    def __post_init__(self):
        self.best = self.best or {"acc": -1.0, "epoch": -1}
        self.history = self.history or []


def prepare(args, model, ctx: TrainContext, epochs: int, ema: bool = True):
    """The optimiser over exactly the trainable parameters, its schedule, and the context's EMA (when --ema-decay is
    set and `ema`) and AMP scaler."""
    optimizer = build_optimizer(args, [p for p in model.parameters() if p.requires_grad])
    scheduler = build_scheduler(args, optimizer, epochs)
    ctx.ema = ModelEMA(model, args.ema_decay, args.ema_warmup) if (args.ema_decay > 0 and ema) else None
    ctx.scaler = torch.amp.GradScaler("cuda") if (args.amp == "fp16" and ctx.device.type == "cuda") else None
    ctx.global_step = 0
    return optimizer, scheduler


def named_optimizer_state(model, optimizer) -> dict:
    """{parameter name: the optimiser's state of that parameter} over the model's parameters it holds state for."""
    return {name: optimizer.state[p] for name, p in model.named_parameters() if p in optimizer.state}


def load_named_optimizer_state(model, optimizer, states: dict) -> int:
    """Sets the optimiser's state of each model parameter named in `states` (copied onto its device); the number
    set."""
    n = 0
    for name, p in model.named_parameters():
        if p.requires_grad and name in states:
            # moments onto the parameter's device; Adam's 0-d 'step' stays where Adam keeps it (the CPU)
            optimizer.state[p] = {k: (v.detach().clone().to(p.device) if v.dim() else v.clone())
                                  if torch.is_tensor(v) else v for k, v in states[name].items()}
            n += 1
    return n


def save_last(path: Path, model, optimizer, scheduler, ctx: TrainContext, epoch: int, progress: Progress,
              record: dict) -> None:
    ckpt.save_checkpoint(path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                         optimizer_by_name=named_optimizer_state(model, optimizer),
                         scheduler=scheduler.state_dict(), ema=ctx.ema.state_dict() if ctx.ema else None,
                         scaler=ctx.scaler.state_dict() if ctx.scaler else None, epoch=epoch, best=progress.best,
                         history=progress.history,
                         global_step=ctx.global_step, rng=ckpt.rng_state(), **record)


# Options that do not change what is trained: they may differ between a run and its --resume.
RESUME_FREE = {"workers", "progress", "log_every", "device", "output", "name", "resume", "resume_override",
               "overwrite", "eval_only", "checkpoint", "vis_videos", "gt_segments", "root", "annotation",
               "resumed_with_changes", "weights", "counts", "allow_random_init", "trust_weights"}


def changed_options(saved: dict, now: dict) -> dict:
    """{option: (saved, now)} of the options that change training and differ (detection options never do)."""
    return {k: (saved.get(k), v) for k, v in now.items()
            if k not in RESUME_FREE and not k.startswith("det_") and k in saved and saved[k] != v}


def check_resume(run_dir: Path, args) -> dict:
    """--resume: the options that change training must be those of the run's checkpoints (every stage's last.pth),
    unless --resume-override. Returns {option: [saved, now]} of what changed (empty when nothing did)."""
    changed = {}
    for path in sorted(run_dir.glob("**/last.pth")):
        changed.update(changed_options(ckpt.load_checkpoint(path).get("config", {}), vars(args)))
    if changed and not args.resume_override:
        listing = ", ".join(f"--{k.replace('_', '-')} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"--resume: {run_dir} was trained with other options ({listing}); resume with the saved "
                         "ones (its config.json), start a new run with --name, or pass --resume-override to go on "
                         "with the new ones")
    return {k: list(v) for k, v in changed.items()}


def resume(path: Path, model, optimizer, scheduler, ctx: TrainContext) -> Progress:
    """Restores everything save_last wrote; the run goes on after the saved epoch."""
    state = ckpt.load_checkpoint(path)
    if state.get("method") and model_state(state, state["method"]) is not state["model"]:
        raise ValueError(f"--resume: {path} was written by an older version of this code (checkpoint format "
                         f"{state.get('format', 1)}, current {FORMAT}), whose weight layout differs; its optimiser "
                         "state cannot be carried over: evaluate it with --eval-only (converted on load) or train anew")
    ckpt.load_model_state(model, state["model"], path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ctx.ema is not None:
        ctx.ema.load_state_dict(state["ema"])
    if ctx.scaler is not None and state.get("scaler"):
        ctx.scaler.load_state_dict(state["scaler"])
    ctx.global_step = state["global_step"]
    ckpt.set_rng_state(state["rng"])
    ctx.logger.print(f"resumed from {path} after epoch {state['epoch']}")
    return Progress(state["epoch"] + 1, state["best"], state.get("history"))


def validate(model, method, loader, ctx: TrainContext, labels, polarity, epoch: int, gt: dict = None,
             det_rule: dict = None) -> float:
    """The validation accuracy; TensorBoard's val/* also get detection mAP when `gt` (--gt-segments) holds every
    validation video."""
    records = predict_all(model, method, loader, ctx, desc="val")
    if gt is not None and not all(r["video_id"] in gt for r in records):
        gt = None
    val = summarise(records, labels, polarity.cpu(), gt_segments=gt, curves=method.curve_names if gt else (),
                    det_rule=det_rule)
    ctx.logger.scalars("val", {**{k: val[k] for k in ("acc", "mean_class_acc", "polarity_acc")},
                               **val.get("detection", {})}, epoch)
    return val["acc"]


def eta(elapsed: float, done: int, left: int) -> str:
    """' | 41 s/epoch, 1 min 22 s left': the epochs still to train at the mean pace so far (validation included)."""
    per = elapsed / max(done, 1)
    return f" | {per:.0f} s/epoch, {wall_time(per * left)} left"


def fit(args, model, make_method, data: dict, polarity, ctx: TrainContext, run_dir: Path, epochs: int,
        select: bool = True, record: dict = None, ema: bool = True, optimizer_state: dict = None,
        recalibrate: bool = False) -> dict:
    """Trains `model` for `epochs` with the Method that make_method(ema) returns, resuming from run_dir/last.pth
    with --resume; `ema`: keep an EMA copy when --ema-decay is set; `optimizer_state`: {parameter name: state} the
    optimiser starts from (a previous stage's; not on --resume, which restores this stage's own).
    Writes last.pth every epoch and best.pth: the best on the validation subset (select and a
    validation subset exists) or the last epoch. `record`: what every checkpoint stores besides the training state
    (config, architecture, labels, stage); recalibrate: --bn-recalibrate after every epoch
    (core.engine.recalibrate_bn). Returns {'acc' (None without validation), 'epoch'} of the selected model and 'history'."""
    dist, device, logger = ctx.dist, ctx.device, ctx.logger
    labels = data["train"].labels
    model = model.to(device)
    optimizer, scheduler = prepare(args, model, ctx, epochs, ema=ema)
    method = make_method(ctx.ema)
    train_model = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    last_path = run_dir / "last.pth"
    progress = Progress()
    if args.resume and last_path.is_file():
        progress = resume(last_path, model, optimizer, scheduler, ctx)
    elif optimizer_state:
        n = load_named_optimizer_state(model, optimizer, optimizer_state)
        logger.print(f"optimiser state of {n} parameters carried over from the previous stage")

    val_loader = make_loader(data["val"], args, dist, train=False) if (select and data["val"] is not None) else None
    gt = None  # --gt-segments: validation mAP in TensorBoard too
    if args.gt_segments and Path(args.gt_segments).is_file():
        gt = json.loads(Path(args.gt_segments).read_text())
    started = time.monotonic()
    for epoch in range(progress.start_epoch, epochs):
        lr = optimizer.param_groups[0]["lr"]  # the lr this epoch trains with, read before the schedule steps
        stats = train_one_epoch(train_model, method, make_loader(data["train"], args, dist, train=True, epoch=epoch),
                                optimizer, ctx, epoch, epochs)
        scheduler.step()
        stats["lr"] = lr
        logger.scalars("train", stats, epoch)
        eval_model = ctx.ema.module if ctx.ema is not None else model
        if recalibrate:  # --bn-recalibrate: validation and the saved checkpoints read the recomputed statistics
            recalibrate_bn(eval_model, method, make_loader(data["train"], args, dist, train=False), ctx, trained=model)
        line = f"epoch {epoch}: " + " ".join(f"{k} {v:.4g}" for k, v in stats.items())
        improved = val_loader is None
        if improved:  # the last epoch is selected; no validation accuracy (results.json's best_val_acc: null)
            progress.best = {"acc": None, "epoch": epoch}
        else:
            acc = validate(eval_model, method, val_loader, ctx, labels, polarity, epoch, gt, opts.detection_rule(args))
            line += f" | val acc {acc:.4f}"
            improved = progress.best["acc"] is None or acc > progress.best["acc"]
            if improved:
                progress.best = {"acc": acc, "epoch": epoch}
        logger.print(line + eta(time.monotonic() - started, epoch + 1 - progress.start_epoch, epochs - epoch - 1))
        progress.history.append({"epoch": epoch, **stats, **({"val_acc": acc} if val_loader is not None else {})})
        report = data["train"].report()  # every counted skip or substitution so far, each epoch
        if report:
            logger.print(f"  training data: {report}")
        if dist.is_main:
            if improved:
                ckpt.save_checkpoint(run_dir / "best.pth", model=unwrap(eval_model).state_dict(), epoch=epoch,
                                     **(record or {}))
            save_last(last_path, model, optimizer, scheduler, ctx, epoch, progress, record or {})
        ctx.finished = (run_dir, epoch)  # what a Ctrl-C message names (core/run.py)
    if dist.is_main:
        (run_dir / "done").write_text(json.dumps(progress.best))
    if dist.enabled:
        torch.distributed.barrier()
    return {**progress.best, "history": progress.history}
