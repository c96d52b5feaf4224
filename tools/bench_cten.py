"""Where CTEN's training time goes, and what the feature cache saves: one iteration broken down, seconds per epoch of
three ways to train, and the one-off extraction.

    python tools/bench_cten.py --out runs/bench_demo -- --preset cten_demo
    python tools/bench_cten.py --devices cuda --out runs/bench_ve8 -- --preset cten_ve8_paper --root DATA/VE8 \\
        --visual-weights resnet-101-kinetics.pth --workers 16
    python tools/bench_cten.py --approaches ours,cache --videos 8 --views centre --out runs/bench_paper -- \\
        --preset cten_ve8_paper --root data/demo/data --batch-size 2

Everything after `--` is main.py's flags: the configuration, data and builders are main.py's own (opts.parse_args, the cten
recipe, core/data.py, core/train.py `build_optimizer`, core.engine.train_one_epoch), so the
timings are of the code a run executes. Approaches, all on the same machine, configuration and seed:

  official  the official code's cost model: three backbone passes per iteration (x_o, x_k, x_l) and the two erased
            views re-read from JPEG one frame after another in the main loop (the dataset's decode_threads = 1)
  ours      main.py's CTENMethod end to end with --erase-views resample: three backbone passes, the views decoded by
            the dataset's thread pool (decode_threads as configured)
  reuse     main.py with --erase-views reuse: one backbone pass; the views re-index the original pass's segment
            features (a named shortcut, not the paper's views)
  cache     main.py with --feature-cache: no backbone and no JPEG in training; features of the sampled and the
            re-sampled snippets come from the cache (tools/extract_features.py; made first when absent); with
            --freeze-audio the frozen audio trunk's features too, so only the heads (and the audio projection) run

(i) one training iteration, averaged over --iters after --warmup iterations, split into: data (the main loop's wait
for the next batch; the loader's workers overlap it with compute), data in one process (producing one batch without
workers: its real decoding cost), backbone x_o, backbone on the erased views, building the erased views (frame
re-sampling, JPEG decoding, audio gathering, without their backbone pass), and the rest (heads, losses, backward,
optimiser step, moving the batch to the device). (ii) seconds per training epoch (a fresh loader, as main.py makes
each epoch, after --warmup-epochs untimed ones). The extraction's own time is reported apart, with the number of
epochs after which the cache has paid for itself against `ours`.

With a random backbone (no --visual-weights) every approach trains with one random backbone saved in OUT, each
residual block's last BatchNorm scale set to zero (the "zero-gamma" initialisation: a random R3D-101 with the usual
initialisation gives features near 1e5-1e6, past float16, which the cache stores; the cost is the same); with
--freeze-audio and no --audio-weights all train with the cache's saved random audio trunk, so all see the same weights. --videos N
trains on N of the annotation's training videos (spread over its list; the annotation subset is written to OUT). Results go to OUT/bench.json as well as the printed table.
"""
import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import opts  # noqa: E402
from core import methods  # noqa: E402
from core.data import dataset_kwargs, feature_cache, make_loader  # noqa: E402
from core.distributed import DistInfo  # noqa: E402
from core.engine import TrainContext, train_one_epoch  # noqa: E402
from core.log import RunLogger  # noqa: E402
from core.methods.base import StageContext  # noqa: E402
from core.run import seed_everything  # noqa: E402
from core.train import build_optimizer  # noqa: E402
from core.methods.cten import reads_cached_audio  # noqa: E402
from datasets.annotations import TEST_SUBSET, TRAIN_SUBSET, load_annotation, run_polarity  # noqa: E402
from datasets.errors import DataError  # noqa: E402
from datasets.feature_cache import MANIFEST, FeatureCache  # noqa: E402
from datasets.video_emotion import VideoEmotionDataset, collate_samples  # noqa: E402
from models.resnet3d import BasicBlock, Bottleneck, ResNet3D  # noqa: E402
from tools import extract_features  # noqa: E402

