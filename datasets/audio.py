"""Audio: decoding (PyAV), Kaldi log-mel filterbanks (or MFCC), per-segment 1-s windows, SpecAugment.

Features follow the official CTEN/MART releases (Kaldi-compatible fbank: 128 mel bins, 25 ms Hanning
window, 10 ms shift, htk_compat, no energy, no dither; first channel; the waveform's mean removed;
normalised by the AudioSet statistics used by AST). Two named divergences from the official code:
the audio is resampled to `sample_rate` (16 kHz, the rate AST was pre-trained on; the official code
keeps the file's native rate), and each segment's window is aligned with that segment's time span
(the official code cuts consecutive windows regardless of the video's segments).
"""
import math
from pathlib import Path
from typing import Optional

import av
import numpy as np
import torch
from torchaudio.compliance import kaldi

from datasets.errors import DataError

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100  # one feature frame per 10 ms shift
FBANK_MEAN = -6.6268077  # AudioSet statistics of the fbank (AST / official MART)
FBANK_STD = 5.358466
_WINDOW_S = 0.025  # Kaldi frame length
_REPAIR = ("re-extract the audio with `python tools/preprocess ...`, or pass --missing-audio zeros "
           "(missing_audio='zeros') to use silence")


def read_pcm_wav(path: Path, sample_rate: int) -> Optional[np.ndarray]:
    """The first channel of a 16-bit PCM WAV already at `sample_rate` -> float32 (N,) = int16 / 32768 (the values
    PyAV's s16 -> float conversion gives), read directly; None for any other WAV (PyAV decodes and resamples it).
    About 10x faster than decoding through PyAV (experiments/bench_audio_format.py)."""
    import wave
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getframerate() != sample_rate or w.getcomptype() != "NONE":
                return None
            channels, raw = w.getnchannels(), w.readframes(w.getnframes())
    except (wave.Error, EOFError):
        return None
    pcm = np.frombuffer(raw, dtype="<i2")[: len(raw) // (2 * channels) * channels].reshape(-1, channels)
    return pcm[:, 0].astype(np.float32) / 32768.0


def decode_audio(path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Decode an audio file's first audio stream -> float32 (N,) in [-1, 1]: first channel, resampled. A 16-bit
    PCM WAV at `sample_rate` (what tools/preprocess writes by default) is read directly (read_pcm_wav)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "audio file not found", _REPAIR)
    direct = read_pcm_wav(path, sample_rate) if path.suffix.lower() == ".wav" else None
    if direct is not None:
        if direct.size == 0:
            raise DataError(path, "audio stream holds no samples", _REPAIR)
        return torch.from_numpy(direct)
    chunks, resampler = [], None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(path, "file has no audio stream", _REPAIR)
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=sample_rate)
                chunks += [f.to_ndarray()[0] for f in resampler.resample(frame)]
            if resampler is not None:
                chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    except av.FFmpegError as e:
        raise DataError(path, f"cannot decode audio ({e})", _REPAIR) from None
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise DataError(path, "audio stream holds no samples", _REPAIR)
    bad = int(np.count_nonzero(~np.isfinite(wave)))
    if bad:
        raise DataError(path, f"{bad} of {wave.size} decoded samples are NaN or infinite", _REPAIR)
    return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))


def audio_duration(path) -> Optional[float]:
    """Duration in seconds from the container's metadata (no decoding); None when it cannot be read."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / av.time_base if container.duration else None
    except (av.FFmpegError, OSError):
        return None


def num_frames(n_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Feature frames of a waveform (Kaldi framing, snip_edges: only whole 25 ms windows)."""
    win, hop = _window_and_hop(sample_rate)
    return 1 + (max(n_samples, win) - win) // hop


def log_mel(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, frames: Optional[torch.Tensor] = None,
            num_mel_bins: int = 128) -> torch.Tensor:
    """Kaldi log-mel filterbank of a waveform (N,), not normalised -> (N_frames, num_mel_bins), or only the
    rows `frames` (sorted distinct indices, (M,)) -> (M, num_mel_bins), computed from just their samples
    (each Kaldi frame depends on its own 25 ms of samples only; the mean is removed over the whole file)."""
    wave = _at_least_one_window(wave, sample_rate)
    wave = wave - wave.mean()
    win, hop = _window_and_hop(sample_rate)
    if frames is None:
        frames = torch.arange(num_frames(wave.numel(), sample_rate))
    breaks = (torch.nonzero(frames[1:] - frames[:-1] != 1).flatten() + 1).tolist()
    out = []
    for run in torch.tensor_split(frames, breaks):
        first, last = int(run[0]), int(run[-1])
        out.append(kaldi.fbank(wave[None, first * hop:last * hop + win], htk_compat=True, sample_frequency=sample_rate,
                               use_energy=False, window_type="hanning", num_mel_bins=num_mel_bins, dither=0.0,
                               frame_length=1000 * _WINDOW_S, frame_shift=1000 / FRAMES_PER_SECOND))
    return torch.cat(out)


def _window_and_hop(sample_rate: int) -> tuple:
    return int(round(_WINDOW_S * sample_rate)), sample_rate // FRAMES_PER_SECOND


def normalise_fbank(fbank: torch.Tensor) -> torch.Tensor:
    return (fbank - FBANK_MEAN) / (2 * FBANK_STD)


def mfcc(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_mfcc: int = 128) -> torch.Tensor:
    """MFCC (librosa, 128 mel bands, same 25 ms / 10 ms framing as the fbank) -> (N_frames, n_mfcc),
    mean and variance normalised per coefficient over the file (the CTEN paper's audio features)."""
    import librosa  # imported here: it is slow to import and only this option needs it

    wave = _at_least_one_window(wave, sample_rate)
    win, hop = _window_and_hop(sample_rate)
    m = librosa.feature.mfcc(y=(wave - wave.mean()).numpy(), sr=sample_rate, n_mfcc=n_mfcc, n_fft=win,
                             hop_length=hop, n_mels=128, center=False)
    m = torch.from_numpy(m.T.copy())  # (N_frames, n_mfcc)
    return (m - m.mean(0)) / (m.std(0, unbiased=False) + 1e-5)


