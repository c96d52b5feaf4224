"""SubRip (.srt) transcripts: parse, format, read a sidecar file, read an embedded subtitle stream."""
import re
from pathlib import Path
from typing import NamedTuple

import av

from .errors import DataError
from .video import open_media

TIMING = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})\s*-->\s*(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")
MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")


class Cue(NamedTuple):
    start: float  # seconds
    end: float
    text: str


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def parse_srt(text: str) -> list[Cue]:
    """Cues of an .srt text, in file order. Lenient: optional index lines, CRLF, ',' or '.' before the
    milliseconds, HTML/ASS markup removed; blocks without a timing line are ignored."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = block.strip().split("\n")
        for i, line in enumerate(lines):
            timing = TIMING.search(line)
            if timing:
                g = timing.groups()
                words = " ".join(MARKUP.sub("", t).strip() for t in lines[i + 1:])
                cues.append(Cue(_seconds(*g[:4]), _seconds(*g[4:]), " ".join(words.split())))
                break
    return cues


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def format_srt(cues: list[Cue]) -> str:
    return "".join(f"{i}\n{_timestamp(c.start)} --> {_timestamp(c.end)}\n{c.text}\n\n" for i, c in enumerate(cues, 1))


def read_sidecar(path: Path) -> list[Cue]:
    """Cues of a sidecar .srt (UTF-8, with or without BOM, else Windows-1252). An empty file gives [];
    text with no timing line raises DataError."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    cues = parse_srt(text)
    if not cues and text.strip():
        raise DataError(path, "not a SubRip file: no 'HH:MM:SS,mmm --> HH:MM:SS,mmm' timing line found",
                        "fix or delete the .srt (without it the transcript comes from the video or speech recognition)")
    return cues


def embedded_subtitles(path: Path) -> list[Cue] | None:
    """Cues of the first text subtitle stream inside a media file; None when it has none (bitmap
    subtitles such as DVD/PGS carry no text and are not used)."""
    with open_media(path) as container:
        streams = [s for s in container.streams.subtitles if s.codec_context.codec.text_sub]
        if not streams:
            return None
        stream, cues = streams[0], []
        try:
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                start = float(packet.pts * stream.time_base)
                end = start + float((packet.duration or 0) * stream.time_base)
                text = " ".join(MARKUP.sub("", s.dialogue.decode("utf-8", "replace"))
                                for s in packet.decode() if isinstance(s, av.subtitles.subtitle.AssSubtitle))
                if text.strip():
                    cues.append(Cue(start, end, " ".join(text.split())))
        except av.error.FFmpegError as e:
            raise DataError(path, f"the embedded subtitle stream #{stream.index} does not decode ({e})",
                            "put a sidecar .srt beside the video, which takes precedence") from e
        return cues