APPROACHES = ("official", "ours", "reuse", "cache")
PARTS = (("data", "data (main-loop wait)"), ("data_one_process", "data in one process"),
         ("backbone_o", "backbone x_o"), ("backbone_views", "backbone x_k + x_l"),
         ("views", "build erased views"), ("audio_trunk", "frozen audio trunk"), ("rest", "heads + backward + step"),
         ("total", "iteration total"))


def parse_args(argv=None) -> argparse.Namespace:
    own, main_args = opts.split_at_dashes(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for bench.json and (unless --cache) the feature cache")
    p.add_argument("--devices", default=None, help="comma list among cpu, cuda (default: cpu, and cuda when present)")
    p.add_argument("--approaches", default=",".join(APPROACHES), help=f"comma list among {', '.join(APPROACHES)}")
    p.add_argument("--iters", type=int, default=3, help="timed iterations of the breakdown (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations before them (default 1)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per approach (default 1)")
    p.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs before them (default 1)")
    p.add_argument("--cache", default=None, help="feature cache folder (default OUT/cache_<device>; extracted when "
                                                 "absent or made with other settings)")
    p.add_argument("--stride", type=int, default=8, help="extraction grid stride (default 8)")
    p.add_argument("--views", default="all", help="extraction views (default all = 10)")
    p.add_argument("--audio-stride", type=int, default=10, help="extraction audio grid stride, with --freeze-audio "
                                                                "(default 10 feature frames = 0.1 s)")
    p.add_argument("--videos", type=int, default=0, help="train on this many training videos (default 0: all)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(own)
    args.main_args = main_args
    avail = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    args.devices = args.devices.split(",") if args.devices else avail
    bad = [d for d in args.devices if d not in avail]
    if bad:
        p.error(f"device {bad[0]} is not available here (available: {', '.join(avail)})")
    args.approaches = args.approaches.split(",")
    if any(a not in APPROACHES for a in args.approaches):
        p.error(f"--approaches must be among {', '.join(APPROACHES)}")
    return args


# -------------------------------------------------------------------------------------------------- timing


class Timers:
    """Named wall-clock sums; CUDA work is synchronised at each boundary so it lands in the right bucket."""

    def __init__(self, device: torch.device):
        self.device, self.sums, self.in_views = device, {}, False

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def time(self, name: str):
        self.sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.sums[name] = self.sums.get(name, 0.0) + time.perf_counter() - t

    def wrap(self, fn, name: str, views_flag: bool = False):
        def timed(*a, **k):
            label = name if not (name == "backbone" and self.in_views) else "backbone_views"
            if views_flag:
                self.in_views = True
            try:
                with self.time(label):
                    return fn(*a, **k)
            finally:
                if views_flag:
                    self.in_views = False
        return timed


class TimedLoader:
    """Yields `warmup + iters` batches of a loader; times the wait for each batch after the warm-up and the wall
    clock from the end of the warm-up to the last batch's end."""

    def __init__(self, loader, timers: Timers, warmup: int, iters: int):
        self.loader, self.timers, self.warmup, self.iters = loader, timers, warmup, iters
        self.wall = 0.0

    def __len__(self) -> int:
        return self.warmup + self.iters

    def __iter__(self):
        it = iter(self.loader)
        for _ in range(self.warmup):
            yield next(it)
        self.timers.sync()
        self.timers.sums.clear()
        start = time.perf_counter()
        for _ in range(self.iters):
            with self.timers.time("data"):
                batch = next(it)
            yield batch
        self.timers.sync()
        self.wall = time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ set-up


def resolve(main_args: list, device: str, extra: list = ()) -> argparse.Namespace:
    return opts.parse_args([*main_args, *extra, "--device", device, "--no-progress"])


def build(args, device: torch.device, approach: str) -> dict:
    """main.py's objects for one approach: train dataset, model, method, optimiser, context."""
    seed_everything(args.seed)
    recipe = methods.get("cten")
    train = VideoEmotionDataset(**dataset_kwargs(args, recipe, "train", cache=feature_cache(args, recipe)))
    if approach == "official":
        train.decode_threads = 1  # every frame of the erased views decoded one after another, in the main loop
    polarity = torch.tensor(run_polarity(train.labels, args.positive_classes, args.polarity_file), device=device)
    model = recipe.build_model(recipe.arch_of(args), len(train.labels))
    recipe.load_pretrained(model, args)
    model = model.to(device)
    method = recipe.step(args, StageContext(polarity, train))
    optimizer = build_optimizer(args, [p for p in model.parameters() if p.requires_grad])
    ctx = TrainContext(device=device, logger=RunLogger(Path(tempfile.gettempdir()), enabled=False), amp=args.amp,
                       progress=False, log_every=10 ** 9)
    return dict(args=args, train=train, model=model, method=method, optimizer=optimizer, ctx=ctx)


def subset_annotation(bench, main_args: list) -> list:
    """--videos N: main.py flags pointing at an annotation with N of the training videos (and one test video)."""
    if bench.videos <= 0:
        return []
    args = resolve(main_args, "cpu")
    data = load_annotation(args.annotation)
    train = [v for v, e in data["database"].items() if e["subset"] == TRAIN_SUBSET]
    test = [v for v, e in data["database"].items() if e["subset"] == TEST_SUBSET][:1]
    if bench.videos > len(train):
        raise SystemExit(f"--videos {bench.videos}: {args.annotation} has {len(train)} training videos")
    keep = train[::len(train) // bench.videos][:bench.videos] + test
    path = Path(bench.out) / f"annotation_{bench.videos}.json"
    path.write_text(json.dumps(dict(data, database={v: data["database"][v] for v in keep})))
    return ["--annotation", str(path)]


def random_backbone(bench, main_args: list) -> list:
    """No --visual-weights: main.py flags naming a random 3D ResNet (seeded) whose residual blocks start at the
    identity, saved in OUT (the module docstring says why)."""
    if "--visual-weights" in main_args:
        return []
    args = resolve(main_args, "cpu")
    path = Path(bench.out) / f"backbone_zero_gamma_r{args.visual_depth}_seed{args.seed}.pth"
    if not path.is_file():
        torch.manual_seed(args.seed)
        model = ResNet3D(args.visual_depth, args.visual_input, frozen=True)
        for block in model.modules():
            if isinstance(block, (BasicBlock, Bottleneck)):
                torch.nn.init.zeros_((block.bn3 if isinstance(block, Bottleneck) else block.bn2).weight)
        torch.save({"state_dict": model.state_dict()}, path)
    return ["--visual-weights", str(path)]


def ensure_cache(bench, main_args: list, device: str, stats: dict) -> Path:
    """Extract the cache for this configuration unless a matching complete one is there; records its time."""
    args = resolve(main_args, device)
    cache = Path(bench.cache or Path(bench.out) / f"cache_{device}")
    argv = ["--root", args.root, "--annotation", args.annotation, "--out", str(cache),
            "--visual-depth", str(args.visual_depth), "--visual-input", args.visual_input,
            "--snippet-duration", str(args.snippet_duration), "--sample-size", str(args.sample_size),
            "--stride", str(bench.stride), "--crops", bench.views, "--workers", str(args.workers), "--device", device,
            "--amp", args.amp if device == "cuda" else "none", "--seed", str(args.seed), "--no-progress"]
    if args.visual_weights:
        argv += ["--visual-weights", args.visual_weights]
    if reads_cached_audio(args):  # the frozen audio trunk's features too
        argv += ["--freeze-audio", "--modalities", args.modalities, "--audio-arch", args.audio_arch,
                 "--audio-first-conv", args.audio_first_conv, "--audio-resize", str(args.audio_resize),
                 "--audio-features", args.audio_features, "--audio-frames", str(args.audio_frames),
                 "--audio-stride", str(bench.audio_stride), "--missing-audio", args.missing_audio,
                 "--chunk", str(max(args.batch_size, 2))]
        if args.audio_weights:
            argv += ["--audio-weights", args.audio_weights]
    ex = extract_features.parse_args(argv)
    old = extract_features._read_manifest(cache)
    t = time.perf_counter()
    try:
        summary = extract_features.extract(ex)
    except DataError as e:
        if "other settings" not in str(e):
            raise
        ex.overwrite = True
        summary = extract_features.extract(ex)
    manifest = json.loads((cache / MANIFEST).read_text())
    fresh = summary["extracted"] > 0 or old is None or not old.get("complete")
    stats["extraction"] = {
        "seconds": round(time.perf_counter() - t, 3) if fresh else old.get("seconds"),
        "measured_now": fresh, "videos": len(manifest["videos"]),
        "grid_snippets": sum(v["grid"] for v in manifest["videos"].values()), "views": len(manifest["views"]),
        "stride": manifest["stride"], "cache": str(cache),
        "audio_windows": sum(v.get("audio_grid", 0) for v in manifest["videos"].values())}
    return cache


def weights_args(main_args: list, cache: Path) -> list:
    """A random backbone: every approach trains with the cache's saved one."""
    manifest = json.loads((cache / MANIFEST).read_text())
    extra = []
    if manifest["backbone_checkpoint"] == "random-init" and "--visual-weights" not in main_args:
        extra += ["--visual-weights", manifest["backbone_weights_file"]]
    if manifest.get("audio_checkpoint") == "random-init" and "--audio-weights" not in main_args:
        extra += ["--audio-weights", manifest["audio_weights_file"]]
    return extra


def approach_args(approach: str, cache: Path) -> list:
    if approach == "cache":
        return ["--feature-cache", str(cache)]
    return ["--erase-views", "reuse" if approach == "reuse" else "resample"]


# -------------------------------------------------------------------------------------------- measurements


def breakdown(parts: dict, bench) -> dict:
    """(i): mean seconds per iteration of each part."""
    args, device = parts["args"], parts["ctx"].device
    timers = Timers(device)
    net, method = parts["model"], parts["method"]
    if getattr(net, "visual", None) is not None:
        net.visual_features = timers.wrap(net.visual_features, "backbone")
    if getattr(net, "audio", None) is not None:
        net.audio_trunk_features = timers.wrap(net.audio_trunk_features, "audio_trunk")
    method._view = timers.wrap(method._view, "views_total", views_flag=True)
    loader = TimedLoader(make_loader(parts["train"], args, DistInfo(), train=True), timers, bench.warmup,
                         bench.iters)
    train_one_epoch(net, method, loader, parts["optimizer"], parts["ctx"], 0)
    s, n = timers.sums, bench.iters
    out = {"data": s.get("data", 0.0) / n, "backbone_o": s.get("backbone", 0.0) / n,
           "backbone_views": s.get("backbone_views", 0.0) / n,
           "views": (s.get("views_total", 0.0) - s.get("backbone_views", 0.0)) / n, "total": loader.wall / n,
           "audio_trunk": s.get("audio_trunk", 0.0) / n}
    out["rest"] = out["total"] - sum(out[k] for k in ("data", "backbone_o", "backbone_views", "views", "audio_trunk"))
    for name in ("visual_features", "audio_trunk_features"):  # the instance attributes shadowed the methods
        net.__dict__.pop(name, None)
    del method._view
    t = time.perf_counter()
    collate_samples([parts["train"][i % len(parts["train"])] for i in range(args.batch_size)])
    out["data_one_process"] = time.perf_counter() - t
    return out


def epoch_seconds(parts: dict, bench) -> float:
    """(ii): mean seconds of a training epoch as main.py runs it."""
    args, ctx = parts["args"], parts["ctx"]
    timers = Timers(ctx.device)
    times = []
    for epoch in range(bench.warmup_epochs + bench.epochs):
        loader = make_loader(parts["train"], args, DistInfo(), train=True, epoch=epoch)
        with timers.time("epoch"):
            train_one_epoch(parts["model"], parts["method"], loader, parts["optimizer"], ctx, epoch)
        times.append(timers.sums.pop("epoch"))
    return sum(times[bench.warmup_epochs:]) / bench.epochs


def bench_device(bench, device_name: str) -> dict:
    device = torch.device(device_name)
    stats = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "approaches": {}}
    main_args = bench.main_args + subset_annotation(bench, bench.main_args)
    main_args += random_backbone(bench, main_args)
    cache = ensure_cache(bench, main_args, device_name, stats)
    common = weights_args(main_args, cache)
    for approach in bench.approaches:
        try:
            args = resolve(main_args, device_name, common + approach_args(approach, cache))
        except SystemExit:
            flags = " ".join(approach_args(approach, cache))
            stats["approaches"][approach] = {"error": f"main.py does not accept {flags}"}
            continue
        if approach == "cache":
            FeatureCache(cache)  # fails early, with the cache's own message, on a broken cache
        parts = build(args, device, approach)
        row = {"breakdown": breakdown(parts, bench)}
        row["epoch_seconds"] = epoch_seconds(parts, bench)
        row["iterations_per_epoch"] = len(make_loader(parts["train"], args, DistInfo(), train=True))
        stats["approaches"][approach] = row
        stats.setdefault("config", {k: getattr(args, k) for k in ("seq_len", "snippet_duration", "sample_size",
                                                                  "visual_depth", "batch_size", "workers", "modalities",
                                                                  "amp", "annotation", "audio_arch", "audio_resize",
                                                                  "audio_features", "freeze_audio")})
        stats["train_videos"] = len(parts["train"])
    ours, cached = stats["approaches"].get("ours", {}), stats["approaches"].get("cache", {})
    if "epoch_seconds" in ours and "epoch_seconds" in cached and ours["epoch_seconds"] > cached["epoch_seconds"]:
        stats["extraction"]["break_even_epochs"] = round(
            stats["extraction"]["seconds"] / (ours["epoch_seconds"] - cached["epoch_seconds"]), 2)
    return stats


def format_table(stats: dict) -> str:
    rows = stats["approaches"]
    names = [a for a in APPROACHES if a in rows]
    cfg = stats.get("config", {})
    lines = [f"== {stats['device']}: T={cfg.get('seq_len')} L={cfg.get('snippet_duration')} S={cfg.get('sample_size')} "
             f"R3D-{cfg.get('visual_depth')} batch {cfg.get('batch_size')} workers {cfg.get('workers')} "
             f"modalities {cfg.get('modalities')}, audio {cfg.get('audio_arch')} on {cfg.get('audio_features')} resized to "
             f"{cfg.get('audio_resize') or 'as is'}{', frozen' if cfg.get('freeze_audio') else ''}, amp "
             f"{cfg.get('amp')}, {stats.get('train_videos')} training videos",
             "(i) one training iteration, seconds",
             f"{'':<26}" + "".join(f"{n:>11}" for n in names)]
    for key, label in PARTS:
        lines.append(f"{label:<26}" + "".join(f"{rows[n]['breakdown'][key]:>11.3f}" if "breakdown" in rows[n]
                                              else f"{'n/a':>11}" for n in names))
    lines.append("(ii) training epoch")
    epoch = {n: rows[n].get("epoch_seconds") for n in names}
    lines.append(f"{'seconds per epoch':<26}" + "".join(f"{'n/a':>11}" if epoch[n] is None else f"{epoch[n]:>11.2f}"
                                                        for n in names))
    for ref in ("official", "ours"):
        if epoch.get(ref) is not None:
            lines.append(f"{'speed-up vs ' + ref:<26}" + "".join(
                f"{'n/a':>11}" if epoch[n] is None else f"{epoch[ref] / epoch[n]:>10.1f}x" for n in names))
    for n in names:
        if "error" in rows[n]:
            lines.append(f"{n}: {rows[n]['error']}")
    ex = stats["extraction"]
    lines.append(f"extraction: {ex['seconds']:.1f} s{'' if ex['measured_now'] else ' (recorded in the manifest)'} for "
                 f"{ex['videos']} videos, {ex['grid_snippets']} grid snippets x {ex['views']} views (stride "
                 f"{ex['stride']})" + (f", {ex['audio_windows']} audio windows" if ex.get("audio_windows") else "") + (f"; pays for itself after {ex['break_even_epochs']} epochs against 'ours'"
                                       if "break_even_epochs" in ex else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    bench = parse_args(argv)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    out = Path(bench.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"main_args": bench.main_args, "iters": bench.iters, "epochs": bench.epochs, "devices": []}
    for device in bench.devices:
        stats = bench_device(bench, device)
        report["devices"].append(stats)
        print(format_table(stats), flush=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    print(f"results: {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
