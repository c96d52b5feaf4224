"""Run CTEN's frozen visual backbone once over every video of an annotation file and cache the features.

    python tools/extract_features.py --preset cten_demo --out data/demo/cache
    python tools/extract_features.py --preset cten_ve8_paper --root DATA/VE8 --out cache/ve8_r101k400 \\
        --visual-weights resnet-101-kinetics.pth --amp bf16

Every option of main.py is accepted (the preset, data root, annotation file and backbone flags are the ones a
training run names, so the cache fits it); the extraction's own options are in the last group of --help.

Every video of the file (training and test alike) is cut into a dense grid of L-frame snippets, one starting every
`--stride` frames (loop-padded like the dataset's sampling), each read in every `--crops` spatial crop with the
dataset's own decoder and transforms (datasets/frames.py `read_frames`), and run through the 3D ResNet built and
loaded as main.py builds CTEN's (models/resnet3d.py, models/pretrained.py `load_resnet3d`). Features are stored as
float16 (V, G, D) per video with a manifest: layout, grid, views and the staleness checks are described in
datasets/feature_cache.py, which reads the cache (`main.py --feature-cache OUT`).

A random backbone (no --visual-weights) is drawn from --seed and saved as OUT/backbone_random_init.pth; train with
`--visual-weights OUT/backbone_random_init.pth` so the run's backbone is the cached one.

With --freeze-audio (CTEN's frozen audio trunk, the paper's setting) the audio ResNet trunk, built as main.py builds
it (--audio-arch, --audio-first-conv imagenet, --audio-resize, --audio-weights), is run too over a grid of each
video's audio windows (--audio-features, --audio-frames; one window start every --audio-stride feature frames over
one period of the audio) and stored as audio/<video_id>.npy (datasets/feature_cache.py). A random trunk (no
--audio-weights) is saved as OUT/audio_random_init.pth: train with `--audio-weights OUT/audio_random_init.pth`.

Decoding runs in --workers DataLoader processes, one item = one chunk of --chunk grid snippets of one video in all
views (the backbone sees V x chunk clips at a time). The run is resumable: a video whose file is already there with
the shape its frame count implies is skipped, each file is written atomically, and the manifest is marked complete
only at the end. Settings that change features (backbone, depth, input scaling, L, S, stride, views, AMP, root)
must match an existing manifest in OUT; --overwrite starts OUT afresh instead.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opts  # noqa: E402
from datasets.annotations import load_annotation  # noqa: E402
from datasets.errors import DataError  # noqa: E402
from datasets.annotations import TEST_SUBSET, TRAIN_SUBSET, subset_entries  # noqa: E402
from datasets.audio import audio_period, windows  # noqa: E402
from datasets.feature_cache import (AUDIO_FIELDS, FORMAT, MANIFEST, RANDOM_INIT, grid_starts,  # noqa: E402
                                    parse_crops, sha256_file, state_sha256, crop_aug)
from datasets.frames import count_frames, read_frames  # noqa: E402
from datasets.sample import silence  # noqa: E402
from datasets.video_emotion import VideoEmotionDataset  # noqa: E402
from models.audio_resnet import AudioResNet  # noqa: E402
from models.pretrained import CheckpointError, load_resnet3d, load_torchvision_resnet  # noqa: E402
from models.resnet3d import INPUT_PRESETS, ResNet3D  # noqa: E402

RANDOM_WEIGHTS = "backbone_random_init.pth"
RANDOM_AUDIO_WEIGHTS = "audio_random_init.pth"
# Manifest fields that change the features: an existing cache is only resumed when they all match.
FEATURE_FIELDS = ("dataset_root", "frames_dir", "backbone_sha256", "backbone_state_sha256", "depth", "input_preset",
                  "snippet_duration", "sample_size", "stride", "views", "feature_dim", "amp", "dtype",
                  *AUDIO_FIELDS, "audio_stride")
def parse_args(argv=None) -> argparse.Namespace:
    """main.py's options (the data root, the backbone flags, --preset, --workers, --device, --amp, --overwrite: here,
    discard an existing cache in --out made with other settings, ...) plus this tool's own group."""
    p = opts.build_parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("feature extraction")
    g.add_argument("--out", required=True, help="cache folder (created; resumed when it holds a matching manifest)")
    g.add_argument("--frames-dir", default="imgs", help="frame folder under ROOT (default imgs)")
    g.add_argument("--stride", type=int, default=8, help="frames between grid snippet starts (default 8; 1 = exact)")
    g.add_argument("--crops", default="all", help="stored spatial crops: 'all' (5 crops x flip = 10, default), "
                                                  "'crops' (5), 'centre', or a comma list of <crop>[+flip], crop in "
                                                  "centre, top-left, top-right, bottom-left, bottom-right")
    g.add_argument("--audio-stride", type=int, default=10, help="with --freeze-audio: feature frames (10 ms) between "
                                                                 "audio grid window starts (default 10; 1 = exact)")
    g.add_argument("--chunk", type=int, default=16, help="grid snippets per loader item; the backbone sees crops x "
                                                         "chunk clips at once (default 16)")
    p.set_defaults(amp="none")  # float32 features unless --amp is asked for
    args = opts.parse_args(argv, parser=p)
    for name in ("stride", "chunk", "snippet_duration", "sample_size", "audio_stride"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        args.crop_names = parse_crops(args.crops)
    except ValueError as e:
        p.error(str(e))
    return args


# --------------------------------------------------------------------------------------------- backbone


def build_backbone(args, out: Path) -> tuple:
    """The frozen 3D ResNet and its manifest fields. A random one is saved to (or, on resume, read from) OUT."""
    model = ResNet3D(args.visual_depth, args.visual_input, frozen=True)
    if args.visual_weights:
        load_resnet3d(args.visual_weights, model)
        info = {"backbone_checkpoint": str(Path(args.visual_weights).resolve()),
                "backbone_sha256": sha256_file(args.visual_weights), "backbone_seed": None}
    else:
        saved = out / RANDOM_WEIGHTS
        old = _read_manifest(out)
        if saved.is_file() and old is not None and old.get("backbone_seed") == args.seed \
                and old.get("backbone_checkpoint") == RANDOM_INIT:
            load_resnet3d(saved, model)
        else:
            torch.manual_seed(args.seed)
            model = ResNet3D(args.visual_depth, args.visual_input, frozen=True)
            out.mkdir(parents=True, exist_ok=True)
            tmp = saved.with_suffix(".tmp")
            torch.save({"state_dict": model.state_dict()}, tmp)
            os.replace(tmp, saved)
        info = {"backbone_checkpoint": RANDOM_INIT, "backbone_sha256": sha256_file(saved), "backbone_seed": args.seed,
                "backbone_weights_file": str(saved.resolve())}
    mean, std = INPUT_PRESETS[args.visual_input]
    info.update(backbone_state_sha256=state_sha256(model.state_dict()), depth=args.visual_depth,
                input_preset=args.visual_input, input_mean=list(mean), input_std=list(std),
                feature_dim=model.feature_dim)
    return model, info


def build_audio_trunk(args, out: Path) -> tuple:
    """The frozen audio ResNet (its trunk is what is cached) and its manifest fields; a random one is saved to (or,
    on resume, read from) OUT, as the visual backbone."""
    make = lambda: AudioResNet(args.audio_arch, 8, args.audio_first_conv, args.audio_resize, frozen=True)  # noqa
    if args.audio_weights:
        model = make()
        load_torchvision_resnet(args.audio_weights, model)
        info = {"audio_checkpoint": str(Path(args.audio_weights).resolve()),
                "audio_sha256": sha256_file(args.audio_weights)}
    else:
        saved, old = out / RANDOM_AUDIO_WEIGHTS, _read_manifest(out)
        if saved.is_file() and old is not None and old.get("backbone_seed") == args.seed \
                and old.get("audio_checkpoint") == RANDOM_INIT:
            model = make()
            load_torchvision_resnet(saved, model)
        else:
            torch.manual_seed(args.seed + 1)
            model = make()
            out.mkdir(parents=True, exist_ok=True)
            tmp = saved.with_suffix(".tmp")
            torch.save({"state_dict": model.trunk.state_dict()}, tmp)
            os.replace(tmp, saved)
        info = {"audio_checkpoint": RANDOM_INIT, "audio_sha256": sha256_file(saved),
                "audio_weights_file": str(saved.resolve())}
    info.update(audio_arch=args.audio_arch, audio_first_conv=args.audio_first_conv, audio_resize=args.audio_resize,
                audio_features=args.audio_features, audio_frames=args.audio_frames, audio_stride=args.audio_stride,
                audio_trunk_dim=model.trunk_dim, audio_state_sha256=state_sha256(model.trunk.state_dict()))
    return model.eval(), info


def extract_audio(args, model: AudioResNet, out: Path, entries: dict, device: torch.device, autocast) -> int:
    """The audio trunk's features of every video in `entries` (those with frames) -> audio/<video_id>.npy float16
    (G_a, W); adds audio_file, audio_grid, audio_period to each entry. Returns the number of files written."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    data = load_annotation(args.annotation)
    written = 0
    for subset, name in (("train", TRAIN_SUBSET), ("test", TEST_SUBSET)):
        if not subset_entries(data, name):
            continue
        ds = VideoEmotionDataset(root=args.root, annotation_path=args.annotation, subset=subset, val_fraction=0.0,
                                 with_audio=True, audio_features=args.audio_features, audio_frames=args.audio_frames,
                                 missing_audio=args.missing_audio, on_missing="skip", default_fps=args.default_fps,
                                 frames_dir=args.frames_dir)
        for i, v in enumerate(ds.videos):
            if v["video_id"] not in entries:
                continue
            wave, fps = ds.wave_and_fps(i)
            if wave is None:
                wave = silence(v["n_frames"], fps, ds.sample_rate)
            period = audio_period(wave.numel(), ds.sample_rate)
            starts = grid_starts(period, args.audio_frames, args.audio_stride)  # (G_a,)
            file = f"audio/{v['video_id']}.npy"
            entries[v["video_id"]].update(audio_file=file, audio_grid=len(starts), audio_period=period)
            if _is_done(out / file, (len(starts), model.trunk_dim)):
                continue
            x = windows(wave, starts, period, ds.sample_rate, args.audio_frames, args.audio_features)  # (G_a, F, M)
            with torch.inference_mode(), autocast:
                feats = torch.cat([model.trunk_features(c[None].to(device))[0].float().cpu()
                                   for c in x.split(args.chunk)])  # (G_a, W)
            _save_npy(out / file, to_float16(feats.numpy(), out / file, "audio trunk"))
            written += 1
    return written


# ------------------------------------------------------------------------------------------------ data


class GridChunks(Dataset):
    """Item k = one chunk of one video's grid snippets in every view:
    {'video': position in `videos`, 'first': first grid index, 'frames': uint8 (V, U, 3, S, S) the distinct frames
    the chunk reads, 'index': int64 (C, L) each snippet's frames as positions in U}."""

    def __init__(self, videos: list, views: list, snippet_duration: int, sample_size: int, stride: int, chunk: int,
                 threads: int = 1):
        self.videos, self.augs = videos, [crop_aug(v) for v in views]
        self.L, self.S, self.threads = snippet_duration, sample_size, threads
        self.items = []
        for k, v in enumerate(videos):
            v["starts"] = grid_starts(v["n_frames"], snippet_duration, stride)
            self.items += [(k, g) for g in range(0, len(v["starts"]), chunk)]
        self.chunk = chunk

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        k, first = self.items[i]
        v = self.videos[k]
        starts = v["starts"][first:first + self.chunk]  # (C,)
        snippets = (starts[:, None] + torch.arange(self.L)) % v["n_frames"]  # (C, L)
        unique = torch.unique(snippets)  # (U,) sorted
        frames = torch.stack([read_frames(v["frame_dir"], unique[:, None], aug, self.S, self.threads)[:, :, 0]
                              for aug in self.augs])  # (V, U, 3, S, S)
        return {"video": k, "first": first, "frames": frames, "index": torch.searchsorted(unique, snippets)}


def plan_videos(args, annotation: dict) -> tuple:
    """[(video_id, label, frame_dir, n_frames)] of the annotation, and {video_id: why} of those without frames."""
    videos, missing = [], {}
    for vid, entry in annotation["database"].items():
        label = entry["annotations"]["label"]
        frame_dir = Path(args.root) / args.frames_dir / label / vid
        try:
            n = count_frames(frame_dir)
        except DataError as e:
            missing[vid] = f"{e.path}: {e.why}"
            continue
        videos.append({"video_id": vid, "label": label, "frame_dir": frame_dir, "n_frames": n})
    return videos, missing


def _read_manifest(out: Path):
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)


def _is_done(path: Path, shape: tuple) -> bool:
    if not path.is_file():
        return False
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return arr.shape == shape and arr.dtype == np.float16


# ---------------------------------------------------------------------------------------------- extract


def extract(args) -> dict:
    """Extract (or resume) the cache; returns {'extracted', 'reused', 'skipped_missing', 'seconds', 'manifest'}."""
    t0 = time.perf_counter()
    out = Path(args.out)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda", "CUDA is not available here", "use --device cpu or auto")
    annotation = load_annotation(args.annotation)
    videos, missing = plan_videos(args, annotation)
    if missing and args.on_missing_video == "error":
        shown = "; ".join(list(missing.values())[:5])
        raise DataError(Path(args.root) / args.frames_dir, f"{len(missing)} annotated videos have no usable frame "
                        f"folder: {shown}{' ...' if len(missing) > 5 else ''}",
                        "create them with `python tools/preprocess ...`, or pass --on-missing-video skip")
    if not videos:
        raise DataError(args.annotation, "no video of the annotation has frames", "check --root and --frames-dir")

    old = _read_manifest(out)
    stale = [p for d in ("feats", "audio") if (out / d).is_dir() for p in sorted((out / d).glob("*.npy*"))]
    if args.overwrite:
        for path in stale + [out / RANDOM_WEIGHTS, out / RANDOM_AUDIO_WEIGHTS, out / MANIFEST]:
            path.unlink(missing_ok=True)
        old = None
    elif old is None and stale:
        raise DataError(out, f"{len(stale)} feature files but no readable {MANIFEST}, so their settings are unknown",
                        "pass --overwrite to discard them, or give another --out")
    backbone, info = build_backbone(args, out)
    audio_model = None
    if args.freeze_audio and args.modalities != "v":
        audio_model, audio_info = build_audio_trunk(args, out)
        info.update(audio_info)
    manifest = {"format": FORMAT, "created_with": "tools/extract_features.py", "complete": False,
                "dataset_root": str(Path(args.root).resolve()), "frames_dir": args.frames_dir,
                "annotation": str(Path(args.annotation).resolve()), "annotation_sha256": sha256_file(args.annotation),
                **info, "snippet_duration": args.snippet_duration, "sample_size": args.sample_size,
                "stride": args.stride, "views": args.crop_names, "amp": args.amp if device.type == "cuda" else "none",
                "dtype": "float16", "grid": "starts every `stride` frames in [0, n) plus n - L; frames (start + l) % n",
                "layout": "feats/<video_id>.npy float16 (views, grid, dim)"}
    if old is not None:
        changed = [f"{k}: {old.get(k)!r} in the cache, {manifest.get(k)!r} now"
                   for k in FEATURE_FIELDS if old.get(k) != manifest.get(k)]
        if changed:
            raise DataError(out / MANIFEST, f"the cache in --out was made with other settings ({'; '.join(changed)})",
                            "give another --out, or pass --overwrite to discard it")
    (out / "feats").mkdir(parents=True, exist_ok=True)
    _write_manifest(out, dict(manifest, videos={}))

    V, D = len(args.crop_names), info["feature_dim"]
    todo, entries = [], {}
    for v in videos:
        G = len(grid_starts(v["n_frames"], args.snippet_duration, args.stride))
        v["file"] = f"feats/{v['video_id']}.npy"
        entries[v["video_id"]] = {"label": v["label"], "n_frames": v["n_frames"], "grid": G, "file": v["file"]}
        if not _is_done(out / v["file"], (V, G, D)):
            todo.append(v)
    reused = len(videos) - len(todo)

    backbone = backbone.to(device).eval()
    data = GridChunks(todo, args.crop_names, args.snippet_duration, args.sample_size, args.stride, args.chunk,
                      threads=1 if args.workers > 0 else 4)  # inline: decode in a thread pool instead
    torch.backends.cudnn.benchmark = True  # clip shapes repeat: V x chunk, and the few shorter tails
    loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16 if args.amp == "bf16" else torch.float16,
                              enabled=device.type == "cuda" and args.amp != "none")
    buffers, done = {}, {}
    bar = tqdm(loader, total=len(data), desc="extract", unit="chunk", disable=not args.progress)
    with torch.inference_mode(), autocast:
        for item in bar:
            k = item["video"]
            v = todo[k]
            frames = item["frames"].to(device, non_blocking=True)  # (V, U, 3, S, S)
            index = item["index"].to(device)  # (C, L)
            C = index.shape[0]
            clips = frames[:, index].permute(0, 1, 3, 2, 4, 5).reshape(V * C, 3, args.snippet_duration,
                                                                        args.sample_size, args.sample_size)
            feats = to_float16(backbone(clips).float().view(V, C, D).cpu().numpy(), out / v["file"], "3D ResNet")
            buf = buffers.setdefault(k, np.empty((V, entries[v["video_id"]]["grid"], D), np.float16))
            buf[:, item["first"]:item["first"] + C] = feats
            done[k] = done.get(k, 0) + C
            if done[k] == buf.shape[1]:
                _save_npy(out / v["file"], buffers.pop(k))
                bar.set_postfix(videos=f"{len(done) - len(buffers)}/{len(todo)}")
    if audio_model is not None:
        extract_audio(args, audio_model.to(device), out, entries, device, autocast)
    manifest.update(complete=True, videos=entries, skipped={vid: why for vid, why in missing.items()},
                    seconds=round(time.perf_counter() - t0, 3), device=str(device))
    _write_manifest(out, manifest)
    return {"extracted": len(todo), "reused": reused, "skipped_missing": len(missing),
            "seconds": manifest["seconds"], "manifest": str(out / MANIFEST)}


def to_float16(feats: np.ndarray, file: Path, network: str) -> np.ndarray:
    """float32 features -> the cache's float16; refused when a value is past float16's range (or not finite)."""
    big = float(np.abs(feats).max()) if feats.size else 0.0
    if not np.isfinite(feats).all() or big > float(np.finfo(np.float16).max):
        raise DataError(file, f"the {network}'s features reach {big:.3g}, past float16's range (65504), which the "
                              f"cache stores", "extract with the pretrained weights the run uses (a deep network's "
                              "random initialisation can give such features)")
    return feats.astype(np.float16)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = extract(args)
    except (DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary['extracted']} videos extracted, {summary['reused']} already cached, "
          f"{summary['skipped_missing']} skipped without frames, {summary['seconds']:.1f} s; {summary['manifest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
