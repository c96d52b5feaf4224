"""The built-in demo set: small real video files in the shape of VideoEmotion-8, with ground-truth key spans.

    python tools/make_demo.py --out DIR [--seed 0] [--per-class 6]
    python tools/preprocess --src DIR/videos --dst DIR/data --split-lists DIR --short-side 128

writes DIR/videos/<Class>/<video_id>.mp4 (H.264 + AAC, 128x96 at 12 fps, 16 kHz mono) with a sidecar .srt,
DIR/key_spans.json ({video_id: [[start_s, end_s]]}), and the split lists DIR/classInd.txt,
trainlist01.txt, testlist01.txt in the official VE-8 format (stratified, about 2:1).

Each clip's class shows in three modalities, strongly only inside one "key" span (a quarter to a third of
the clip at a random position, on frame boundaries):
  vision  a class-specific shape, colour and motion (e.g. Anger: a shaking red square) drawn opaque;
  sound   a class-specific chord, arpeggio or sweep, loud;
  text    words of the class's emotion in the NRC lexicon (nrclex's data file; words tagged with that one
          of Plutchik's eight emotions only).
Everywhere (key span included) two other classes' cues are drawn faint and quiet over a noisy moving
background; the transcript outside the key span is neutral words (not in the lexicon) with now and then
one emotion word of another class. Everything is drawn from numpy generators seeded by (seed, class, clip),
and the encoders run single-threaded, so the same seed gives byte-identical files.
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import av
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.transcripts import Cue  # noqa: E402
from tools.preprocess.subtitles import format_srt  # noqa: E402

CLASSES = ("Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust")
WIDTH, HEIGHT = 128, 96
SAMPLE_RATE = 16000
KEY_FRACTION = (0.25, 1 / 3)  # key span length, as a fraction of the clip
CUE_ALPHA = 0.9  # opacity of the class cue inside the key span
DISTRACTOR_ALPHA = (0.15, 0.3)
CUE_GAIN, DISTRACTOR_GAIN, NOISE_GAIN = 0.5, 0.04, 0.02
COLOURS = ((220, 30, 30), (240, 140, 20), (120, 150, 20), (120, 40, 170),
           (250, 220, 40), (40, 70, 200), (30, 220, 230), (40, 170, 90))
NEUTRAL = ("the a an and then we they it this that on in at to of with from by near under over after before "
           "around table window street paper chair door wall floor road car bus train room house kitchen "
           "morning evening today walk sit stand look move turn open close carry bring take put go come see "
           "hear say tell ask write read cup plate box bag coat shoe hat pen book phone screen lamp corner side "
           "middle front back left right slowly quietly again also just still here there now some many few "
           "other next same large round square short").split()


@dataclass(frozen=True)
class Clip:
    video_id: str
    label: int
    key: tuple[float, float]  # seconds, on frame boundaries
    distractors: tuple[int, int]
    seed: tuple[int, int, int]


def lexicon_words() -> tuple[dict[int, list[str]], list[str]]:
    """Per class, the NRC words tagged with that emotion only (sorted); and the neutral words absent from it."""
    with resources.files("nrclex.data").joinpath("nrc_en.json").open(encoding="utf-8") as f:
        lexicon = json.load(f)
    emotions = [c.lower() for c in CLASSES]
    words = {c: sorted(w for w, tags in lexicon.items() if w.isalpha() and 3 <= len(w) <= 10
                       and [t for t in tags if t in emotions] == [emotions[c]]) for c in range(len(CLASSES))}
    return words, [w for w in NEUTRAL if w not in lexicon]


def plan_clips(seed: int, per_class: int, duration: float, fps: int) -> list[Clip]:
    clips = []
    n_frames = round(duration * fps)
    for label in range(len(CLASSES)):
        for k in range(per_class):
            rng = np.random.default_rng([seed, label, k, 0])
            length = int(round(rng.uniform(*KEY_FRACTION) * n_frames))
            start = int(rng.integers(0, n_frames - length + 1))
            others = [c for c in range(len(CLASSES)) if c != label]
            distractors = tuple(int(c) for c in rng.choice(others, size=2, replace=False))
            clips.append(Clip(f"demo{len(clips):03d}", label, (start / fps, (start + length) / fps),
                              distractors, (seed, label, k)))
    return clips


def cue_mask(label: int, t: float, cx: float, cy: float, phase: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """(H, W) coverage in [0, 1] of class `label`'s shape at time t: shape and motion say the class."""
    s = 12.0
    if label == 0:  # Anger: a shaking square
        x, y = cx + 4 * np.sin(2 * np.pi * 9 * t + phase), cy + 3 * np.sin(2 * np.pi * 7 * t)
        return ((abs(xx - x) < s) & (abs(yy - y) < s)).astype(np.float32)
    if label == 1:  # Anticipation: a bar sliding left to right
        x = WIDTH * ((0.35 * t + phase / (2 * np.pi)) % 1.0)
        return ((abs(xx - x) < 1.8 * s) & (abs(yy - cy) < 0.45 * s)).astype(np.float32)
    if label == 2:  # Disgust: a wobbling blob
        r = s * (1 + 0.35 * np.sin(2 * np.pi * 3 * t + phase))
        return (((xx - cx) / (1.4 * r)) ** 2 + ((yy - cy) / (0.8 * r)) ** 2 < 1).astype(np.float32)
    if label == 3:  # Fear: a flickering triangle
        on = float(np.sin(2 * np.pi * 5 * t + phase) > -0.2)
        return (on * ((yy > cy - s) & (yy < cy + s) & (abs(xx - cx) < (yy - cy + s) * 0.6))).astype(np.float32)
    if label == 4:  # Joy: a bouncing ball
        y = cy + 10 - 22 * abs(np.sin(2 * np.pi * 1.5 * t + phase))
        return ((xx - cx) ** 2 + (yy - y) ** 2 < s ** 2).astype(np.float32)
    if label == 5:  # Sadness: drops falling
        mask = np.zeros_like(xx)
        for i in range(3):
            y = (30 * t + 32 * i + 10 * phase) % HEIGHT
            mask = np.maximum(mask, (((xx - cx - 12 * (i - 1)) / 3) ** 2 + ((yy - y) / 7) ** 2 < 1))
        return mask.astype(np.float32)
    if label == 6:  # Surprise: an expanding ring
        r = 4 + 36 * ((1.2 * t + phase / (2 * np.pi)) % 1.0)
        return (abs(np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - r) < 3.5).astype(np.float32)
    # Trust: a steady, slowly breathing diamond
    r = s * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t + phase))
    return (abs(xx - cx) + abs(yy - cy) < 1.2 * r).astype(np.float32)


