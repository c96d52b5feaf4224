"""The demo's stand-in for Kinetics and AudioSet: synthetic clips and sounds with labels of their own.

tools/pretrain_demo.py trains the demo presets' backbones on these, as the real presets start from backbones
trained on large sets that have nothing to do with the emotion classes. Nothing here is one of the demo's class
cues (tools/make_demo.py `cue_mask`, `class_tone`): other shape families, any colour, generic motions; noises,
chirps, modulated tones and clicks at any pitch. What transfers is generic: shape, colour and motion detectors,
and spectral ones.

Video: a clip is an opaque-ish object over a noisy, textured, drifting background with up to two faint objects,
labelled by three factors of the main object:
  shape   10 families: plus, saltire, star, frame, crescent, checker, grating, hourglass, L, chevron
  colour  12 hue bins (saturation and value drawn)
  motion  8 kinds: still, drift right / left / up / down, rotation, pulsing size, blinking
Audio: a 1-s sound (plus a faint second one and background noise) labelled by
  kind    12 kinds: white, pink, brown and band noise, pure, amplitude- and frequency-modulated tones, rising and
          falling chirps, click trains, sawtooth and square waves
  pitch   8 log-spaced bins from 100 Hz to 3.2 kHz (IGNORE for the broadband kinds)
and turned into the normalised log-mel window every audio network of the project reads (datasets/audio.py).

Every draw comes from a numpy generator seeded by (seed, stream, batch index): the same seed gives the same data.
"""
import numpy as np
import torch
from torch.nn import functional as nnf

from datasets.audio import SAMPLE_RATE, log_mel, normalise_fbank

SHAPES = ("plus", "saltire", "star", "frame", "crescent", "checker", "grating", "hourglass", "ell", "chevron")
N_HUES = 12
MOTIONS = ("still", "right", "left", "up", "down", "rotate", "pulse", "blink")
VIDEO_FACTORS = (len(SHAPES), N_HUES, len(MOTIONS))  # logits per factor, in this order

SOUNDS = ("white", "pink", "brown", "band", "pure", "am", "fm", "chirp_up", "chirp_down", "clicks", "saw", "square")
BROADBAND = ("white", "pink", "brown", "clicks")  # no pitch label
N_PITCHES = 8
PITCH_RANGE = (100.0, 3200.0)  # Hz, log-spaced bins
AUDIO_FACTORS = (len(SOUNDS), N_PITCHES)
IGNORE = -100  # cross-entropy's ignore_index


# ---------------------------------------------------------------------------------------------------------- video

def shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Coverage of shape family `shape` in the object's own coordinates (u, v), unit half-size."""
    box = (abs(u) < 1) & (abs(v) < 1)
    name = SHAPES[shape]
    if name == "plus":
        return ((abs(u) < 0.3) & (abs(v) < 1)) | ((abs(v) < 0.3) & (abs(u) < 1))
    if name == "saltire":
        a, b = (u + v) / np.sqrt(2), (u - v) / np.sqrt(2)
        return ((abs(a) < 0.28) & (abs(b) < 1.1)) | ((abs(b) < 0.28) & (abs(a) < 1.1))
    if name == "star":
        rho, phi = np.hypot(u, v), np.arctan2(v, u)
        return rho < 0.45 + 0.6 * abs(np.cos(2.5 * phi))
    if name == "frame":
        return box & (np.maximum(abs(u), abs(v)) > 0.6)
    if name == "crescent":
        return (u ** 2 + v ** 2 < 1) & ((u - 0.45) ** 2 + v ** 2 > 0.75 ** 2)
    if name == "checker":
        return box & ((np.floor(2 * u + 2) + np.floor(2 * v + 2)) % 2 == 0)
    if name == "grating":
        return box & (np.sin(2.5 * np.pi * u) > 0)
    if name == "hourglass":
        return (abs(v) < 1) & (abs(u) < abs(v))
    if name == "ell":
        return box & ((u < -0.35) | (v > 0.35))
    return (abs(v) < 1) & (abs(u - 0.8 * abs(v) + 0.3) < 0.3)  # chevron


def hue_colour(hue: float, saturation: float, value: float) -> np.ndarray:
    """RGB in 0-255 of an HSV colour (hue in [0, 1))."""
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return 255 * value * (1 - saturation * np.clip(np.minimum(k, 4 - k), 0, 1))


