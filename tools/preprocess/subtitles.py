"""Transcripts for preprocessing, on datasets/transcripts.py's parser and Cue: format an .srt, read a sidecar
(failing on one with no usable cue), read an embedded subtitle stream."""
from pathlib import Path

import av

from datasets.errors import DataError
from datasets.transcripts import Cue, clean_text, parse_srt, srt_text

from .video import open_media


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def format_srt(cues: list[Cue]) -> str:
    return "".join(f"{i}\n{_timestamp(c.start)} --> {_timestamp(c.end)}\n{c.text}\n\n" for i, c in enumerate(cues, 1))


def read_sidecar(path: Path) -> list[Cue]:
    """Cues of a sidecar .srt. A file without blocks (empty, blank) gives []; one whose blocks are all garbage
    (no valid timing line) raises DataError naming it."""
    transcript = parse_srt(srt_text(path))
    if transcript.unusable:
        raise DataError(path, f"not a SubRip file: none of its {transcript.garbage} block(s) has a valid "
                              "'HH:MM:SS,mmm --> HH:MM:SS,mmm' timing line",
                        "fix or delete the .srt (without it the transcript comes from the video or speech recognition)")
    return transcript.cues


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
                text = clean_text(s.dialogue.decode("utf-8", "replace")
                                  for s in packet.decode() if isinstance(s, av.subtitles.subtitle.AssSubtitle))
                if text:
                    cues.append(Cue(start, end, text))
        except av.error.FFmpegError as e:
            raise DataError(path, f"the embedded subtitle stream #{stream.index} does not decode ({e})",
                            "put a sidecar .srt beside the video, which takes precedence") from e
        return cues