def class_tone(label: int, t: np.ndarray, phase: float) -> np.ndarray:
    """Class `label`'s sound at times t (s), peak about 1: chords, an arpeggio, a tremolo or a sweep."""
    def chord(freqs):
        return sum(np.sin(2 * np.pi * f * t + phase * (i + 1)) for i, f in enumerate(freqs)) / len(freqs)
    if label == 0:  # Anger: a harsh low beating square wave
        return np.sign(chord((110, 117))) * (0.6 + 0.4 * np.sin(2 * np.pi * 8 * t))
    if label == 1:  # Anticipation: a rising C-major arpeggio, four notes a second
        notes = np.array((262, 330, 392, 523))[(np.floor(4 * t + phase).astype(int)) % 4]
        return np.sin(2 * np.pi * np.cumsum(notes) / SAMPLE_RATE)
    if label == 2:  # Disgust: a dissonant cluster, wobbling
        return chord((185, 196, 277)) * (0.7 + 0.3 * np.sin(2 * np.pi * 3 * t))
    if label == 3:  # Fear: a high minor second in fast tremolo
        return chord((740, 784)) * (0.5 + 0.5 * np.sin(2 * np.pi * 12 * t))
    if label == 4:  # Joy: a bright major triad
        return chord((523, 659, 784))
    if label == 5:  # Sadness: a low minor triad, slowly swelling
        return chord((220, 262, 330)) * (0.6 + 0.4 * np.sin(2 * np.pi * 1 * t + phase))
    if label == 6:  # Surprise: an upward sweep twice a second
        u = (2 * t + phase / (2 * np.pi)) % 1.0
        return np.sin(2 * np.pi * np.cumsum(300 + 900 * u) / SAMPLE_RATE)
    return chord((196, 294))  # Trust: a steady open fifth