def object_track(rng: np.random.Generator, motion: int, n_frames: int, size: int) -> list:
    """Per frame (cx, cy, angle, half-size, visible) of an object moving by `motion`, kept inside the frame."""
    half = rng.uniform(0.09, 0.2) * size
    speed = rng.uniform(0.02, 0.06) * size  # pixels per frame
    directions = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}
    step = speed * np.array(directions.get(MOTIONS[motion], (0, 0)))
    span = np.abs(step) * (n_frames - 1)
    low, high = half + span / 2, size - half - span / 2
    centre = rng.uniform(np.minimum(low, size / 2), np.maximum(high, size / 2))
    angle0, spin = rng.uniform(0, 2 * np.pi), rng.choice((-1, 1)) * rng.uniform(0.15, 0.4)
    period, phase = rng.uniform(3, 6), rng.uniform(0, 2 * np.pi)
    track = []
    for i in range(n_frames):
        t = i - (n_frames - 1) / 2
        cx, cy = centre + step * t
        angle = angle0 + (spin * i if MOTIONS[motion] == "rotate" else 0)
        r = half * (1 + 0.35 * np.sin(2 * np.pi * i / period + phase)) if MOTIONS[motion] == "pulse" else half
        visible = np.sin(2 * np.pi * i / period + phase) > -0.3 if MOTIONS[motion] == "blink" else True
        track.append((cx, cy, angle, r, visible))
    return track


