"""Train and evaluate CTEN, the MART backbone (MBT) or MART on VE-8 / Ekman-6 / the demo set.

    python main.py --preset demo                      # CTEN on the built-in demo set
    python main.py --preset cten_ve8 --root DATA/VE8 --visual-weights r3d101_KM_200ep.pth
    torchrun --nproc_per_node 2 main.py --preset cten_ve8 --root ...
    python main.py --preset cten_ve8 --root ... --eval-only --checkpoint runs/cten_ve8/best.pth

Model selection uses the validation subset carved from training; the test split is evaluated once, with the
selected checkpoint, on the original video only. `--method mart` runs stage 1 (masked affective representation
learning, run dir stage1/) and then stage 2 (supervised MBT training from the stage-1 backbone, stage2/).
"""
import json
import os
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
from core.plots import confusion_figure, timeline_figure
from datasets.annotations import DataError, class_polarity
from datasets.feature_cache import FeatureCache, cache_expectation, grid_lookup
from datasets.video_emotion import VideoEmotionDataset, collate_samples
from models.build import MODEL_OPTIONS, build_model, build_stage1
from models.checkpoints import CheckpointError
from models.mart import mbt_state_from_mart


def main(argv=None) -> int:
    args = opts.parse_args(argv)
    try:
        return run(args)
    except (DataError, CheckpointError, FileNotFoundError, NonFiniteLoss, ValueError) as e:
        if os.environ.get("VEA_DEBUG"):
            raise
        print(f"error: {e}\n(set VEA_DEBUG=1 for the traceback)", file=sys.stderr)
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
    ctx = TrainContext(device=device, logger=logger, dist=dist, amp=args.amp, accum_steps=args.accum_steps,
                       clip_grad=args.clip_grad, progress=args.progress, log_every=args.log_every)
    if args.eval_only:
        return evaluate_checkpoint(args, ctx)

    data = build_datasets(args)
    labels = data["train"].labels
    polarity = torch.tensor(class_polarity(labels, args.positive_classes), device=device)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        opts.save_config(args, run_dir / "config.json")
    logger.print(f"run directory: {run_dir}  (tensorboard --logdir {run_dir})")
    logger.print(data_summary(data))

    model = build_model(args, len(labels))
    kind = "cten" if args.method == "cten" else "mbt"
    if args.method == "mart":
        stage1_dir = run_dir / "stage1"
        if not (stage1_dir / "done").is_file():
            fit(args, build_stage1(args, model, len(labels)), "mart", data, polarity, ctx, stage1_dir,
                args.stage1_epochs, select=False)
        # stage 2 starts from the selected stage-1 backbone (the EMA copy when --ema-decay is set)
        state = ckpt.load_checkpoint(stage1_dir / "best.pth")
        ckpt.load_model_state(model, mbt_state_from_mart(state["model"], stage1_dir / "best.pth"), stage1_dir / "best.pth")
        run_dir = run_dir / "stage2"
        ctx.logger = logger = RunLogger(run_dir, enabled=dist.is_main)
    best = fit(args, model, kind, data, polarity, ctx, run_dir, args.epochs)

    selected = ckpt.load_checkpoint(run_dir / "best.pth")
    ckpt.load_model_state(model, selected["model"], run_dir / "best.pth")
    method = build_method(args, kind, polarity, None)
    return report_test(args, model.to(device), method, data["test"], labels, polarity, ctx,
                       selected_epoch=selected["epoch"], best_val=best["acc"])


