"""Peak memory and training-step time of the full-size MBT (VideoMAE ViT-B + AST, 32 bottleneck tokens).

    python tools/bench_mbt.py --device cuda --batch-sizes 1,2,4,8 --T 12 --amp bf16
    python tools/bench_mbt.py --device cuda --batch-sizes 4,8,16 --T 12 --amp bf16 --grad-checkpointing
    python tools/bench_mbt.py --device cpu --batch-sizes 1,2 --T 2 --amp none --steps 1

One step = forward (under autocast with --amp) + cross-entropy on `logits` + backward + Adam step, on
random inputs of the dataset's shapes: video uint8 (B, T, 3, 16, 112, 112), audio (B, T, 100, 128).
CUDA memory is torch.cuda.max_memory_allocated() per batch size (weights + Adam state + activations);
on CPU it is the process's peak resident set size so far (it never decreases, so read it as an upper
bound for the later rows). A batch size that runs out of GPU memory is reported as OOM.
"""
import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models.mbt import MBT  # noqa: E402

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda[:i] (default: cuda when available)")
    p.add_argument("--batch-sizes", default="1,2", help="comma-separated batch sizes (default 1,2)")
    p.add_argument("--T", type=int, default=12, help="segments per video (default 12, the official training T)")
    p.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None,
                   help="autocast dtype (default bf16 on CUDA, none on CPU); fp16 uses a GradScaler")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute block activations in backward")
    p.add_argument("--freeze-audio-early", action="store_true", help="official: AST before the fusion runs frozen")
    p.add_argument("--n-classes", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per batch size (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    return p.parse_args(argv)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def train_step(model, optimizer, scaler, video, audio, labels, amp_dtype):
    device = video.device
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = F.cross_entropy(model(video, audio)["logits"].float(), labels)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def bench(model, optimizer, scaler, batch_size, T, n_classes, amp_dtype, steps, warmup, device):
    video = torch.randint(0, 256, (batch_size, T, 3, 16, 112, 112), dtype=torch.uint8, device=device)
    audio = torch.randn(batch_size, T, 100, 128, device=device)
    labels = torch.randint(0, n_classes, (batch_size,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        train_step(model, optimizer, scaler, video, audio, labels, amp_dtype)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, scaler, video, audio, labels, amp_dtype)
    sync()
    return (time.perf_counter() - start) / steps, peak_memory_gib(device)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    amp_dtype = AMP_DTYPES[amp]
    model = MBT(args.n_classes, grad_checkpointing=args.grad_checkpointing,
                freeze_audio_early=args.freeze_audio_early).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"MBT {n_params / 1e6:.1f} M parameters on {name}; T={args.T}, amp={amp}, "
          f"grad_checkpointing={args.grad_checkpointing}, freeze_audio_early={args.freeze_audio_early}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    mem_name = "peak alloc GiB" if device.type == "cuda" else "peak RSS GiB"
    print(f"{'batch':>5} {'clips':>6} {'step s':>8} {'clips/s':>8} {mem_name:>15}")
    for b in (int(x) for x in args.batch_sizes.split(",")):
        try:
            step, mem = bench(model, optimizer, scaler, b, args.T, args.n_classes, amp_dtype, args.steps, args.warmup,
                              device)
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            print(f"{b:>5} {b * args.T:>6} {'OOM':>8}")
            continue
        print(f"{b:>5} {b * args.T:>6} {step:>8.3f} {b * args.T / step:>8.2f} {mem:>15.2f}")


if __name__ == "__main__":
    main()