def render_clip(rng: np.random.Generator, labels: tuple, n_frames: int, size: int) -> np.ndarray:
    """uint8 (3, L, S, S) RGB clip of the main object with `labels` (shape, hue bin, motion)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(40, 170, size=(2, 1)) + rng.uniform(-30, 30, size=(2, 3))  # two greyish colours
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((np.cos(angle) * xx + np.sin(angle) * yy) / size + 1)[..., None] / 2  # (S, S, 1)
    background = base[0] * (1 - ramp) + base[1] * ramp  # (S, S, 3)
    cell = int(rng.choice((4, 6, 8)))
    texture = rng.normal(0, rng.uniform(4, 14), size=(-(-size // cell), -(-size // cell), 3))
    drift = rng.uniform(-0.5, 0.5, size=2)
    objects = [(labels, rng.uniform(0.75, 1.0))]
    for _ in range(int(rng.integers(0, 3))):  # faint others
        other = (int(rng.integers(len(SHAPES))), int(rng.integers(N_HUES)), int(rng.integers(len(MOTIONS))))
        objects.append((other, rng.uniform(0.1, 0.35)))
    layers = []
    for (shape, hue, motion), alpha in objects[::-1]:  # the main object drawn last, on top
        colour = hue_colour((hue + rng.uniform()) / N_HUES, rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0))
        layers.append((shape, alpha, colour, object_track(rng, motion, n_frames, size)))
    frames = np.empty((n_frames, size, size, 3), dtype=np.float32)
    for i in range(n_frames):
        shift = np.round(drift * i).astype(int)
        moving = np.roll(texture, tuple(shift), axis=(0, 1)).repeat(cell, 0).repeat(cell, 1)[:size, :size]
        img = background + moving + 4 * rng.standard_normal((size, size, 3))
        for shape, alpha, colour, track in layers:
            cx, cy, theta, r, visible = track[i]
            if not visible:
                continue
            dx, dy = xx - cx, yy - cy
            u = (dx * np.cos(theta) + dy * np.sin(theta)) / r
            v = (-dx * np.sin(theta) + dy * np.cos(theta)) / r
            cover = shape_mask(shape, u, v).astype(np.float32)[..., None]
            img += alpha * cover * (colour - img)
        frames[i] = img
    return np.clip(frames, 0, 255).astype(np.uint8).transpose(3, 0, 1, 2)  # (3, L, S, S)


def video_batch(seed: int, index: int, batch: int, n_frames: int, size: int) -> tuple:
    """Batch `index` of the video pretext stream -> (uint8 (B, 3, L, S, S), labels long (B, 3): shape, hue, motion).
    With n_frames 1 (still images) no object blinks out and the motion label is IGNORE."""
    rng = np.random.default_rng([seed, 1, index])
    motions = len(MOTIONS) - (n_frames == 1)  # "blink" is last
    labels = np.stack([rng.integers(n, size=batch) for n in (*VIDEO_FACTORS[:2], motions)], axis=1)  # (B, 3)
    clips = np.stack([render_clip(rng, tuple(int(x) for x in row), n_frames, size) for row in labels])
    if n_frames == 1:
        labels[:, 2] = IGNORE
    return torch.from_numpy(clips), torch.from_numpy(labels).long()


# ---------------------------------------------------------------------------------------------------------- audio

def pitch_bin(freq: float) -> int:
    low, high = np.log(PITCH_RANGE[0]), np.log(PITCH_RANGE[1])
    return int(np.clip((np.log(freq) - low) / (high - low) * N_PITCHES, 0, N_PITCHES - 1))


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1 / f^exponent (0 white, 1 pink, 2 brown), unit peak."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
    x = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return x / (np.abs(x).max() + 1e-9)


def sound(rng: np.random.Generator, kind: int, freq: float, t: np.ndarray) -> np.ndarray:
    """A sound of `kind` around `freq` Hz at times t (s), peak about 1."""
    name = SOUNDS[kind]
    phase = rng.uniform(0, 2 * np.pi)
    if name in ("white", "pink", "brown"):
        return coloured_noise(rng, t.size, ("white", "pink", "brown").index(name))
    if name == "band":
        spectrum = np.fft.rfft(rng.standard_normal(t.size))
        f = np.fft.rfftfreq(t.size, 1 / SAMPLE_RATE)
        x = np.fft.irfft(spectrum * (abs(np.log2(np.maximum(f, 1) / freq)) < 0.25), t.size)
        return x / (np.abs(x).max() + 1e-9)
    if name == "pure":
        return np.sin(2 * np.pi * freq * t + phase)
    if name == "am":
        return np.sin(2 * np.pi * freq * t + phase) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 20) * t))
    if name == "fm":
        inst = freq * (1 + rng.uniform(0.03, 0.12) * np.sin(2 * np.pi * rng.uniform(3, 10) * t))
        return np.sin(2 * np.pi * np.cumsum(inst) / SAMPLE_RATE + phase)
    if name in ("chirp_up", "chirp_down"):
        octaves = rng.uniform(1, 2) * (1 if name == "chirp_up" else -1)
        inst = freq * 2 ** (octaves * (t / t[-1] - 0.5))  # centred on freq in log frequency
        return np.sin(2 * np.pi * np.cumsum(inst) / SAMPLE_RATE + phase)
    if name == "clicks":
        x = np.zeros(t.size)
        x[(np.arange(0, t[-1], 1 / rng.uniform(4, 40)) * SAMPLE_RATE).astype(int)] = 1.0
        return np.convolve(x, np.hanning(24), mode="same")
    cycles = (freq * t + phase / (2 * np.pi)) % 1.0
    return 2 * cycles - 1 if name == "saw" else np.sign(cycles - 0.5)  # square


def render_sound(rng: np.random.Generator, labels: tuple, n_samples: int) -> np.ndarray:
    """float32 (N,) mono at SAMPLE_RATE: the main sound of `labels` (kind, pitch bin) over a random part of the
    window (at least 40 %), a faint other sound and background noise."""
    t = np.arange(n_samples) / SAMPLE_RATE
    kind, pitch = labels
    low, high = np.log(PITCH_RANGE[0]), np.log(PITCH_RANGE[1])
    freq = np.exp(low + (pitch + rng.uniform()) / N_PITCHES * (high - low))
    length = int(rng.uniform(0.4, 1.0) * n_samples)
    start = int(rng.integers(0, n_samples - length + 1))
    envelope = np.zeros(n_samples)
    envelope[start:start + length] = 1
    envelope = np.convolve(envelope, np.ones(160) / 160, mode="same")  # 10 ms ramps
    other = sound(rng, int(rng.integers(len(SOUNDS))), float(np.exp(rng.uniform(low, high))), t)
    x = (rng.uniform(0.2, 0.6) * envelope * sound(rng, kind, freq, t) + rng.uniform(0.01, 0.08) * other
         + rng.uniform(0.005, 0.03) * rng.standard_normal(n_samples))
    return np.clip(x, -1, 1).astype(np.float32)


def audio_batch(seed: int, index: int, batch: int, n_frames: int) -> tuple:
    """Batch `index` of the audio pretext stream -> (normalised log-mel windows (B, n_frames, 128), labels long
    (B, 2): kind, pitch bin or IGNORE)."""
    rng = np.random.default_rng([seed, 2, index])
    kinds = rng.integers(len(SOUNDS), size=batch)
    pitches = rng.integers(N_PITCHES, size=batch)
    hop, win = SAMPLE_RATE // 100, int(0.025 * SAMPLE_RATE)
    n_samples = (n_frames - 1) * hop + win  # exactly n_frames Kaldi frames
    waves = np.stack([render_sound(rng, (int(k), int(p)), n_samples) for k, p in zip(kinds, pitches)])
    labels = np.stack([kinds, np.where(np.isin(np.array(SOUNDS)[kinds], BROADBAND), IGNORE, pitches)], axis=1)
    return normalise_fbank(batched_log_mel(torch.from_numpy(waves), n_frames)), torch.from_numpy(labels).long()


def batched_log_mel(waves: torch.Tensor, n_frames: int) -> torch.Tensor:
    """log_mel of each row of (B, N) -> (B, n_frames, 128) in one call: the rows, each less its mean (as log_mel
    removes it) and padded to whole 10-ms hops, laid end to end; window b's frames then start at frame
    b * stride and read only its own samples (a Kaldi frame reads 25 ms from its start)."""
    hop = SAMPLE_RATE // 100
    stride = -(-waves.shape[1] // hop)  # frames per padded row
    rows = nnf.pad(waves - waves.mean(dim=1, keepdim=True), (0, stride * hop - waves.shape[1]))  # (B, stride * hop)
    frames = log_mel(rows.flatten())  # (about B * stride, 128); the whole signal's mean is 0 already
    index = (torch.arange(waves.shape[0]) * stride)[:, None] + torch.arange(n_frames)  # (B, n_frames)
    return frames[index]
