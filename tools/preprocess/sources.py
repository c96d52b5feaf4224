"""Find the source videos: SRC/<Class>/<video_id>.<ext>."""
from pathlib import Path

from datasets.errors import DataError

from .layout import Video

VIDEO_EXTS = ("mp4", "avi", "mkv", "webm", "mov", "m4v", "flv", "wmv", "mpg", "mpeg", "3gp", "ts", "ogv")


def find_videos(src: Path, exts: tuple[str, ...]) -> tuple[list[Video], list[Path]]:
    """Videos sorted by (class, id), and the other files found in the class folders (ignored; sidecar
    .srt files are not counted). Two files of one video id in one class folder raise DataError."""
    if not src.is_dir():
        raise DataError(src, "source folder not found", "pass --src the folder holding <Class>/<video_id>.<ext>")
    videos, ignored, seen = [], [], {}
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            ext = f.suffix[1:].lower()
            if ext not in exts:
                if ext != "srt":
                    ignored.append(f)
                continue
            key = (class_dir.name, f.stem)
            if key in seen:
                raise DataError(f, f"a second file for video {f.stem!r} (the first is {seen[key].name})",
                                "keep one file per video id in each class folder")
            seen[key] = f
            videos.append(Video(src=f, label=class_dir.name, video_id=f.stem))
    if not videos:
        raise DataError(src, f"no videos found as <Class>/<video_id>.<ext> with ext in {','.join(exts)}",
                        "check --src, or add the extension with --exts")
    return videos, ignored
