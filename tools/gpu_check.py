"""Does this machine train the presets, how fast, and what bounds an epoch: one command for a new GPU machine.

    bash run.sh gpu-check                          (python tools/gpu_check.py --out runs/gpu_check.json)
    python tools/gpu_check.py --tiny --out /tmp/gpu_check.json     (the same code on tiny models, on the CPU)

For the first preset matching each of cten_*_paper, cten_*_official, mbt_*_official and mart_*_official (MART: its
stage 1, the step of its own) at the preset's full size, with random weights and synthetic inputs of its shapes:

  precision  a few training iterations of core/engine.py `train_one_epoch` (main.py's loop) in fp32, bf16 and fp16
             (with a GradScaler): s/iteration, peak memory, whether every loss was finite, and the relative difference
             ||logits_amp - logits_fp32|| / ||logits_fp32|| of the untrained model on one batch in evaluation mode
  max batch  MBT / MART: the largest batch that trains an iteration in bf16, doubling from the preset's until out of
             memory (or --max-batch)
  ddp        with 2+ GPUs: two NCCL processes (core/distributed.py's set-up) take one DDP step of cten_*_official;
             the gradients must agree across ranks, and so must the weights after the engine's optimiser step
  loader     frames/s that the DataLoader (one worker per core, the dataset's JPEG path) produces from synthetic
             frame folders at the preprocessing's 240-px short side, against the frames/s each preset's bf16
             iteration consumes (B x T x L per iteration): which of the two bounds the epoch
  decode     cten_*_paper at batch 32 in bf16: s/iteration with the erased views decoded by PIL on the CPU (the
             default) and read as bytes then decoded batched on the GPU (--decode-device cuda), side by side

--tiny: tiny architectures and shapes on the CPU; bf16 and fp16 under CPU autocast (fp16 with
torch.amp.GradScaler('cpu')), DDP on gloo; what needs CUDA is reported as skipped with the reason. A table is
printed; --out writes everything as JSON.
"""
import argparse
import fnmatch
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import opts  # noqa: E402
from core import methods  # noqa: E402
from core.engine import NonFiniteLoss, TrainContext, to_device, train_one_epoch, unwrap  # noqa: E402
from core.log import RunLogger  # noqa: E402
from core.methods.base import StageContext  # noqa: E402
from core.train import build_optimizer  # noqa: E402
from datasets.annotations import run_polarity  # noqa: E402
from datasets.sample import SampleSpec, build_sample  # noqa: E402
from datasets.video_emotion import VideoEmotionDataset, collate_samples  # noqa: E402

PATTERNS = ("cten_*_paper", "cten_*_official", "mbt_*_official", "mart_*_official")
PRECISIONS = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}  # -> --amp
LABELS = ("Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust")  # VE-8
TEXT = "what a happy and joyful surprise"  # per-segment transcript (MART's lexicon cues)
_SHAPES = ["--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16", "--audio-frames", "16",
           "--batch-size", "2", "--accum-steps", "1"]
_MBT = ["--mbt-depth", "2", "--mbt-width", "32", "--mbt-heads", "2", "--n-bottleneck", "4", "--fusion-layer", "1",
        "--ast-patch-freq", "128", "--eval-seq-len", "2"]
