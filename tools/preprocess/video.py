"""Open a media file and decode a stream of it with PyAV (failures named), and write a video's frames as the
official layout's JPEGs (000001.jpg, ...)."""
import itertools
from pathlib import Path
from typing import Callable

import av
import numpy as np
from PIL import Image

from datasets.errors import DataError

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


def frame_rate(stream: av.video.stream.VideoStream, n_frames: int, duration_s: float) -> float:
    """Frames per second: the stream's average rate, else its guessed rate, else frames over duration."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate:
            return float(rate)
    return n_frames / duration_s if duration_s > 0 else 0.0


def upright_image(frame: av.VideoFrame, short_side: int) -> Image.Image:
    """RGB image of a decoded frame, turned as the file's display matrix says, short side resized."""
    turns = round(frame.rotation / 90) % 4  # counter-clockwise quarter turns
    w, h = (frame.width, frame.height) if turns % 2 == 0 else (frame.height, frame.width)
    w, h = resized_size(w, h, short_side)
    if turns % 2:
        w, h = h, w
    rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()  # (H, W, 3)
    return Image.fromarray(np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb)


def extract_frames(path: Path, out_dir: Path, short_side: int, jpeg_quality: int) -> tuple[int, float, list[str]]:
    """Write every decoded frame of the first video stream as out_dir/000001.jpg, ... .

    Packets that fail to decode are skipped and counted, as the ffmpeg command line does; a file with
    no video stream or no decodable frame raises DataError. Returns (n_frames, fps, warnings).
    """
    warnings = []
    with open_media(path) as container:
        if not container.streams.video:
            raise DataError(path, "no video stream (audio-only or not a video file)",
                            "replace it with the video or remove it from the source folder")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        names = (out_dir / f"{i:06d}.jpg" for i in itertools.count(1))
        n_frames, bad_packets, cut_short = decode_stream(container, stream, path, lambda frame: upright_image(
            frame, short_side).save(next(names), quality=jpeg_quality))
        if cut_short:
            warnings.append(f"video stream cut short after {n_frames} frames ({cut_short}); "
                            "the frames before were kept")
        if n_frames == 0:
            raise DataError(path, "the video stream has no decodable frame", REENCODE_FIX)
        if bad_packets:
            warnings.append(f"{bad_packets} video packets failed to decode and were skipped")
        duration_s = float(stream.duration * stream.time_base) if stream.duration else 0.0
        fps = frame_rate(stream, n_frames, duration_s)
    if fps <= 0:
        raise DataError(path, "the frame rate is unknown (no rate and no duration in the file)", REENCODE_FIX)
    return n_frames, fps, warnings
