"""Measure the data loader's throughput (clips/s) for several worker counts.

    python tools/bench_loader.py --root data/ve8 --annotation data/ve8/ve8.json --workers 0 2 4 \
        --seq-len 16 --snippet 16 --size 112 --batches 10

Each run builds a DataLoader over the training subset (training augmentation on, audio on unless
--no-audio), loads one warm-up batch (worker start-up), then times --batches batches.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from datasets.errors import DataError  # noqa: E402
from datasets.video_emotion import VideoEmotionDataset, collate_samples  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="dataset root (imgs/, mp3/, srt/)")
    p.add_argument("--annotation", required=True, help="annotation JSON")
    p.add_argument("--subset", default="train", choices=["train", "val", "test"])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4],
                   help="DataLoader num_workers values (default 0 2 4)")
    p.add_argument("--seq-len", type=int, default=16, help="segments T (default 16)")
    p.add_argument("--snippet", type=int, default=16, help="frames per snippet L (default 16)")
    p.add_argument("--size", type=int, default=112, help="frame size S (default 112)")
    p.add_argument("--batches", type=int, default=10, help="timed batches per run (default 10)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch (default 8)")
    p.add_argument("--decode-threads", type=int, default=4, help="JPEG decoding threads per sample (default 4)")
    p.add_argument("--no-audio", action="store_true", help="do not read audio")
    p.add_argument("--with-text", action="store_true", help="also read transcripts")
    p.add_argument("--missing-audio", default="error", choices=["error", "zeros"])
    return p.parse_args(argv)


def main(argv=None) -> list:
    args = parse_args(argv)
    try:
        ds = VideoEmotionDataset(args.root, args.annotation, args.subset, seq_len=args.seq_len,
                                 snippet_duration=args.snippet, sample_size=args.size, training_aug=True,
                                 with_audio=not args.no_audio, with_text=args.with_text,
                                 missing_audio=args.missing_audio, decode_threads=args.decode_threads)
    except DataError as e:
        sys.exit(f"error: {e}")
    print(f"{len(ds)} videos ({args.subset}); T={args.seq_len} L={args.snippet} S={args.size} batch={args.batch_size}")
    print(f"{'workers':>7} {'clips/s':>9} {'s/batch':>9}")
    rows = []
    for workers in args.workers:
        torch.manual_seed(0)
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                            collate_fn=collate_samples, drop_last=False)
        it = iter(loader)
        next(it)
        clips, start = 0, time.perf_counter()
        for _ in range(args.batches):
            try:
                clips += len(next(it)["video_id"])
            except StopIteration:
                it = iter(loader)
                clips += len(next(it)["video_id"])
        seconds = time.perf_counter() - start
        rows.append({"workers": workers, "clips_per_s": clips / seconds, "s_per_batch": seconds / args.batches})
        print(f"{workers:>7} {clips / seconds:>9.1f} {seconds / args.batches:>9.3f}")
        del it
    if ds.report():
        print(f"data problems: {ds.report()}")
    return rows


if __name__ == "__main__":
    main()
