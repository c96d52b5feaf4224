"""From the options to datasets and loaders: which subsets, what each reads (the recipe's inputs), and loaders
whose order depends only on (seed, epoch)."""
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from datasets.video_emotion import VideoEmotionDataset, collate_samples


def dataset_kwargs(args, recipe, subset: str, text: bool = False, cache=None) -> dict:
    """VideoEmotionDataset's arguments for `subset` ('train', 'val', 'test'); text: read transcripts (training)."""
    train = subset == "train"
    return dict(feature_cache=cache, cache_train_crop=args.cache_train_crop,
                root=args.root, annotation_path=args.annotation, subset=subset,
                seq_len=args.seq_len if train else args.eval_seq_len, snippet_duration=args.snippet_duration,
                sample_size=args.sample_size, training_aug=train, with_audio=recipe.inputs(args)["audio"],
                with_text=text and train, audio_frames=args.audio_frames, audio_features=args.audio_features,
                spec_augment=args.spec_augment and train, val_fraction=args.val_fraction, val_seed=args.val_seed,
                missing_audio=args.missing_audio, on_missing=args.on_missing_video, default_fps=args.default_fps)


def feature_cache(args, recipe):
    """The recipe's --feature-cache, or None; a method that cannot read cached features refuses the flag."""
    if not args.feature_cache:
        return None
    if not recipe.cache:
        raise ValueError(f"--feature-cache holds a frozen backbone's features; --method {args.method} trains its "
                         "backbone and reads frames: leave --feature-cache out")
    return recipe.feature_cache(args)


def build_datasets(args, recipe, text: bool = False) -> dict:
    """{'train', 'val' (None when --val-fraction 0), 'test'}."""
    cache = feature_cache(args, recipe)
    make = lambda subset: VideoEmotionDataset(**dataset_kwargs(args, recipe, subset, text, cache))  # noqa: E731
    return {"train": make("train"), "val": make("val") if args.val_fraction > 0 else None, "test": make("test")}


def data_summary(data: dict) -> str:
    parts = [f"{name} {len(ds)} videos" for name, ds in data.items() if ds is not None]
    reports = [f"{name}: {ds.report()}" for name, ds in data.items() if ds is not None and ds.report()]
    return "data: " + ", ".join(parts) + "".join(f"\n  {r}" for r in reports)


def make_loader(ds, args, dist, train: bool, epoch: int = 0) -> DataLoader:
    """A fresh loader per training epoch whose order and worker seeds depend only on (seed, epoch), so a resumed
    run sees the same batches as an uninterrupted one. Every video is used each epoch: the last, partial batch is
    trained too (9 videos with --batch-size 8: batches of 8 and 1)."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    if dist.enabled:
        sampler = DistributedSampler(ds, shuffle=train, seed=args.seed, drop_last=False)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(ds, generator=gen) if train else None
    return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                      collate_fn=collate_samples, generator=gen, drop_last=False,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)
