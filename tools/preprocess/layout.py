"""Where one video's outputs go in the official layout, and the record that marks them finished.

ROOT/imgs/<Class>/<video_id>/000001.jpg ... + n_frames + fps, ROOT/mp3/<Class>/<video_id>.wav|.mp3,
ROOT/srt/<Class>/<video_id>.srt. Bookkeeping lives apart, in ROOT/.preprocess/: records/<Class>/<video_id>.json
(written last, so it exists only for a finished video) and tmp/ (work in progress, renamed into place at the end).
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import DataError

from .audio import count_decodable_samples

AUDIO_FORMATS = ("wav", "mp3")
FRAME_NAME = re.compile(r"\d{6}\.jpg")


@dataclass(frozen=True)
class Video:
    src: Path
    label: str
    video_id: str


@dataclass(frozen=True)
class Paths:
    frames: Path
    audio: dict  # {format: Path}
    srt: Path
    record: Path
    tmp: Path


def video_paths(root: Path, label: str, video_id: str) -> Paths:
    return Paths(frames=root / "imgs" / label / video_id,
                 audio={fmt: root / "mp3" / label / f"{video_id}.{fmt}" for fmt in AUDIO_FORMATS},
                 srt=root / "srt" / label / f"{video_id}.srt",
                 record=root / ".preprocess" / "records" / label / f"{video_id}.json",
                 tmp=root / ".preprocess" / "tmp" / label / video_id)


def source_stamp(src: Path) -> dict:
    """Size and modification time of the source video: a changed source is processed again."""
    st = src.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def count_frames(frames_dir: Path) -> int:
    """Number of frames in a finished frame folder; raises DataError unless n_frames matches 000001.jpg..N."""
    n_file = frames_dir / "n_frames"
    try:
        n = int(n_file.read_text().strip())
    except (OSError, ValueError) as e:
        raise DataError(n_file, f"missing or unreadable ({e})", "run preprocess again") from e
    names = sorted(p.name for p in frames_dir.iterdir() if FRAME_NAME.fullmatch(p.name))
    if names != [f"{i:06d}.jpg" for i in range(1, n + 1)]:
        raise DataError(frames_dir, f"n_frames says {n} but {len(names)} numbered jpgs are there", "run preprocess again")
    return n


def saved_settings(video: Video, root: Path) -> dict | None:
    """The settings in the video's record (None when there is no readable record)."""
    try:
        settings = json.loads(video_paths(root, video.label, video.video_id).record.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return settings if isinstance(settings, dict) else None


def finished(video: Video, root: Path, settings: dict) -> bool:
    """True when the video's record exists for the same source and settings and its outputs verify."""
    paths = video_paths(root, video.label, video.video_id)
    try:
        record = json.loads(paths.record.read_text())
        if record["settings"] != settings or record["source"] != source_stamp(video.src):
            return False
        if count_frames(paths.frames) != record["n_frames"]:
            return False
        if record["audio"] and count_decodable_samples(paths.audio[settings["audio_format"]]) == 0:
            return False
        return paths.srt.is_file() == bool(record["transcript"])
    except (OSError, ValueError, KeyError, TypeError):  # DataError is a ValueError
        return False
