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
    sine), 'silence' (zeros), 'bursts' (white noise switched on and off, no speech) or None (no audio stream).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    times = np.arange(int(round(seconds * fps))) / fps if frame_times is None else np.asarray(frame_times)
    tick = 1000  # time base 1/1000 s, so any presentation time can be written
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=tick)  # time base 1/tick: frames at any presentation time
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.bit_rate = 4_000_000  # near lossless: the levels that mark each frame survive
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
            elif audio == "bursts":  # no speech, but PocketSphinx's own segmenter takes it for speech
                t = np.arange(n) / SAMPLE_RATE
                wave = 0.1 * np.random.default_rng(0).standard_normal(n) * (np.sin(2 * np.pi * 0.5 * t) > 0.3)
            else:
                wave = np.zeros(n)
            for start in range(0, n, 1024 * 64):
                frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024 * 64].astype(np.float32),
                                                   format="flt", layout="mono")
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                c.mux(aus.encode(frame))
            c.mux(aus.encode(None))


def babble(seconds: float, seed: int = 0, amplitude: int = 6000) -> np.ndarray:
    """Speech-like int16 (N,) at 16 kHz, no words: syllables of a glottal pulse train (or noise, for fricatives)
    through three formant resonators, with gaps and pauses. Enough for a recogniser to output something."""
    from scipy.signal import lfilter  # scipy comes with librosa

    rng, out = np.random.default_rng(seed), np.zeros(int(SAMPLE_RATE * seconds))
    pos = int(0.3 * SAMPLE_RATE)
    while pos < out.size - SAMPLE_RATE // 4:
        n = int(SAMPLE_RATE * rng.uniform(0.12, 0.3))
        source = np.zeros(n)
        source[::int(SAMPLE_RATE / rng.uniform(100, 220))] = 1.0
        if rng.random() < 0.3:
            source = rng.standard_normal(n) * 0.3
        y = source
        for formant, bandwidth in ((rng.uniform(300, 900), 80), (rng.uniform(900, 2500), 120),
                                   (rng.uniform(2400, 3200), 200)):
            r, theta = np.exp(-np.pi * bandwidth / SAMPLE_RATE), 2 * np.pi * formant / SAMPLE_RATE
            y = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], y)
        y = y * np.hanning(n)
        out[pos:pos + n] += y / np.abs(y).max()
        pos += n + int(SAMPLE_RATE * rng.uniform(0.02, 0.15))
        if rng.random() < 0.15:
            pos += int(SAMPLE_RATE * rng.uniform(0.3, 0.8))
    return (out * amplitude).astype(np.int16)


def order_dependent_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two clips A (4 s) and B (6 s, noisy) for which a PocketSphinx decoder that keeps its state from B
    recognises A differently than a fresh one ('it' instead of 'the', pocketsphinx 5.1.1)."""
    rng = np.random.default_rng(0)
    a = babble(4, seed=100, amplitude=int(rng.uniform(1000, 12000)))
    b = babble(6, seed=200, amplitude=int(rng.uniform(1000, 15000))) + rng.normal(0, rng.uniform(50, 2000), 96000)
    return a, b.astype(np.int16)