def _key_weight(times: np.ndarray, key: tuple[float, float]) -> np.ndarray:
    return ((times >= key[0]) & (times < key[1])).astype(np.float32)


def render_frames(clip: Clip, duration: float, fps: int):
    """Yield uint8 (H, W, 3) RGB frames."""
    rng = np.random.default_rng([*clip.seed, 1])
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = (rng.uniform(50, 130, size=(2, 1)) + rng.uniform(-15, 15, size=(2, 3))).astype(np.float32)  # greyish
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / WIDTH + np.sin(angle) * yy / HEIGHT + 1) / 2  # (H, W)
    background = base[0] * (1 - ramp[..., None]) + base[1] * ramp[..., None]  # (H, W, 3)
    texture = rng.normal(0, 10, size=(HEIGHT // 8, WIDTH // 8, 3)).astype(np.float32)
    layers = []  # (class, alpha inside the key span, alpha outside, centre, phase, colour)
    for c, alpha in zip(clip.distractors, rng.uniform(*DISTRACTOR_ALPHA, size=2)):
        layers.append((c, alpha, alpha, rng.uniform((25, 25), (WIDTH - 25, HEIGHT - 25)), rng.uniform(0, 2 * np.pi),
                       (COLOURS[c] + rng.uniform(-20, 20, 3)).astype(np.float32)))
    layers.append((clip.label, CUE_ALPHA, 0.0, rng.uniform((25, 25), (WIDTH - 25, HEIGHT - 25)),
                   rng.uniform(0, 2 * np.pi), (COLOURS[clip.label] + rng.uniform(-20, 20, 3)).astype(np.float32)))
    drift = rng.uniform(-8, 8, size=2)
    for i in range(round(duration * fps)):
        t = i / fps
        shift = (np.round(drift * t).astype(int)) % (HEIGHT // 8, WIDTH // 8)
        moving = np.roll(texture, tuple(shift), axis=(0, 1)).repeat(8, axis=0).repeat(8, axis=1)
        img = background + moving + 4 * rng.standard_normal((HEIGHT, WIDTH, 3), dtype=np.float32)
        key = clip.key[0] <= t < clip.key[1]
        for c, a_key, a_ctx, (cx, cy), phase, colour in layers:
            alpha = np.float32(a_key if key else a_ctx)
            if alpha > 0:
                img += alpha * cue_mask(c, t, cx, cy, phase, yy, xx)[..., None] * (colour - img)
        yield np.clip(img, 0, 255).astype(np.uint8)


def render_audio(clip: Clip, duration: float) -> np.ndarray:
    """float32 (N,) mono at SAMPLE_RATE in [-1, 1]."""
    rng = np.random.default_rng([*clip.seed, 2])
    t = np.arange(round(duration * SAMPLE_RATE)) / SAMPLE_RATE
    fade = np.minimum(1, np.minimum(t, duration - t) / 0.01)
    key = np.convolve(_key_weight(t, clip.key), np.ones(160) / 160, mode="same")  # 10 ms ramps, no clicks
    audio = NOISE_GAIN * rng.normal(size=t.size)
    for c in clip.distractors:
        audio += DISTRACTOR_GAIN * class_tone(c, t, rng.uniform(0, 2 * np.pi))
    audio += CUE_GAIN * key * class_tone(clip.label, t, rng.uniform(0, 2 * np.pi))
    return np.clip(audio * fade, -1, 1).astype(np.float32)


def transcript(clip: Clip, duration: float, words: dict[int, list[str]], neutral: list[str]) -> list[Cue]:
    """One cue for the key span (three of the class's emotion words among neutral ones); the context
    before and after in cues of 1-1.6 s of neutral words, a third of them with one other class's word."""
    rng = np.random.default_rng([*clip.seed, 3])

    def pick(pool, n):
        return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]

    def context(a: float, b: float) -> list[Cue]:
        cues = []
        while b - a > 0.3:
            end = b if b - a < 2.0 else a + rng.uniform(1.0, 1.6)
            text = pick(neutral, int(rng.integers(4, 7)))
            if rng.random() < 1 / 3:
                text.insert(int(rng.integers(0, len(text) + 1)), pick(words[int(rng.choice(clip.distractors))], 1)[0])
            cues.append(Cue(round(a, 3), round(end, 3), " ".join(text)))
            a = end
        return cues

    key_text = pick(neutral, 3)
    for w in pick(words[clip.label], 3):
        key_text.insert(int(rng.integers(0, len(key_text) + 1)), w)
    return context(0.0, clip.key[0]) + [Cue(*clip.key, " ".join(key_text))] + context(clip.key[1], duration)


def write_clip(path: Path, frames, audio: np.ndarray, fps: int) -> None:
    """H.264 (libx264, or mpeg4 where the wheel lacks it) + AAC in mp4; single-threaded, so reproducible."""
    with av.open(str(path), "w", format="mp4") as container:
        if "libx264" in av.codecs_available:
            video = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "20"})
        else:
            video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.thread_count = 1
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        frame = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        container.mux(sound.encode(frame))
        container.mux(sound.encode(None))


