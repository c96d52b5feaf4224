"""Decode a file's first audio stream with PyAV (resampled), and write it as wav or mp3."""
import wave
from pathlib import Path

import av
import numpy as np

from datasets.errors import DataError

from .video import decode_stream, open_media

LAYOUTS = {1: "mono", 2: "stereo"}


def decode_audio(path: Path, sample_rate: int, channels: int) -> tuple[np.ndarray | None, list[str]]:
    """int16 samples (channels, N) of the first audio stream at `sample_rate`, or None when the file has none.

    Packets that fail to decode are skipped and counted. Returns (samples or None, warnings).
    """
    warnings = []
    with open_media(path) as container:
        if not container.streams.audio:
            return None, warnings
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16p", layout=LAYOUTS[channels], rate=sample_rate)
        chunks = []  # (C, n) each
        _, bad_packets, cut_short = decode_stream(container, stream, path, lambda frame: chunks.extend(
            f.to_ndarray() for f in resampler.resample(frame)))
        if cut_short:
            warnings.append(f"audio stream cut short ({cut_short}); the samples before were kept")
        chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    if bad_packets:
        warnings.append(f"{bad_packets} audio packets failed to decode and were skipped")
    if not chunks:
        return np.zeros((channels, 0), np.int16), warnings
    return np.concatenate(chunks, axis=1), warnings


def write_wav(samples: np.ndarray, sample_rate: int, out_path: Path) -> None:
    """samples: int16 (C, N)."""
    with wave.open(str(out_path), "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(samples.T).tobytes())


def write_mp3(samples: np.ndarray, sample_rate: int, out_path: Path) -> None:
    """samples: int16 (C, N); encoded with LAME (shipped in the PyAV wheel)."""
    with av.open(str(out_path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sample_rate, layout=LAYOUTS[samples.shape[0]])
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="s16p",
                                           layout=LAYOUTS[samples.shape[0]])
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_audio(samples: np.ndarray, sample_rate: int, out_path: Path) -> None:
    """Write int16 (C, N) samples; the format follows the suffix (.wav or .mp3)."""
    {".wav": write_wav, ".mp3": write_mp3}[out_path.suffix](samples, sample_rate, out_path)


def count_decodable_samples(path: Path) -> int:
    """Samples per channel in an audio file written by this tool; raises DataError if it does not decode."""
    try:
        with av.open(str(path)) as container:
            return sum(frame.samples for frame in container.decode(audio=0))
    except (av.error.FFmpegError, IndexError) as e:
        raise DataError(path, f"the audio file does not decode ({e})", "delete it and run preprocess again") from e
