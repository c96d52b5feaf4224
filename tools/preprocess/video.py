"""Open a media file and decode a stream of it with PyAV (failures named), and write a video's frames as the
official layout's JPEGs (000001.jpg, ...)."""
import itertools
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
from PIL import Image

from datasets.errors import DataError

MAX_TIMELINE_FPS = 120
REENCODE_FIX = "re-download the video, or re-encode it into a format FFmpeg reads, or remove it from the source folder"


def open_media(path: Path) -> av.container.InputContainer:
    """Open a media file for reading; a missing, empty or unreadable file raises DataError naming it."""
    if not path.is_file():
        raise DataError(path, "file not found", "check the source folder")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)", REENCODE_FIX)
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise DataError(path, f"FFmpeg cannot read it ({e})", REENCODE_FIX) from e


def decode_stream(container: av.container.InputContainer, stream: av.stream.Stream, path: Path,
                  on_frame: Callable[[av.frame.Frame], None]) -> tuple[int, int, str]:
    """Decode `stream` packet by packet and call on_frame on every frame, as the ffmpeg command line does: a
    packet that fails to decode is skipped and counted; a demux (or on_frame) FFmpeg error ends the stream, and
    raises DataError naming the file when no frame came before it.
    Returns (frames, packets skipped, the error that cut the stream short or '')."""
    n_frames, bad_packets = 0, 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                bad_packets += 1
                continue
            for frame in frames:
                on_frame(frame)
                n_frames += 1
    except av.error.FFmpegError as e:
        if n_frames == 0:
            raise DataError(path, f"cannot demux the {stream.type} stream ({e})", REENCODE_FIX) from e
        return n_frames, bad_packets, str(e)
    return n_frames, bad_packets, ""


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) scaled so that the shorter side is `short_side` (0 keeps the size), aspect ratio kept."""
    if short_side == 0:
        return width, height
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def timeline_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The constant rate frames are written at: FFmpeg's guessed (base) rate, the lowest rate that represents
    the stream's timestamps (30000/1001 for NTSC video, 30 for a clip mixing 10 and 30 fps), unless it is far
    above the average rate (a time-base artefact such as 1000 or 90000); then the average rate. None if neither."""
    guessed, average = stream.guessed_rate, stream.average_rate
    if guessed and guessed <= MAX_TIMELINE_FPS and (not average or guessed <= 4 * average):
        return Fraction(guessed)
    return Fraction(average) if average else None


class Timeline:
    """Decoded frames (presentation order) -> output frames on a constant-rate timeline from the first frame:
    output j shows the frame on screen at t0 + (j + 0.5) / rate, so a frame is repeated while it stays on screen
    and dropped when it is shown for less than one output interval. A constant-rate stream at `rate` (with
    timestamp jitter under half a frame) maps one to one."""

    def __init__(self, rate: Fraction, emit: Callable[[object, bool], None]):
        """emit(frame, repeat): write the next output frame; repeat is True when it is the same frame again."""
        self.rate, self.emit = rate, emit
        self.t0 = self.last_t = None
        self.pending = None  # the frame on screen, not yet emitted past its time
        self.n_out = self.repeated = self.dropped = 0
        self._pending_out = 0

    def add(self, frame: object, t: float | None) -> None:
        """t: presentation time in seconds (None: one output interval after the previous frame)."""
        t = (self.last_t + 1 / float(self.rate)) if t is None and self.last_t is not None else (t or 0.0)
        if self.t0 is None:
            self.t0 = t
        self._emit_until(t)
        if self.pending is not None and self._pending_out == 0:
            self.dropped += 1
        self.pending, self._pending_out, self.last_t = frame, 0, t

    def finish(self) -> None:
        """Emit the last frame for every output time up to its own (the clip ends one interval after it)."""
        if self.pending is not None:
            self._emit_until(self.last_t + 1 / float(self.rate))

    def _emit_until(self, t: float) -> None:
        while self.pending is not None and self.t0 + (self.n_out + 0.5) / float(self.rate) < t:
            self.emit(self.pending, self._pending_out > 0)
            self.repeated += self._pending_out > 0
            self._pending_out += 1
            self.n_out += 1


def upright_image(frame: av.VideoFrame, short_side: int) -> Image.Image:
    """RGB image of a decoded frame, turned as the file's display matrix says, short side resized."""
    turns = round(frame.rotation / 90) % 4  # counter-clockwise quarter turns
    w, h = (frame.width, frame.height) if turns % 2 == 0 else (frame.height, frame.width)
    w, h = resized_size(w, h, short_side)
    if turns % 2:
        w, h = h, w
    rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()  # (H, W, 3)
    return Image.fromarray(np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb)


def decode_on_timeline(path: Path, emit: Callable[[av.VideoFrame, bool], None]) -> tuple[int, float, list[str]]:
    """Decode the first video stream of `path` onto a constant-rate timeline (Timeline): emit(frame, repeat) is
    called once per output frame k, the frame on screen k / fps seconds after the first one (repeat: the same
    frame as the call before), so memory stays one frame whatever the length.

    Packets that fail to decode are skipped and counted, as the ffmpeg command line does (the frame before
    them stays on screen); a file with no video stream or no decodable frame raises DataError.
    Returns (frames emitted, fps, warnings).
    """
    warnings = []
    with open_media(path) as container:
        if not container.streams.video:
            raise DataError(path, "no video stream (audio-only or not a video file)",
                            "replace it with the video or remove it from the source folder")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = timeline_rate(stream)
        if rate is None:
            raise DataError(path, "the frame rate is unknown (no rate in the file)", REENCODE_FIX)
        timeline = Timeline(rate, emit)
        n_decoded, bad_packets, cut_short = decode_stream(container, stream, path, lambda frame: timeline.add(
            frame, float(frame.pts * frame.time_base) if frame.pts is not None else None))
        timeline.finish()
    if cut_short:
        warnings.append(f"video stream cut short after {n_decoded} frames ({cut_short}); the frames before were kept")
    if n_decoded == 0:
        raise DataError(path, "the video stream has no decodable frame", REENCODE_FIX)
    if bad_packets:
        warnings.append(f"{bad_packets} video packets failed to decode and were skipped")
    if timeline.repeated or timeline.dropped:
        warnings.append(f"variable frame rate: written on a constant {float(rate):.6g} fps timeline by presentation "
                        f"time ({n_decoded} frames decoded, {timeline.n_out} written: {timeline.repeated} repeats, "
                        f"{timeline.dropped} dropped)")
    return timeline.n_out, float(rate), warnings


def extract_frames(path: Path, out_dir: Path, short_side: int, jpeg_quality: int) -> tuple[int, float, list[str]]:
    """Write the first video stream as out_dir/000001.jpg, ... on a constant-rate timeline (decode_on_timeline):
    frame k is what shows at k / fps seconds after the first frame, also for variable-frame-rate video; a
    repeated frame is a copy of the JPEG before. Returns (n_frames, fps, warnings)."""
    names = (out_dir / f"{i:06d}.jpg" for i in itertools.count(1))
    last = []  # the JPEG of the frame on screen

    def write(frame: av.VideoFrame, repeat: bool) -> None:
        name = next(names)
        if repeat:
            shutil.copyfile(last[0], name)
        else:
            upright_image(frame, short_side).save(name, quality=jpeg_quality)
            last[:] = [name]

    return decode_on_timeline(path, write)
