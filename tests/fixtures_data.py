"""Builders of tiny on-disk data in the dataset layout (frames, audio, transcripts, annotation JSON)."""
import json
from pathlib import Path
from typing import Optional

import av
import numpy as np
from PIL import Image


def frame_image(i: int, width: int = 40, height: int = 30) -> Image.Image:
    """Frame i: red channel = 8 * (i % 32) everywhere (readable back after JPEG), green/blue gradients."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = 8 * (i % 32)
    img[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    img[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    return Image.fromarray(img)


def write_frames(video_dir, n: int, width: int = 40, height: int = 30, n_frames_file: bool = True,
                 fps: Optional[float] = None) -> Path:
    video_dir = Path(video_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        frame_image(i, width, height).save(video_dir / f"{i + 1:06d}.jpg", quality=95)
    if n_frames_file:
        (video_dir / "n_frames").write_text(str(n))
    if fps is not None:
        (video_dir / "fps").write_text(str(fps))
    return video_dir


def tone(seconds: float, sample_rate: int = 16000, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path, wave: np.ndarray, sample_rate: int = 16000) -> Path:
    """Write float waveform(s) in [-1, 1], (N,) or (channels, N), as .wav (PCM 16) or .mp3, with PyAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = np.atleast_2d(wave)
    layout = {1: "mono", 2: "stereo"}[wave.shape[0]]
    pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        if path.suffix == ".mp3":
            stream = container.add_stream("libmp3lame", rate=sample_rate, layout=layout)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16p", layout=layout)
        else:
            stream = container.add_stream("pcm_s16le", rate=sample_rate, layout=layout)
            frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), format="s16", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_video_only(path, n: int = 2, size: int = 16) -> Path:
    """A small MJPEG .avi with a video stream and no audio stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuvj420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.asarray(frame_image(i, size, size)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return Path(path)


def srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_srt(path, cues: list) -> Path:
    """cues: [(start_s, end_s, text)] -> a well-formed .srt."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = [f"{k}\n{srt_time(s)} --> {srt_time(e)}\n{text}\n" for k, (s, e, text) in enumerate(cues, 1)]
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def make_video_root(root, classes=("Anger", "Joy"), train_per_class: int = 4, test_per_class: int = 1,
                    n_frames: int = 24, seconds: float = 2.0, audio: bool = True, srt: bool = True) -> Path:
    """A tiny dataset root: frames (n_frames each, no fps file), a tone .wav of `seconds` per video,
    one transcript cue per video, and root/ann.json. Video ids are '<class>_<k>'. Returns the JSON path."""
    root = Path(root)
    database = {}
    for c, cls in enumerate(classes):
        for k in range(train_per_class + test_per_class):
            vid = f"{cls.lower()}_{k}"
            write_frames(root / "imgs" / cls / vid, n_frames)
            if audio:
                write_audio(root / "mp3" / cls / f"{vid}.wav", tone(seconds, freq=300.0 + 100 * c))
            if srt:
                write_srt(root / "srt" / cls / f"{vid}.srt", [(0.0, seconds / 2, f"{cls.lower()} words")])
            database[vid] = {"subset": "training" if k < train_per_class else "validation",
                             "annotations": {"label": cls}}
    path = root / "ann.json"
    path.write_text(json.dumps({"labels": list(classes), "database": database}))
    return path
