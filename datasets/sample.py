"""One video -> one sample dict (the contract in datasets/video_emotion.py), from a frame count, a frame rate and
readers: the one place a sample is built, used by the dataset (JPEG folders) and by tools/predict.py (a decoded
video file) alike."""
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from datasets.audio import segment_features, segment_window_starts
from datasets.frames import draw_spatial_aug, tsn_sample
from datasets.transcripts import segment_texts


@dataclass(frozen=True)
class SampleSpec:
    """How a video is sampled: T segments of one L-frame snippet at S pixels, and F audio frames per segment."""
    seq_len: int = 16
    snippet_duration: int = 16
    sample_size: int = 112
    audio_frames: int = 100
    audio_features: str = "fbank"
    n_mfcc: int = 128
    spec_augment: bool = False
    freq_mask: int = 24
    time_mask: int = 192
    sample_rate: int = 16000


def silence(n_frames: int, fps: float, sample_rate: int) -> torch.Tensor:
    """The waveform (N,) a video without usable audio gets: zeros of the video's length."""
    return torch.zeros(max(1, round(n_frames / fps * sample_rate)))


def build_sample(spec: SampleSpec, n_frames: int, fps: float, read_visual: Callable, training: bool,
                 generator: Optional[torch.Generator] = None, wave: Optional[torch.Tensor] = None,
                 with_audio: bool = False, cues: Optional[Sequence] = None,
                 read_audio: Optional[Callable] = None) -> dict:
    """The sample of one video (no 'label'/'index': the caller adds what it knows).

    read_visual(frame_indices (T, L), aug (8,), generator) -> {'video': uint8 (T, 3, L, S, S)} or the feature
    cache's fields; wave: float32 (N,) at spec.sample_rate, or None for silence of the video's length (with_audio);
    cues: transcript cues (.start, .end, .text), or None for empty texts; read_audio(window starts (T,), period)
    -> {'audio_feats': (T, W)}: the feature cache's audio trunk features instead of the windows themselves. Random
    draws (TSN offsets, the spatial transform, audio windows, SpecAugment) come from `generator` in this order when
    training."""
    frame_indices, seg_bounds = tsn_sample(torch.arange(n_frames), spec.seq_len, spec.snippet_duration, training,
                                           generator)
    seg_times = seg_bounds.double() / fps  # (T, 2)
    aug = draw_spatial_aug(training, generator)
    sample = {
        "frame_indices": frame_indices,
        "seg_bounds": seg_bounds,
        "seg_times": seg_times.float(),
        "aug": aug,
        "n_frames": torch.tensor(n_frames, dtype=torch.long),
        "fps": torch.tensor(fps, dtype=torch.float32),
        "texts": segment_texts(cues, seg_times, n_frames / fps) if cues is not None else [""] * spec.seq_len,
    }
    sample.update(read_visual(frame_indices, aug, generator))
    if with_audio:
        if wave is None:
            wave = silence(n_frames, fps, spec.sample_rate)
        if read_audio is not None:
            sample.update(read_audio(*segment_window_starts(wave, seg_times, spec.sample_rate, spec.audio_frames,
                                                            training, generator)))
            return sample
        sample["audio"] = segment_features(
            wave, seg_times, spec.sample_rate, spec.audio_frames, spec.audio_features, spec.n_mfcc,
            training=training, spec_aug=spec.spec_augment and training, freq_mask=spec.freq_mask,
            time_mask=spec.time_mask, generator=generator)  # (T, F, 128)
    return sample
