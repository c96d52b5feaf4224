"""Which audio format of tools/preprocess reads faster in training: WAV or MP3.

    python experiments/bench_audio_format.py --clips 8 --seconds 60 --repeats 3

Writes --clips synthetic clips (tones plus noise, 16 kHz mono, --seconds long) with tools/preprocess's own
writers in both formats, then times what the training loader does per video: decode the file
(datasets.audio.decode_audio) and cut the per-segment fbank (segment_features, T = 16). Prints ms per clip (the
median over --repeats passes over all clips) and the bytes per clip.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from datasets.audio import decode_audio, segment_features  # noqa: E402
from tools.preprocess.audio import write_mp3, write_wav  # noqa: E402

RATE = 16000


def synthetic_clip(seconds: float, seed: int) -> np.ndarray:
    """int16 (1, N): three tones and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 2000, size=3)) + 0.05 * rng.standard_normal(t.size)
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)[None]


def time_reads(paths, seconds: float, repeats: int, seq_len: int = 16) -> float:
    """Median over repeats of the mean ms per clip of decode + segment features."""
    bounds = torch.linspace(0, seconds, seq_len + 1)
    seg_times = torch.stack([bounds[:-1], bounds[1:]], dim=1)  # (T, 2)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for p in paths:
            segment_features(decode_audio(p), seg_times, training=True)
        runs.append((time.perf_counter() - start) * 1000 / len(paths))
    return statistics.median(runs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"wav": [], "mp3": []}
        for i in range(args.clips):
            clip = synthetic_clip(args.seconds, i)
            for fmt, write in (("wav", write_wav), ("mp3", write_mp3)):
                path = Path(tmp) / f"{i}.{fmt}"
                write(clip, RATE, path)
                files[fmt].append(path)
        print(f"{args.clips} clips of {args.seconds:g} s, 16 kHz mono, decode + fbank of T = 16 segments")
        print("| format | ms per clip | KiB per clip |\n| --- | --- | --- |")
        for fmt, paths in files.items():
            ms = time_reads(paths, args.seconds, args.repeats)
            kib = sum(q.stat().st_size for q in paths) / len(paths) / 1024
            print(f"| {fmt} | {ms:.1f} | {kib:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
