"""One training loop and one evaluation loop for every method.

A method supplies `train_step(model, batch, epoch) -> (loss, logs)` and `predict(model, batch) -> outputs`
(outputs: 'logits' (B, C) and, where the method has them, per-segment curves (B, T) named in
`method.curve_names`). The engine moves batches to the device, runs autocast, accumulates gradients, steps the
optimiser and the EMA, stops on a non-finite loss, and gathers predictions across processes.
"""
import contextlib
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from core.detection import CLASS_CURVES
from core.distributed import DistInfo, all_gather_objects, all_reduce_sum
from core.ema import ModelEMA
from core.log import RunLogger


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class TrainContext:
    device: torch.device
    logger: RunLogger
    dist: DistInfo = field(default_factory=DistInfo)
    amp: str = "none"  # 'none' | 'fp16' | 'bf16' (CUDA only, unless cpu_autocast)
    accum_steps: int = 1
    clip_grad: float = 0.0
    ema: Optional[ModelEMA] = None
    scaler: Optional[torch.amp.GradScaler] = None
    global_step: int = 0
    progress: bool = True
    log_every: int = 10
    finished: Optional[tuple] = None  # (stage folder, epoch) of the last epoch trained and saved
    started: float = field(default_factory=time.monotonic)
    cpu_autocast: bool = False  # autocast on the CPU too (tests, tools/gpu_check.py --tiny: the AMP path without a GPU)

    def autocast(self):
        enabled = self.amp != "none" and (self.device.type == "cuda" or self.cpu_autocast)
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype, enabled=enabled)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def train_one_epoch(model, method, loader, optimizer, ctx: TrainContext, epoch: int, epochs: int = None) -> dict:
    """One pass over `loader`; returns the step's logs averaged over the epoch (and processes). `epochs`: the stage's
    epoch count, shown in the progress bar (epochs count from 0, as the epoch lines)."""
    model.train()
    sums: dict = {}
    n_steps = 0
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, desc=f"train epoch {epoch}" + (f"/{epochs - 1}" if epochs else ""), leave=False,
               disable=not (ctx.progress and ctx.dist.is_main))
    for i, batch in enumerate(bar):
        batch = to_device(batch, ctx.device)
        step_now = (i + 1) % ctx.accum_steps == 0 or (i + 1) == len(loader)
        with _grad_sync(model, step_now):  # DDP all-reduces only on the micro-step that steps the optimiser
            with ctx.autocast():
                loss, logs = method.train_step(model, batch, epoch)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"loss is {loss.item()} at epoch {epoch}, step {i} (videos {batch.get('video_id')}); "
                    "lower --lr, use --amp none or bf16, and resume from the last checkpoint with --resume")
            scaled = loss / ctx.accum_steps
            (ctx.scaler.scale(scaled) if ctx.scaler is not None else scaled).backward()
        if step_now:
            _optimizer_step(model, optimizer, ctx)
        ctx.global_step += 1
        n_steps += 1
        logs = {"loss": loss.item(), **logs}
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if ctx.global_step % ctx.log_every == 0 or i + 1 == len(loader):  # an epoch's last step always
            ctx.logger.scalars("train_step", logs, ctx.global_step)
        bar.set_postfix(loss=f"{logs['loss']:.3f}")
    totals = all_reduce_sum(torch.tensor([sums.get(k, 0.0) for k in sorted(sums)] + [n_steps], dtype=torch.float64))
    return {k: (totals[j] / max(totals[-1], 1)).item() for j, k in enumerate(sorted(sums))}


def _grad_sync(model, sync: bool):
    """DDP's no_sync() on accumulation micro-steps that do not step the optimiser; a no-op otherwise."""
    if sync or not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def _optimizer_step(model, optimizer, ctx: TrainContext) -> None:
    if ctx.scaler is not None:
        ctx.scaler.unscale_(optimizer)
    if ctx.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], ctx.clip_grad)
    if ctx.scaler is not None:
        ctx.scaler.step(optimizer)
        ctx.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ctx.ema is not None:
        ctx.ema.update(unwrap(model))


@torch.no_grad()
def recalibrate_bn(model, method, loader, ctx: TrainContext, trained: torch.nn.Module = None) -> int:
    """--bn-recalibrate: recomputes the running statistics of every trainable BatchNorm layer as the plain average
    over one pass of `loader` (those layers in train mode, everything else in eval mode, no gradients, the
    method's prediction forward), averaged over processes. After a few hundred steps with momentum 0.1 the running
    statistics still mix the initial ones and early, very different batches; evaluation then reads them and can
    predict one class for every video (issue 19, item 3). The RNG state is restored: training goes on as without
    the pass. `trained`: the module whose requires_grad tells which layers train (default: `model`; the EMA copy
has none). Returns the number of layers recalibrated."""
    net = unwrap(model)
    names = {n for n, m in unwrap(trained or model).named_modules() if isinstance(m, _BatchNorm)
             and m.track_running_stats and any(p.requires_grad for p in m.parameters(recurse=False))}
    layers = [m for n, m in net.named_modules() if n in names]
    if not layers:
        return 0
    net.eval()
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
        m.train()
    with torch.random.fork_rng(devices=[]):
        for batch in tqdm(loader, desc="bn recalibrate", leave=False, disable=not (ctx.progress and ctx.dist.is_main)):
            with ctx.autocast():
                method.predict(net, to_device(batch, ctx.device))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
        m.eval()
        if ctx.dist.enabled:
            m.running_mean.copy_(all_reduce_sum(m.running_mean) / ctx.dist.world_size)
            m.running_var.copy_(all_reduce_sum(m.running_var) / ctx.dist.world_size)
    return len(layers)


@torch.no_grad()
def predict_all(model, method, loader, ctx: TrainContext, desc: str = "eval") -> list:
    """Runs the method's prediction over a loader; returns one record per video, gathered from every process:
    {'video_id', 'label', 'probs' (C,), 'seg_times' (T, 2), 'duration' (seconds), curve name -> (T,) and, when the
    model gives them, the per-segment class curves of core.detection.CLASS_CURVES -> (T, C)}."""
    model.eval()
    records = []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not (ctx.progress and ctx.dist.is_main)):
        batch = to_device(batch, ctx.device)
        with ctx.autocast():
            out = method.predict(model, batch)
        probs = out["logits"].float().softmax(dim=1).cpu()
        for b, vid in enumerate(batch["video_id"]):
            rec = {"video_id": vid, "label": int(batch["label"][b]), "probs": probs[b].numpy(),
                   "seg_times": batch["seg_times"][b].cpu().numpy(),
                   "duration": float(batch["n_frames"][b]) / float(batch["fps"][b])}
            for name in (*method.curve_names, *CLASS_CURVES.values()):
                if name in out:
                    rec[name] = out[name][b].float().cpu().numpy()
            records.append(rec)
    gathered = [r for part in all_gather_objects(records) for r in part]
    seen, unique = set(), []
    for r in gathered:  # DistributedSampler pads the last batch with repeats
        if r["video_id"] not in seen:
            seen.add(r["video_id"])
            unique.append(r)
    return unique
