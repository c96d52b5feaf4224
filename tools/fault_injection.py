"""Fault injection (issue 12): make odd media and bad files, run the command lines on them, print a table.

    python tools/fault_injection.py [--work DIR] [--only CASE,...] [--keep]

Each case builds its input under --work (a fresh temporary folder by default), runs the real command
(`python tools/preprocess`, a DataLoader, `tools/extract_features.py`) and compares what happens with what
should. The table has one row per case: case, expected, observed, PASS/FAIL; the exit status is 1 when a
case fails. Every case also has a focused test in tests/test_faults.py. Runs on 2 CPU cores in a few minutes.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLE_RATE = 16000


# ------------------------------------------------------------------------------------------------ media


def write_clip(path: Path, seconds: float, fps: float = 10.0, size: tuple = (64, 48), audio: Optional[str] = "tone",
               frame_times: Optional[np.ndarray] = None) -> None:
    """An mp4 (mpeg4 + AAC) of `seconds`: frame k shows a flat grey of level (10 * k) % 250 in its top half and the
    second it is shown at (round(t) * 20 % 250) in its bottom half, so a frame's time can be read back.

    frame_times: presentation times in seconds (variable frame rate; default k / fps). audio: 'tone' (a 440 Hz
    sine), 'silence' (zeros), 'noise' (quiet white noise, no speech) or None (no audio stream).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    times = np.arange(int(round(seconds * fps))) / fps if frame_times is None else np.asarray(frame_times)
    tick = 1000  # time base 1/1000 s, so any presentation time can be written
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=tick)  # time base 1/tick: frames at any presentation time
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        aus = c.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio else None
        for k, t in enumerate(times):
            img = np.empty((size[1], size[0], 3), np.uint8)
            img[: size[1] // 2] = (10 * k) % 250
            img[size[1] // 2:] = round(float(t)) * 20 % 250
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(float(t) * tick))
            frame.time_base = Fraction(1, tick)
            c.mux(vs.encode(frame))
        c.mux(vs.encode(None))
        if aus is not None:
            n = int(SAMPLE_RATE * seconds)
            if audio == "tone":
                wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / SAMPLE_RATE)
            elif audio == "noise":
                wave = 0.003 * np.random.default_rng(0).standard_normal(n)
            else:
                wave = np.zeros(n)
            for start in range(0, n, 1024 * 64):
                frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024 * 64].astype(np.float32),
                                                   format="flt", layout="mono")
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                c.mux(aus.encode(frame))
            c.mux(aus.encode(None))
