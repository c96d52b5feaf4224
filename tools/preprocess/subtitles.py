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


def read_sidecar(path: Path, warnings: list[str] | None = None) -> list[Cue]:
    """Cues of a sidecar .srt. A file without blocks (empty, blank) gives []; one whose blocks are all garbage
    (no valid timing line) raises DataError naming it; some garbage blocks are skipped, and counted in a
    message appended to `warnings`."""
    transcript = parse_srt(srt_text(path))
    if transcript.unusable:
        raise DataError(path, f"not a SubRip file: none of its {transcript.garbage} block(s) has a valid "
                              "'HH:MM:SS,mmm --> HH:MM:SS,mmm' timing line",
                        "fix or delete the .srt (without it the transcript comes from the video or speech recognition)")
    if transcript.garbage and warnings is not None:
        warnings.append(f"the sidecar {path.name}: {transcript.garbage} of "
                        f"{transcript.garbage + len(transcript.cues)} blocks have no valid timing line (or end "
                        "before they start) and were skipped")
    return transcript.cues


def clip_cues(cues: list[Cue], duration: float) -> tuple[list[Cue], str]:
    """Cues clipped to the video's [0, duration] seconds: one starting at or after the end is dropped, one
    running past it is cut. Returns (cues, '' or a message counting what changed)."""
    kept, cut, dropped = [], 0, 0
    for c in cues:
        if c.start >= duration:
            dropped += 1
        elif c.end > duration:
            kept.append(Cue(max(c.start, 0.0), duration, c.text))
            cut += 1
        else:
            kept.append(c)
    if not (cut or dropped):
        return kept, ""
    return kept, (f"{cut + dropped} of {len(cues)} transcript cues run past the video's end ({duration:.3f} s): "
                  f"{cut} cut at the end, {dropped} dropped")


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