def fit(args, model, kind: str, data: dict, polarity, ctx: TrainContext, run_dir: Path, epochs: int,
        select: bool = True) -> dict:
    """Trains `model` with the `kind` method for `epochs`, resuming from run_dir/last.pth with --resume. Writes
    last.pth every epoch and best.pth: the best on the validation subset (select=True and a validation subset
    exists) or the last epoch. Returns {'acc', 'epoch'} of the selected model."""
    dist, device, logger = ctx.dist, ctx.device, ctx.logger
    labels = data["train"].labels
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(args, params)
    scheduler = build_scheduler(args, optimizer, epochs)
    ctx.ema = ModelEMA(model, args.ema_decay, args.ema_warmup) if args.ema_decay > 0 else None
    ctx.scaler = torch.amp.GradScaler("cuda") if (args.amp == "fp16" and device.type == "cuda") else None
    ctx.global_step = 0
    method = build_method(args, kind, polarity, data["train"], ctx.ema, epochs)
    train_model = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)

    start_epoch, best = 0, {"acc": -1.0, "epoch": -1}
    last_path = run_dir / "last.pth"
    if args.resume and last_path.is_file():
        state = ckpt.load_checkpoint(last_path)
        ckpt.load_model_state(model, state["model"], last_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ctx.ema is not None:
            ctx.ema.load_state_dict(state["ema"])
        if ctx.scaler is not None and state.get("scaler"):
            ctx.scaler.load_state_dict(state["scaler"])
        start_epoch, best, ctx.global_step = state["epoch"] + 1, state["best"], state["global_step"]
        ckpt.set_rng_state(state["rng"])
        logger.print(f"resumed from {last_path} after epoch {state['epoch']}")

    val_loader = make_loader(data["val"], args, dist, train=False) if (select and data["val"] is not None) else None
    for epoch in range(start_epoch, epochs):
        train_loader = make_loader(data["train"], args, dist, train=True, epoch=epoch)
        stats = train_one_epoch(train_model, method, train_loader, optimizer, ctx, epoch)
        scheduler.step()
        stats["lr"] = optimizer.param_groups[0]["lr"]
        logger.scalars("train", stats, epoch)
        eval_model = ctx.ema.module if ctx.ema is not None else model
        line = f"epoch {epoch}: " + " ".join(f"{k} {v:.4g}" for k, v in stats.items())
        improved = val_loader is None
        if val_loader is not None:
            val = summarise(predict_all(eval_model, method, val_loader, ctx, desc="val"), labels, polarity.cpu())
            logger.scalars("val", {k: val[k] for k in ("acc", "mean_class_acc", "polarity_acc")}, epoch)
            line += f" | val acc {val['acc']:.4f}"
            improved = val["acc"] > best["acc"]
            if improved:
                best = {"acc": val["acc"], "epoch": epoch}
        logger.print(line)
        if dist.is_main:
            if improved:
                ckpt.save_checkpoint(run_dir / "best.pth", model=unwrap(eval_model).state_dict(), epoch=epoch,
                                     config=vars(args), labels=labels)
            ckpt.save_checkpoint(last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                 scheduler=scheduler.state_dict(), ema=ctx.ema.state_dict() if ctx.ema else None,
                                 scaler=ctx.scaler.state_dict() if ctx.scaler else None, epoch=epoch, best=best,
                                 global_step=ctx.global_step, rng=ckpt.rng_state(), config=vars(args))
    if dist.is_main:
        (run_dir / "done").write_text(json.dumps(best))
    if dist.enabled:
        torch.distributed.barrier()
    return best


def evaluate_checkpoint(args, ctx: TrainContext) -> int:
    if not args.checkpoint:
        raise FileNotFoundError("--eval-only needs --checkpoint PATH (a best.pth or last.pth written by main.py)")
    state = ckpt.load_checkpoint(args.checkpoint)
    for key in MODEL_OPTIONS:  # the architecture comes from the checkpoint, the data options from the flags
        if key in state.get("config", {}):
            setattr(args, key, state["config"][key])
    if args.method == "mart":  # a MART run's evaluated model is its stage-2 MBT
        args.method = "mbt"
    test = VideoEmotionDataset(**dataset_kwargs(args, "test", open_feature_cache(args)))
    labels = test.labels
    polarity = torch.tensor(class_polarity(labels, args.positive_classes), device=ctx.device)
    model = build_model(args, len(labels), pretrained=False).to(ctx.device)
    ckpt.load_model_state(model, state["model"], args.checkpoint)
    if ctx.dist.is_main:
        ctx.logger.run_dir.mkdir(parents=True, exist_ok=True)
        opts.save_config(args, ctx.logger.run_dir / "config.json")
    method = build_method(args, args.method, polarity, None)
    return report_test(args, model, method, test, labels, polarity, ctx, selected_epoch=state.get("epoch"), best_val=None)


def report_test(args, model, method, test_ds, labels, polarity, ctx, selected_epoch, best_val) -> int:
    logger = ctx.logger
    records = predict_all(model, method, make_loader(test_ds, args, ctx.dist, train=False), ctx, desc="test")
    gt = None
    if args.gt_segments:
        if not Path(args.gt_segments).is_file():
            raise FileNotFoundError(f"--gt-segments {args.gt_segments} does not exist (the demo writes key_spans.json)")
        gt = json.loads(Path(args.gt_segments).read_text())
    result = summarise(records, labels, polarity.cpu(), gt_segments=gt, curves=method.curve_names,
                       det_rule=opts.detection_rule(args))
    result.update(protocol="test split, original video only, checkpoint selected on the validation subset"
                  if best_val is not None else "test split, original video only, --eval-only checkpoint",
                  selected_epoch=selected_epoch, best_val_acc=best_val, n_test_videos=len(records))
    if ctx.dist.is_main:
        logger.write_json("results.json", {k: v for k, v in result.items() if k != "per_video"})
        logger.write_json("predictions.json", result["per_video"])
        draw_figures(args, result, test_ds, labels, gt, logger)
        logger.print(f"test accuracy {result['acc']:.4f} ({len(records)} videos, chance {1 / len(labels):.3f}); "
                     f"mean class accuracy {result['mean_class_acc']:.4f}; polarity accuracy {result['polarity_acc']:.4f}")
        if "detection" in result:
            logger.print("detection mAP@tIoU: " + " ".join(f"{k} {v:.3f}" for k, v in result["detection"].items()))
        logger.print(f"results: {logger.run_dir / 'results.json'}")
    logger.close()
    return 0


def draw_figures(args, result: dict, test_ds, labels, gt, logger) -> None:
    """The confusion matrix and the timelines of the first --vis-videos test videos, as PNGs and in TensorBoard."""
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
        curves = {k: np.array(v) for k, v in pred.items() if k.startswith(("att_", "degree_"))}
        img = timeline_figure(thumbs, times, curves, [tuple(s[:3]) for s in pred["segments"]],
                              (gt or {}).get(sample["video_id"], []), pred["pred"], pred["label"],
                              probs=np.array(pred["probs"]), class_names=labels, title=sample["video_id"],
                              path=logger.run_dir / "timelines" / f"{sample['video_id']}.png")
        logger.image(f"test/timeline_{i}", img, 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def open_feature_cache(args):
    """The --feature-cache folder, checked against this run's backbone settings (a stale cache is refused)."""
    if not args.feature_cache:
        return None
    if args.method != "cten":
        raise ValueError("--feature-cache holds CTEN's frozen 3D ResNet features; it does not apply to --method "
                         f"{args.method}")
    expect = cache_expectation(args.annotation, args.visual_depth, args.visual_input, args.snippet_duration,
                               args.sample_size, args.visual_weights)
    return FeatureCache(args.feature_cache, expect=expect)


def dataset_kwargs(args, subset: str, cache=None) -> dict:
    train = subset == "train"
    return dict(feature_cache=cache, cache_train_view=args.cache_train_view,
                root=args.root, annotation_path=args.annotation, subset=subset,
                seq_len=args.seq_len if train else args.eval_seq_len, snippet_duration=args.snippet_duration,
                sample_size=args.sample_size, training_aug=train, with_audio=args.method != "cten" or args.modalities != "v",
                with_text=args.method == "mart" and train, audio_frames=args.audio_frames,
                spec_augment=args.spec_augment and train, val_fraction=args.val_fraction, val_seed=args.val_seed,
                missing_audio=args.missing_audio, on_missing=args.on_missing_video, default_fps=args.default_fps)


def build_datasets(args) -> dict:
    cache = open_feature_cache(args)
    return {"train": VideoEmotionDataset(**dataset_kwargs(args, "train", cache)),
            "val": VideoEmotionDataset(**dataset_kwargs(args, "val", cache)) if args.val_fraction > 0 else None,
            "test": VideoEmotionDataset(**dataset_kwargs(args, "test", cache))}


def data_summary(data: dict) -> str:
    parts = [f"{name} {len(ds)} videos" for name, ds in data.items() if ds is not None]
    reports = [f"{name}: {ds.report()}" for name, ds in data.items() if ds is not None and ds.report()]
    return "data: " + ", ".join(parts) + "".join(f"\n  {r}" for r in reports)


def make_loader(ds, args, dist, train: bool, epoch: int = 0) -> DataLoader:
    """A fresh loader per training epoch whose order and worker seeds depend only on (seed, epoch), so a resumed
    run sees the same batches as an uninterrupted one."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    if dist.enabled:
        sampler = DistributedSampler(ds, shuffle=train, seed=args.seed, drop_last=False)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(ds, generator=gen) if train else None
    return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                      collate_fn=collate_samples, generator=gen, drop_last=train and len(ds) > args.batch_size,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)


def build_method(args, kind: str, polarity, train_ds, ema=None, epochs: int = 1):
    criterion = classification_loss(args.loss, polarity, args.pcce_lambda)
    if kind == "cten":
        from core.methods.cten import CTENMethod
        return CTENMethod(criterion, erase=args.erase, theta=args.theta, rule=args.erase_rule, views=args.erase_views,
                          reduction=args.loss_reduction, read_frames=train_ds.read_frames if train_ds else None,
                          grid_lookup=grid_lookup if args.feature_cache else None)
    if kind == "mart":
        from core.methods.mart import MARTMethod
        from datasets.lexicon import EmotionLexicon
        return MARTMethod(criterion, polarity, EmotionLexicon(train_ds.labels, path=args.lexicon), epochs=epochs,
                          teacher_fn=(lambda: ema.module) if ema is not None else None, lam=args.mart_lambda,
                          hint_ratio=args.mart_hint_ratio, hint_pool=args.mart_hint_pool,
                          no_mask_prob=args.mart_no_mask_prob, sentiment_threshold=args.mart_sentiment_threshold,
                          match_threshold=args.mart_match_threshold, blend=args.mart_blend,
                          degree_weight=args.mart_degree_weight, temperature=args.mart_temperature,
                          push_margin=args.mart_push_margin, push_weight=args.mart_push_weight,
                          rec_weight=args.mart_rec_weight, cues=args.mart_cues, verify=args.mart_verify,
                          masking=args.mart_mask, distill_weight=args.mart_distill_weight,
                          comp_weight=args.mart_comp_weight)
    from core.methods.mbt import MBTMethod
    return MBTMethod(criterion)


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


if __name__ == "__main__":
    sys.exit(main())