def test_split(clips: list[Clip], seed: int) -> set[str]:
    """Video ids of the test split: per class, round(n / 3) clips (at least one when n >= 2)."""
    rng = np.random.default_rng([seed, 99])
    test = set()
    for label in range(len(CLASSES)):
        ids = [c.video_id for c in clips if c.label == label]
        n_test = min(max(round(len(ids) / 3), 1), len(ids) - 1) if len(ids) >= 2 else 0
        test.update(ids[i] for i in rng.permutation(len(ids))[:n_test])
    return test


def write_split_lists(out: Path, clips: list[Clip], seed: int) -> None:
    """classInd.txt ('1 Anger'), trainlist01.txt ('Anger/demo000 1'), testlist01.txt ('Anger/demo003')."""
    test = test_split(clips, seed)
    (out / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)))
    (out / "trainlist01.txt").write_text("".join(f"{CLASSES[c.label]}/{c.video_id} {c.label + 1}\n"
                                                 for c in clips if c.video_id not in test))
    (out / "testlist01.txt").write_text("".join(f"{CLASSES[c.label]}/{c.video_id}\n"
                                                for c in clips if c.video_id in test))


def write_one(out: Path, clip: Clip, duration: float, fps: int, words: dict[int, list[str]], neutral: list[str]) -> None:
    folder = out / "videos" / CLASSES[clip.label]
    folder.mkdir(parents=True, exist_ok=True)
    write_clip(folder / f"{clip.video_id}.mp4", render_frames(clip, duration, fps), render_audio(clip, duration), fps)
    (folder / f"{clip.video_id}.srt").write_text(format_srt(transcript(clip, duration, words, neutral)), encoding="utf-8")


def make_demo(out: Path, seed: int = 0, per_class: int = 6, duration: float = 6.0, fps: int = 12,
              workers: int = 1) -> list[Clip]:
    """Write the demo set under `out` (see the module docstring); `workers` processes encode the clips."""
    words, neutral = lexicon_words()
    clips = plan_clips(seed, per_class, duration, fps)
    jobs = [(out, clip, duration, fps, words, neutral) for clip in clips]
    if workers <= 1:
        for job in jobs:
            write_one(*job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(write_one, *zip(*jobs)))
    (out / "key_spans.json").write_text(json.dumps({c.video_id: [list(c.key)] for c in clips}, indent=1))
    write_split_lists(out, clips, seed)
    return clips


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder to write (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--per-class", type=int, default=6, help="clips per class (default: %(default)s)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per clip (default: %(default)s)")
    p.add_argument("--fps", type=int, default=12, help="frames per second (default: %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: the number of CPUs, %(default)s)")
    args = p.parse_args(argv)
    if args.per_class < 1:
        p.error("--per-class must be >= 1")
    if args.duration * args.fps < 4:
        p.error("--duration x --fps must give at least 4 frames")
    start = time.perf_counter()
    clips = make_demo(args.out, args.seed, args.per_class, args.duration, args.fps, args.workers)
    print(f"wrote {len(clips)} clips to {args.out / 'videos'} in {time.perf_counter() - start:.1f} s; "
          f"key spans in {args.out / 'key_spans.json'}, split lists in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