# --tiny: each method cut down to seconds on one CPU core (the presets' other options stay)
TINY = {"cten": _SHAPES + ["--visual-depth", "10", "--audio-arch", "resnet10", "--audio-first-conv", "imagenet"],
        "mbt": _SHAPES + _MBT,
        "mart": _SHAPES + _MBT + ["--decoder-width", "32", "--decoder-depth", "1", "--decoder-heads", "2",
                                  "--comp-heads", "2", "--text-max-len", "16"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--tiny", action="store_true", help="tiny models on the CPU (the test suite runs this)")
    p.add_argument("--presets", default=",".join(PATTERNS), help="comma list of preset names or patterns")
    p.add_argument("--steps", type=int, default=None, help="timed iterations per precision (default 3; --tiny 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 1; --tiny 0)")
    p.add_argument("--max-batch", type=int, default=None, help="stop the doubling there (default 128; --tiny 4)")
    p.add_argument("--decode-batch", type=int, default=None, help="batch of the decode comparison (default 32; "
                                                                  "--tiny 2)")
    p.add_argument("--parts", default="precision,max_batch,ddp,loader,decode",
                   help="comma list among precision, max_batch, ddp, loader, decode")
    args = p.parse_args(argv)
    args.steps = args.steps or (1 if args.tiny else 3)
    args.warmup = (0 if args.tiny else 1) if args.warmup is None else args.warmup
    args.max_batch = args.max_batch or (4 if args.tiny else 128)
    args.decode_batch = args.decode_batch or (2 if args.tiny else 32)
    return args


# ------------------------------------------------------------------------------------------ set-up


def select_presets(patterns) -> list:
    """The first preset (a _ve8_ one when there is one) matching each pattern; patterns matching none are left out."""
    names = sorted(methods.presets(), key=lambda n: ("_ve8_" not in n, n))
    return [m[0] for m in (fnmatch.filter(names, pat) for pat in patterns) if m]


def preset_args(preset: str, tiny: bool, *flags) -> argparse.Namespace:
    """main.py's options of a preset (no data is read: --root is a placeholder)."""
    method = methods.presets()[preset]["method"]
    return opts.parse_args(["--preset", preset, "--root", ".", "--workers", "0", *(TINY[method] if tiny else []),
                            *flags])


class SyntheticVideos:
    """The training dataset as a step sees it: VE-8's labels (MART's lexicon) and random frames of the preset's shape
    for CTEN's erased views (read_frames / read_views, the dataset's two readers)."""

    def __init__(self, args):
        self.labels = list(LABELS)
        self.shape = (args.seq_len, 3, args.snippet_duration, args.sample_size, args.sample_size)

    def read_frames(self, index: int, frame_indices: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, 256, self.shape, generator=torch.Generator().manual_seed(index), dtype=torch.uint8)

    def read_views(self, requests: list, device) -> torch.Tensor:
        return torch.stack([self.read_frames(*r) for r in requests]).to(device)


def synthetic_batch(args, batch_size: int, dataset=None, n_frames: int = 90, fps: float = 30.0) -> dict:
    """A training batch of the preset's shapes: one synthetic video (random frames, noise audio, an emotional
    transcript) sampled as the dataset samples (datasets/sample.py), repeated with distinct indices and labels.
    With `dataset`, the visual fields are its videos' samples (frames read from its folders)."""
    g = torch.Generator().manual_seed(0)
    spec = SampleSpec(seq_len=args.seq_len, snippet_duration=args.snippet_duration, sample_size=args.sample_size,
                      audio_frames=args.audio_frames, audio_features=args.audio_features,
                      spec_augment=args.spec_augment)
    video = lambda fi, aug, gen: {"video": SyntheticVideos(args).read_frames(0, fi, aug)}  # noqa: E731
    wave = 0.1 * torch.randn(int(n_frames / fps * spec.sample_rate), generator=g)
    sample = build_sample(spec, n_frames, fps, video, True, g, wave=wave, with_audio=True)
    samples = []
    for b in range(batch_size):
        s = dict(sample, texts=[TEXT] * args.seq_len, video_id=f"synthetic_{b}", label=torch.tensor(b % len(LABELS)),
                 index=torch.tensor(b))
        if dataset is not None:
            s.update({k: v for k, v in dataset[b % len(dataset)].items() if k not in ("label", "video_id")},
                     index=torch.tensor(b % len(dataset)))
        samples.append(s)
    return collate_samples(samples)


def build(args, device, train_data=None):
    """The model of the preset's first stage (MART: stage 1) on `device`, and its step (`Method`)."""
    recipe = methods.get(args.method)
    torch.manual_seed(0)
    base = recipe.build_model(recipe.arch_of(args), len(LABELS))
    stage = recipe.stages(args)[0]
    model = stage.model(base).to(device)
    polarity = torch.tensor(run_polarity(list(LABELS)), device=device)
    method = stage.method(args, StageContext(polarity, train_data or SyntheticVideos(args), None, 1))
    return model, method


def context(args, device, precision: str) -> TrainContext:
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return TrainContext(device=device, logger=RunLogger(Path(tempfile.gettempdir()), enabled=False),
                        amp=PRECISIONS[precision], accum_steps=args.accum_steps, clip_grad=args.clip_grad,
                        scaler=scaler, progress=False, log_every=10 ** 9, cpu_autocast=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(model, method, args, ctx: TrainContext, batch: dict, steps: int, warmup: int) -> dict:
    """Trains `warmup` then `steps` iterations on `batch` -> {'s_per_iter', 'finite', 'loss'}."""
    optimizer = build_optimizer(args, [p for p in model.parameters() if p.requires_grad])
    try:
        if warmup:
            train_one_epoch(model, method, [batch] * warmup, optimizer, ctx, 0)
        sync(ctx.device)
        start = time.perf_counter()
        stats = train_one_epoch(model, method, [batch] * steps, optimizer, ctx, 0)
        sync(ctx.device)
    except NonFiniteLoss as e:
        return {"s_per_iter": None, "finite": False, "loss": str(e)}
    return {"s_per_iter": (time.perf_counter() - start) / steps, "finite": True, "loss": stats["loss"]}


@torch.no_grad()
def eval_logits(model, method, ctx: TrainContext, batch: dict) -> torch.Tensor:
    model.eval()
    with ctx.autocast():
        logits = method.predict(model, to_device(batch, ctx.device))["logits"].float().cpu()
    model.train()
    return logits


def peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ------------------------------------------------------------------------------------------ the parts


def check_precisions(preset: str, opt, device) -> list:
    """One row per precision: s/iteration, peak memory, finite losses, relative logit difference to fp32."""
    args = preset_args(preset, opt.tiny)
    model, method = build(args, device)
    batch = synthetic_batch(args, args.batch_size)
    initial = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ref = eval_logits(model, method, context(args, device, "fp32"), batch)
    rows = []
    for precision in PRECISIONS:
        model.load_state_dict(initial)
        ctx = context(args, device, precision)
        reset_peak(device)
        logits = eval_logits(model, method, ctx, batch)
        rel = float((logits - ref).norm() / ref.norm().clamp_min(1e-12))
        row = {"preset": preset, "precision": precision, "batch": args.batch_size,
               **timed_steps(model, method, args, ctx, batch, opt.steps, opt.warmup), "peak_gib": peak_gib(device),
               "logit_rel_diff": rel}
        rows.append(row)
    del model, method
    reset_peak(device)
    return rows


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e)


def max_batch(preset: str, opt, device) -> dict:
    """The largest batch (doubling from the preset's) that trains one bf16 iteration."""
    args = preset_args(preset, opt.tiny, "--accum-steps", "1")
    model, method = build(args, device)
    ctx = context(args, device, "bf16")
    fits, b, peak = None, args.batch_size, None
    while b <= opt.max_batch:
        try:
            reset_peak(device)
            timed_steps(model, method, args, ctx, synthetic_batch(args, b), 1, 0)
            fits, peak = b, peak_gib(device)
        except RuntimeError as e:
            if not is_oom(e):
                raise
            break
        finally:
            model.zero_grad(set_to_none=True)
            reset_peak(device)
        b *= 2
    capped = fits is not None and fits * 2 > opt.max_batch
    del model, method
    reset_peak(device)
    return {"preset": preset, "precision": "bf16", "max_batch": fits, "peak_gib": peak,
            "limit": f"--max-batch {opt.max_batch}" if capped else "out of memory"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, preset: str, tiny: bool, out: str) -> None:
    """One process of the DDP check, set up as torchrun would (core/distributed.py reads the same variables)."""
    from core.distributed import cleanup, init_distributed
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    kind = "cpu" if tiny else "cuda"
    info = init_distributed(kind)
    device = torch.device("cuda", rank) if kind == "cuda" else torch.device("cpu")
    args = preset_args(preset, tiny, "--accum-steps", "1")
    model, method = build(args, device)  # the same seed: the same initial weights on every rank
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if kind == "cuda" else None)
    batch = to_device(synthetic_batch(args, args.batch_size), device)
    batch["label"] = (batch["label"] + rank) % len(LABELS)  # each rank its own data
    torch.manual_seed(rank)
    loss, _ = method.train_step(ddp, batch, 0)
    loss.backward()
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    gathered = [torch.empty_like(grads) for _ in range(world)]
    torch.distributed.all_gather(gathered, grads)
    grad_diff = max(float((g - gathered[0]).abs().max()) for g in gathered) / float(gathered[0].abs().max())
    model.zero_grad(set_to_none=True)
    ctx = TrainContext(device=device, logger=RunLogger(Path(tempfile.gettempdir()), enabled=False), dist=info,
                       amp="none", progress=False, log_every=10 ** 9)
    train_one_epoch(ddp, method, [batch], build_optimizer(args, [p for p in model.parameters() if p.requires_grad]),
                    ctx, 0)  # the engine's step: DDP's all-reduce and the CPU statistics' all-reduce
    weights = torch.cat([p.detach().flatten().float() for p in unwrap(ddp).parameters()])
    gathered = [torch.empty_like(weights) for _ in range(world)]
    torch.distributed.all_gather(gathered, weights)
    weight_diff = max(float((w - gathered[0]).abs().max()) for w in gathered)
    if rank == 0:
        Path(out).write_text(json.dumps({"grad_rel_diff": grad_diff, "weight_max_diff": weight_diff,
                                         "n_grads": grads.numel()}))
    cleanup()


def ddp_check(preset: str, opt) -> dict:
    """Two processes, one DDP step: NCCL on two GPUs; gloo on the CPU with --tiny."""
    backend = "gloo" if opt.tiny else "cuda:nccl (cpu:gloo beside)"
    if not opt.tiny and torch.cuda.device_count() < 2:
        return {"preset": preset, "skipped": f"needs 2 GPUs, found {torch.cuda.device_count()}"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), preset, opt.tiny, str(out)), nprocs=2)
        result = json.loads(out.read_text())
    ok = result["grad_rel_diff"] < 1e-5 and result["weight_max_diff"] < 1e-6
    return {"preset": preset, "backend": backend, "processes": 2, **result, "agree": ok}