def _at_least_one_window(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    need = _window_and_hop(sample_rate)[0]
    return wave.repeat(math.ceil(need / wave.numel())) if wave.numel() < need else wave


def window_starts(seg_times: torch.Tensor, period: int, frames: int = 100, training: bool = False,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """First feature frame of each segment's window: seg_times (T, 2) seconds -> (T,) int64.

    A segment at least `frames` long gets a window inside its span (random offset in training, centred in
    evaluation); a shorter one a window centred on it. The audio loops with `period` feature frames (its
    duration x 100), and windows are kept inside [0, max(period, end of the last segment, frames)).
    """
    a, b = seg_times[:, 0].double() * FRAMES_PER_SECOND, seg_times[:, 1].double() * FRAMES_PER_SECOND
    slack = (b - a) - frames
    if training:
        offset = torch.rand(a.shape, generator=generator, dtype=torch.float64) * slack.clamp(min=0)
    else:
        offset = slack.clamp(min=0) / 2
    start = torch.where(slack >= 0, a + offset, (a + b) / 2 - frames / 2).round().long()
    extent = max(period, math.ceil(float(b.max())), frames)
    return start.clamp(0, extent - frames)


def window_frames(starts: torch.Tensor, frames: int, period: int, n_feat: int) -> torch.Tensor:
    """Feature frame of every window position: starts (T,) -> (T, frames) int64. Time loops with `period`
    frames (the audio's duration x 100); the few frames of a period past n_feat (the fbank drops the last
    partial window) repeat frame n_feat - 1."""
    return ((starts[:, None] + torch.arange(frames)) % period).clamp(max=n_feat - 1)


def spec_augment(x: torch.Tensor, freq_mask: int = 24, time_mask: int = 192,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """SpecAugment as in the official MART code: on the T windows concatenated in time (T * F, D), one
    frequency mask of width U{0..freq_mask} and one time mask of width U{0..time_mask} (clipped to T * F
    frames, so it may cross windows), set to 0 before normalisation. x (T, F, D) -> new (T, F, D)."""
    T, F, D = x.shape
    flat = x.reshape(T * F, D).clone()
    fw = min(int(torch.randint(0, freq_mask + 1, (1,), generator=generator)), D)
    f0 = int(torch.randint(0, D - fw + 1, (1,), generator=generator))
    flat[:, f0:f0 + fw] = 0
    tw = min(int(torch.randint(0, time_mask + 1, (1,), generator=generator)), T * F)
    t0 = int(torch.randint(0, T * F - tw + 1, (1,), generator=generator))
    flat[t0:t0 + tw] = 0
    return flat.view(T, F, D)


def segment_features(wave: torch.Tensor, seg_times: torch.Tensor, sample_rate: int = SAMPLE_RATE,
                     frames: int = 100, kind: str = "fbank", n_mfcc: int = 128, training: bool = False,
                     spec_aug: bool = False, freq_mask: int = 24, time_mask: int = 192,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One video's audio input: wave (N,) at sample_rate, seg_times (T, 2) -> float32 (T, frames, D).

    kind='fbank' (default, D = 128): windows of the log-mel, SpecAugment when `spec_aug` (before
    normalisation, as the official code), then normalised. kind='mfcc' (D = n_mfcc): windows of the
    normalised MFCC; SpecAugment does not apply.
    """
    if kind not in ("fbank", "mfcc"):
        raise ValueError(f"audio feature kind must be 'fbank' or 'mfcc', got {kind!r}")
    starts, period = segment_window_starts(wave, seg_times, sample_rate, frames, training, generator)
    return windows(wave, starts, period, sample_rate, frames, kind, n_mfcc, spec_aug, freq_mask, time_mask, generator)


def audio_period(n_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Feature frames after which a waveform's features loop: its duration x 100, at least its frame count."""
    return max(round(n_samples / sample_rate * FRAMES_PER_SECOND), num_frames(n_samples, sample_rate))


def segment_window_starts(wave: torch.Tensor, seg_times: torch.Tensor, sample_rate: int = SAMPLE_RATE,
                          frames: int = 100, training: bool = False,
                          generator: Optional[torch.Generator] = None) -> tuple:
    """-> first feature frame (T,) of each segment's window (`window_starts`) and the audio's period in frames. A
    window's content depends only on its start modulo the period (`window_frames`)."""
    period = audio_period(wave.numel(), sample_rate)
    return window_starts(seg_times, period, frames, training, generator), period


def windows(wave: torch.Tensor, starts: torch.Tensor, period: int, sample_rate: int = SAMPLE_RATE, frames: int = 100,
            kind: str = "fbank", n_mfcc: int = 128, spec_aug: bool = False, freq_mask: int = 24, time_mask: int = 192,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The feature windows starting at `starts` (N,) -> float32 (N, frames, D) (see `segment_features`)."""
    n_feat = num_frames(wave.numel(), sample_rate)
    idx = window_frames(starts, frames, period, n_feat)
    if kind == "mfcc":
        return mfcc(wave, sample_rate, n_mfcc)[idx].float()  # (N, frames, n_mfcc)
    needed, where = torch.unique(idx, return_inverse=True)
    x = log_mel(wave, sample_rate, needed)[where]  # (N, frames, 128)
    if spec_aug:
        x = spec_augment(x, freq_mask, time_mask, generator)
    return normalise_fbank(x).float()
