"""Transcripts (MART's text modality): .srt parsing and per-segment texts.

The parser is tolerant: a byte-order mark, CRLF or CR line ends, missing index lines, missing blank
lines between cues, '.' instead of ',' before the milliseconds and trailing cue settings are accepted.
A block without a valid timing line (or with end < start) is skipped and counted in `garbage`. Cues whose
text is "Conversion failed" (what the official release's speech recogniser wrote when it failed) are
dropped, as the official code does. Markup (HTML tags, ASS override blocks) is removed and runs of whitespace
become one space. tools/preprocess reads sidecar .srt files and writes its own with this parser and Cue.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

if TYPE_CHECKING:  # segment_texts only takes tensors; tools/preprocess imports this module without torch
    import torch

_TIME = r"(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_FAILED = "Conversion failed"


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str


@dataclass
class Transcript:
    cues: list = field(default_factory=list)
    garbage: int = 0  # blocks skipped as unparsable

    @property
    def unusable(self) -> bool:
        """Nothing but garbage: the file had content, none of it a cue."""
        return not self.cues and self.garbage > 0


def parse_srt(text: str) -> Transcript:
    """SRT text -> Transcript (cues in file order, count of skipped blocks)."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    out = Transcript()
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        timing_at = [i for i, ln in enumerate(lines) if _TIMING.match(ln)]
        if not timing_at or (timing_at[0] > 0 and not (timing_at[0] == 1 and lines[0].isdigit())):
            out.garbage += 1
            if not timing_at:
                continue
        for k, i in enumerate(timing_at):
            stop = timing_at[k + 1] if k + 1 < len(timing_at) else len(lines)
            body = lines[i + 1:stop]
            if stop < len(lines) and body and body[-1].isdigit():
                body = body[:-1]  # the next cue's index line
            m = _TIMING.match(lines[i])
            start, end = _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:])
            if end < start:
                out.garbage += 1
                continue
            cue_text = clean_text(body)
            if cue_text and cue_text != _FAILED:
                out.cues.append(Cue(start, end, cue_text))
    return out


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + (int(ms.ljust(3, "0")) / 1000 if ms else 0.0)


def clean_text(lines: Iterable[str]) -> str:
    """One cue's text from its lines: markup removed, words joined by single spaces."""
    return " ".join(word for line in lines for word in _MARKUP.sub("", line).split())


def srt_text(path) -> str:
    """The text of an .srt file: UTF-8 with or without BOM, else cp1252."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_srt(path) -> Transcript:
    """Read and parse an .srt file (see srt_text). Warns when the file holds nothing but garbage."""
    path = Path(path)
    transcript = parse_srt(srt_text(path))
    if transcript.unusable:
        warnings.warn(f"{path}: no valid subtitle cue in {transcript.garbage} block(s); using empty text "
                      "(fix: regenerate it with `python tools/preprocess ...` or delete it)", stacklevel=2)
    return transcript


def segment_texts(cues: list, seg_times: torch.Tensor, duration: Optional[float] = None) -> list:
    """Text per segment: each cue's text is appended (space-separated, in cue order) to every segment
    whose [start, end) overlaps the cue. seg_times (T, 2) seconds -> list of T strings ('' when none).

    With `duration`, cues are clipped to [0, duration) (cues past the end are dropped) and time is
    periodic with that period, matching loop-padded videos whose segments run past the duration.
    """
    times = seg_times.double().tolist()
    texts = [[] for _ in times]
    for cue in cues:
        s, e = cue.start, cue.end
        if duration is not None:
            s, e = max(s, 0.0), min(e, duration)
            if e <= s:
                continue
        for t, (a, b) in enumerate(times):
            if _overlaps(s, e, a, b, duration):
                texts[t].append(cue.text)
    return [" ".join(x) for x in texts]


def _overlaps(s: float, e: float, a: float, b: float, period: Optional[float]) -> bool:
    if period is None or period <= 0:
        return max(s, a) < min(e, b)
    first, last = int(a // period), int(b // period)
    return any(max(s + k * period, a) < min(e + k * period, b) for k in range(first, last + 1))