def write_frame_root(root: Path, n_videos: int, n_frames: int, width: int, height: int) -> Path:
    """Synthetic frame folders (smooth moving gradients with noise, JPEG quality 90) and a training-only annotation
    JSON; returns the JSON's path."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    database = {}
    for v in range(n_videos):
        cls, vid = LABELS[v % len(LABELS)], f"synthetic_{v}"
        folder = root / "imgs" / cls / vid
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_frames):
            base = np.stack([(x + 3 * i) % 256, (y + 5 * v) % 256, (x + y + i) % 256], axis=-1)
            img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i + 1:06d}.jpg", quality=90)
        (folder / "n_frames").write_text(str(n_frames))
        database[vid] = {"subset": "training", "annotations": {"label": cls}}
    path = root / "ann.json"
    path.write_text(json.dumps({"labels": list(LABELS), "database": database}))
    return path


def frame_dataset(args, root: Path) -> VideoEmotionDataset:
    return VideoEmotionDataset(root, root / "ann.json", "train", with_audio=False, val_fraction=0.0,
                               seq_len=args.seq_len, snippet_duration=args.snippet_duration,
                               sample_size=args.sample_size)


def loader_rate(args, root: Path, workers: int, batches: int) -> float:
    """Frames/s the DataLoader delivers (after its first batch, i.e. with the workers started)."""
    loader = DataLoader(frame_dataset(args, root), batch_size=args.batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate_samples, persistent_workers=False)
    it = iter(loader)
    next(it)
    start, frames = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        frames += batch["video"][:, :, 0].numel() // (args.sample_size ** 2)  # B x T x L
    return frames / (time.perf_counter() - start)


def loader_check(rows: list, opt, root: Path) -> list:
    """Per preset: the loader's frames/s with one worker per core against the bf16 iteration's demand."""
    workers = os.cpu_count() or 1
    out = []
    for preset in dict.fromkeys(r["preset"] for r in rows):
        bf16 = next(r for r in rows if r["preset"] == preset and r["precision"] == "bf16")
        args = preset_args(preset, opt.tiny)
        supply = loader_rate(args, root, 0 if opt.tiny else workers, 2 if opt.tiny else 8)
        per_iter = args.batch_size * args.seq_len * args.snippet_duration
        demand = per_iter / bf16["s_per_iter"] if bf16["s_per_iter"] else None
        out.append({"preset": preset, "workers": 0 if opt.tiny else workers, "loader_frames_per_s": supply,
                    "step_frames_per_s": demand, "frames_per_iter": per_iter,
                    "bound": None if demand is None else ("loader" if supply < demand else "GPU step")})
    return out


def decode_check(preset: str, opt, device, root: Path) -> list:
    """CTEN's iteration with its erased views decoded by PIL on the CPU and batched with decode_jpeg on the device,
    side by side (bf16, the preset's frames read from the synthetic folders)."""
    args = preset_args(preset, opt.tiny, "--batch-size", str(opt.decode_batch))
    ds = frame_dataset(args, root)
    batch = synthetic_batch(args, opt.decode_batch, dataset=ds)
    rows = []
    for where in ("cpu", device.type):
        model, method = build(args, device, train_data=ds)
        method.read_views = ds.read_views if where == "cuda" or (where == "cpu" and rows) else None
        ctx = context(args, device, "bf16")
        path = "PIL, CPU threads" if method.read_views is None else f"decode_jpeg on {device.type}"
        rows.append({"preset": preset, "batch": opt.decode_batch, "decode": path,
                     **timed_steps(model, method, args, ctx, batch, opt.steps, opt.warmup)})
        del model, method
    return rows


# ------------------------------------------------------------------------------------------ report


def fmt(v, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def table(results: dict) -> str:
    lines = [f"device: {results['device']}  torch {results['torch']}  cores {results['cores']}"
             + ("  (--tiny)" if results["tiny"] else "")]
    if results.get("precision"):
        lines += ["", f"{'preset':24} {'prec':5} {'batch':>5} {'s/iter':>8} {'peak GiB':>9} {'finite':>6} "
                      f"{'rel logit diff':>14}"]
        lines += [f"{r['preset']:24} {r['precision']:5} {r['batch']:>5} {fmt(r['s_per_iter']):>8} "
                  f"{fmt(r['peak_gib']):>9} {str(r['finite']):>6} {fmt(r['logit_rel_diff'], '.2e'):>14}"
                  for r in results["precision"]]
    for r in results.get("max_batch", []):
        lines.append(f"max batch {r['preset']} bf16: {fmt(r['max_batch'])} (peak {fmt(r['peak_gib'])} GiB; "
                     f"stopped by {r['limit']})")
    for r in results.get("ddp", []):
        lines.append(f"ddp {r['preset']}: " + (f"skipped ({r['skipped']})" if "skipped" in r else
                     f"{r['processes']} processes on {r['backend']}: gradients agree {r['agree']} (max rel diff "
                     f"{r['grad_rel_diff']:.1e}, weights after the step {r['weight_max_diff']:.1e})"))
    for r in results.get("loader", []):
        lines.append(f"loader {r['preset']}: {fmt(r['loader_frames_per_s'], '.0f')} frames/s with {r['workers']} "
                     f"workers vs {fmt(r['step_frames_per_s'], '.0f')} frames/s the bf16 step takes: bound by "
                     f"{r['bound']}")
    for r in results.get("decode", []):
        lines.append(f"decode {r['preset']} batch {r['batch']}: {r['decode']:24} {fmt(r['s_per_iter'])} s/iter")
    lines += [f"skipped: {k}: {why}" for k, why in results.get("skipped", {}).items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    opt = parse_args(argv)
    cuda = torch.cuda.is_available() and not opt.tiny
    if not cuda and not opt.tiny:
        print("error: no CUDA device; run with --tiny for the CPU check", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
    parts = set(opt.parts.split(","))
    presets = select_presets(opt.presets.split(","))
    results = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
               "cores": os.cpu_count(), "tiny": opt.tiny, "presets": presets, "skipped": {}}
    if opt.tiny:
        results["skipped"].update(peak_memory="CUDA only (torch.cuda.max_memory_allocated)",
                                  nccl="CUDA only: the DDP check ran on gloo",
                                  decode_cuda="CUDA only: decode_jpeg ran on the CPU beside PIL",
                                  out_of_memory="CUDA only: the doubling stops at --max-batch")
    if "precision" in parts:
        results["precision"] = [r for p in presets for r in check_precisions(p, opt, device)]
    if "max_batch" in parts:
        results["max_batch"] = [max_batch(p, opt, device) for p in presets if methods.presets()[p]["method"] != "cten"]
    cten = [p for p in presets if methods.presets()[p]["method"] == "cten"]
    if "ddp" in parts and cten:
        results["ddp"] = [ddp_check(next((p for p in cten if p.endswith("_official")), cten[0]), opt)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if {"loader", "decode"} & parts:
            write_frame_root(root, 2 if opt.tiny else 8, 16 if opt.tiny else 96, *((64, 48) if opt.tiny else (320, 240)))
        if "loader" in parts and results.get("precision"):
            results["loader"] = loader_check(results["precision"], opt, root)
        if "decode" in parts and cten:  # cten_*_paper's shapes when it is selected
            results["decode"] = decode_check(next((p for p in cten if p.endswith("_paper")), cten[0]), opt, device,
                                             root)
    print(table(results))
    if opt.out:
        Path(opt.out).parent.mkdir(parents=True, exist_ok=True)
        Path(opt.out).write_text(json.dumps(results, indent=2))
        print(f"results: {opt.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
