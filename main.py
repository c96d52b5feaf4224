"""Train and evaluate CTEN or the MART backbone (MBT) on VE-8 / Ekman-6 / the demo set.

    python main.py --preset demo                      # CTEN on the built-in demo set
    python main.py --preset cten_ve8 --root DATA/VE8 --visual-weights r3d101_KM_200ep.pth
    torchrun --nproc_per_node 2 main.py --preset cten_ve8 --root ...
    python main.py --preset cten_ve8 --root ... --eval-only --checkpoint runs/cten_ve8/best.pth

Model selection uses the validation subset carved from training; the test split is evaluated once, with the
selected checkpoint, on the original video only.
"""
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

import opts
from core import checkpoint as ckpt
from core.distributed import cleanup, init_distributed
from core.ema import ModelEMA
from core.engine import NonFiniteLoss, TrainContext, predict_all, train_one_epoch, unwrap
from core.evaluate import summarise
from core.log import RunLogger
from core.losses import classification_loss
from datasets.annotations import DataError, class_polarity
from datasets.video_emotion import VideoEmotionDataset, collate_samples
from models.build import MODEL_OPTIONS, build_model


def main(argv=None) -> int:
    args = opts.parse_args(argv)
    try:
        return run(args)
    except (DataError, FileNotFoundError, NonFiniteLoss) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        cleanup()


def run(args) -> int:
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    dist = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    seed_everything(args.seed + dist.rank)
    run_dir = Path(args.output) / args.name
    logger = RunLogger(run_dir, enabled=dist.is_main)
    if args.eval_only:
        return evaluate_checkpoint(args, device, dist, logger)

    data = build_datasets(args)
    labels = data["train"].labels
    polarity = torch.tensor(class_polarity(labels), device=device)
    model = build_model(args, len(labels)).to(device)
    method = build_method(args, polarity, data["train"])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(args, params)
    scheduler = build_scheduler(args, optimizer)
    ema = ModelEMA(model, args.ema_decay, args.ema_warmup) if args.ema_decay > 0 else None
    scaler = torch.amp.GradScaler("cuda") if (args.amp == "fp16" and device.type == "cuda") else None
    train_model = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    ctx = TrainContext(device=device, logger=logger, dist=dist, amp=args.amp, accum_steps=args.accum_steps,
                       clip_grad=args.clip_grad, ema=ema, scaler=scaler, progress=args.progress, log_every=args.log_every)

    start_epoch, best = 0, {"acc": -1.0, "epoch": -1}
    last_path = run_dir / "last.pth"
    if args.resume and last_path.is_file():
        state = ckpt.load_checkpoint(last_path)
        ckpt.load_model_state(model, state["model"], last_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best, ctx.global_step = state["epoch"] + 1, state["best"], state["global_step"]
        ckpt.set_rng_state(state["rng"])
        logger.print(f"resumed from {last_path} after epoch {state['epoch']}")
    elif dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        opts.save_config(args, run_dir / "config.json")
    logger.print(f"run directory: {run_dir}  (tensorboard --logdir {run_dir / 'tb'})")
    logger.print(data_summary(data))

    val_loader = make_loader(data["val"], args, dist, train=False) if data["val"] is not None else None
    for epoch in range(start_epoch, args.epochs):
        train_loader = make_loader(data["train"], args, dist, train=True, epoch=epoch)
        stats = train_one_epoch(train_model, method, train_loader, optimizer, ctx, epoch)
        scheduler.step()
        stats["lr"] = optimizer.param_groups[0]["lr"]
        logger.scalars("train", stats, epoch)
        eval_model = ema.module if ema is not None else model
        line = f"epoch {epoch}: " + " ".join(f"{k} {v:.4g}" for k, v in stats.items())
        if val_loader is not None:
            val = summarise(predict_all(eval_model, method, val_loader, ctx, desc="val"), labels, polarity.cpu())
            logger.scalars("val", {"acc": val["acc"], "polarity_acc": val["polarity_acc"]}, epoch)
            line += f" | val acc {val['acc']:.4f}"
            if val["acc"] > best["acc"]:
                best = {"acc": val["acc"], "epoch": epoch}
                if dist.is_main:
                    ckpt.save_checkpoint(run_dir / "best.pth", model=unwrap(eval_model).state_dict(), epoch=epoch,
                                         config=vars(args), labels=labels)
        logger.print(line)
        if dist.is_main:
            ckpt.save_checkpoint(last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                 scheduler=scheduler.state_dict(), ema=ema.state_dict() if ema else None,
                                 scaler=scaler.state_dict() if scaler else None, epoch=epoch, best=best,
                                 global_step=ctx.global_step, rng=ckpt.rng_state(), config=vars(args))
            if val_loader is None:  # no validation subset: the last epoch is the selected model
                ckpt.save_checkpoint(run_dir / "best.pth", model=unwrap(eval_model).state_dict(), epoch=epoch,
                                     config=vars(args), labels=labels)

    selected = ckpt.load_checkpoint(run_dir / "best.pth")
    ckpt.load_model_state(unwrap(model), selected["model"], run_dir / "best.pth")
    return report_test(args, model, method, data["test"], labels, polarity, ctx, logger,
                       selected_epoch=selected["epoch"], best_val=best["acc"])


def evaluate_checkpoint(args, device, dist, logger) -> int:
    if not args.checkpoint:
        raise FileNotFoundError("--eval-only needs --checkpoint PATH (a best.pth or last.pth written by main.py)")
    state = ckpt.load_checkpoint(args.checkpoint)
    for key in MODEL_OPTIONS:  # the architecture comes from the checkpoint, the data options from the flags
        if key in state.get("config", {}):
            setattr(args, key, state["config"][key])
    test = VideoEmotionDataset(**dataset_kwargs(args, "test"))
    labels = test.labels
    polarity = torch.tensor(class_polarity(labels), device=device)
    model = build_model(args, len(labels), pretrained=False).to(device)
    ckpt.load_model_state(model, state["model"], args.checkpoint)
    ctx = TrainContext(device=device, logger=logger, dist=dist, amp=args.amp, progress=args.progress)
    method = build_method(args, polarity, None)
    return report_test(args, model, method, test, labels, polarity, ctx, logger,
                       selected_epoch=state.get("epoch"), best_val=None)


def report_test(args, model, method, test_ds, labels, polarity, ctx, logger, selected_epoch, best_val) -> int:
    records = predict_all(model, method, make_loader(test_ds, args, ctx.dist, train=False), ctx, desc="test")
    gt = json.loads(Path(args.gt_segments).read_text()) if args.gt_segments and Path(args.gt_segments).is_file() else None
    result = summarise(records, labels, polarity.cpu(), gt_segments=gt, curves=method.curve_names,
                       det_rule=opts.detection_rule(args))
    result.update(protocol="test split, original video only, checkpoint selected on the validation subset"
                  if best_val is not None else "test split, original video only, --eval-only checkpoint",
                  selected_epoch=selected_epoch, best_val_acc=best_val, n_test_videos=len(records))
    if ctx.dist.is_main:
        logger.write_json("results.json", {k: v for k, v in result.items() if k != "per_video"})
        logger.write_json("predictions.json", result["per_video"])
        logger.print(f"test accuracy {result['acc']:.4f} ({len(records)} videos, chance {1 / len(labels):.3f}); "
                     f"polarity accuracy {result['polarity_acc']:.4f}")
        if "detection" in result:
            logger.print("detection mAP@tIoU: " + " ".join(f"{k} {v:.3f}" for k, v in result["detection"].items()))
        logger.print(f"results: {logger.run_dir / 'results.json'}")
    logger.close()
    return 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dataset_kwargs(args, subset: str) -> dict:
    train = subset == "train"
    return dict(root=args.root, annotation_path=args.annotation, subset=subset,
                seq_len=args.seq_len if train else args.eval_seq_len, snippet_duration=args.snippet_duration,
                sample_size=args.sample_size, training_aug=train, with_audio=args.method == "mbt" or args.modalities != "v",
                audio_frames=args.audio_frames, spec_augment=args.spec_augment and train,
                val_fraction=args.val_fraction, val_seed=args.val_seed, missing_audio=args.missing_audio,
                on_missing=args.on_missing_video, default_fps=args.default_fps)


def build_datasets(args) -> dict:
    return {"train": VideoEmotionDataset(**dataset_kwargs(args, "train")),
            "val": VideoEmotionDataset(**dataset_kwargs(args, "val")) if args.val_fraction > 0 else None,
            "test": VideoEmotionDataset(**dataset_kwargs(args, "test"))}


def data_summary(data: dict) -> str:
    parts = [f"{name} {len(ds)} videos" for name, ds in data.items() if ds is not None]
    skipped = [f"{name}: {ds.report()}" for name, ds in data.items() if ds is not None and ds.report()]
    return "data: " + ", ".join(parts) + ("" if not skipped else "\n  " + "\n  ".join(skipped))


def make_loader(ds, args, dist, train: bool, epoch: int = 0) -> DataLoader:
    """A fresh loader per training epoch whose order and worker seeds depend only on (seed, epoch), so a resumed
    run sees the same batches as an uninterrupted one."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    if dist.enabled:
        sampler = DistributedSampler(ds, shuffle=train, seed=args.seed, drop_last=False)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(ds, generator=gen) if train else None
    return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, shuffle=False, num_workers=args.workers,
                      collate_fn=collate_samples, generator=gen, drop_last=train and len(ds) > args.batch_size,
                      pin_memory=torch.cuda.is_available())


def build_method(args, polarity, train_ds):
    criterion = classification_loss(args.loss, polarity, args.pcce_lambda)
    if args.method == "cten":
        from core.methods.cten import CTENMethod
        return CTENMethod(criterion, erase=args.erase, theta=args.theta, rule=args.erase_rule, views=args.erase_views,
                          reduction=args.loss_reduction, read_frames=train_ds.read_frames if train_ds else None)
    from core.methods.mbt import MBTMethod
    return MBTMethod(criterion)


def build_optimizer(args, params):
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    cls = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=args.lr, weight_decay=args.weight_decay)


def build_scheduler(args, optimizer):
    if args.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1))
    if args.lr_schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.lr_steps, gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


if __name__ == "__main__":
    sys.exit(main())
