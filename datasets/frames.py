"""Frame folders: counting, frame rate, TSN temporal sampling, the per-video spatial transform, decoding (PIL on the
CPU, or torchvision.io.decode_jpeg batched on a device: `decode_views`).

Layout (the official releases'): `imgs/<Class>/<video_id>/000001.jpg ...` (1-based, six digits), with an
optional `n_frames` file (the frame count) and an optional `fps` file (frames per second). Frame indices
in this module are 0-based: index i is the file `{i + 1:06d}.jpg`.
"""
import os
import re
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.functional import InterpolationMode, rotate

from datasets.errors import DataError

_FRAME_FILE = re.compile(r"^\d{6}\.jpg$")
_REEXTRACT = "re-extract this video's frames with `python tools/preprocess ...`"

# The spatial draw `aug` (8,) float32: [crop, hflip, angle, brightness, 0, 0, 0, 0].
#   crop: index into CROPS; hflip: 1.0 to mirror; angle: counter-clockwise rotation in degrees;
#   brightness: pixel multiplier. Slots 4-7 are always 0 (the width is fixed by the sample contract).
CROPS = ("centre", "top-left", "top-right", "bottom-left", "bottom-right")
IDENTITY_AUG = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0)


def frame_path(video_dir, i: int) -> Path:
    """0-based frame index -> its JPEG file."""
    return Path(video_dir) / f"{i + 1:06d}.jpg"


def count_frames(video_dir) -> int:
    """Number of frames N: the folder must hold 000001.jpg..N.jpg. An `n_frames` file is trusted when its first
    and last frames are there and the next is not (three file checks); otherwise the JPEGs are counted and must be
    numbered from 000001.jpg without a gap, and an `n_frames` claiming more than that is a half-written or
    damaged folder too (DataError); one claiming fewer (stale) is ignored."""
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise DataError(video_dir, "frame folder not found", "create it with `python tools/preprocess ...`, "
                        "which extracts imgs/<Class>/<video_id>/000001.jpg ...")
    claimed = _n_frames_file(video_dir / "n_frames")
    if claimed and claimed > 0 and frame_path(video_dir, 0).is_file() and frame_path(video_dir, claimed - 1).is_file() \
            and not frame_path(video_dir, claimed).is_file():
        return claimed
    numbers = [int(name[:6]) for name in os.listdir(video_dir) if _FRAME_FILE.match(name)]
    if not numbers:
        raise DataError(video_dir, "no frames (000001.jpg ...) in the frame folder", _REEXTRACT)
    n = len(numbers)
    if min(numbers) != 1 or max(numbers) != n:
        raise DataError(video_dir, f"{n} frames numbered {min(numbers):06d}.jpg..{max(numbers):06d}.jpg, not "
                                   f"000001.jpg..{n:06d}.jpg (a half-written or damaged folder)", _REEXTRACT)
    if claimed is not None and claimed > n:
        raise DataError(video_dir, f"n_frames says {claimed} but only 000001.jpg..{n:06d}.jpg are there "
                                   "(a half-written or damaged folder)", _REEXTRACT)
    return n


def _n_frames_file(path: Path) -> Optional[int]:
    try:
        return int(float(path.read_text().strip()))
    except (OSError, ValueError):
        return None


def read_fps(video_dir, n_frames: int, audio_seconds: Optional[float] = None, default_fps: float = 30.0) -> float:
    """Frames per second: the `fps` file if present, else n_frames / audio duration, else default_fps."""
    path = Path(video_dir) / "fps"
    if path.is_file():
        try:
            fps = float(path.read_text().strip())
        except ValueError:
            fps = 0.0
        if not (fps > 0 and np.isfinite(fps)):
            raise DataError(path, f"fps file does not hold a positive number: {path.read_text()[:40]!r}",
                            "write the frame rate (e.g. 29.97) into it, or delete it")
        return fps
    if audio_seconds is not None and audio_seconds > 0:
        return n_frames / audio_seconds
    return float(default_fps)


# ------------------------------------------------------------------------------------------- TSN


def tsn_sample(frames: Sequence[int], seq_len: int, snippet_duration: int, training: bool,
               generator: Optional[torch.Generator] = None) -> tuple:
    """TSN sampling of one snippet per segment from a frame list.

    frames: 1-D frame indices (torch.arange(n_frames) for a whole video; never modified). The list is
    loop-padded to P = max(len, T * L) positions (position p is frames[p % len]), cut into T equal
    segments of P // T positions, and from each one snippet of L consecutive positions is taken:
    at a uniformly random start inside the segment in training (any of the P // T - L + 1 starts; the
    official code never draws the last one), centred in evaluation.
    Returns frame_indices (T, L) int64 (values of `frames`) and seg_bounds (T, 2) int64, the
    [start, end) positions of each segment in the padded space.
    """
    frames = torch.as_tensor(frames, dtype=torch.long)
    n, T, L = frames.numel(), seq_len, snippet_duration
    if n == 0:
        raise ValueError("tsn_sample needs at least one frame")
    seg = max(n, T * L) // T
    base = torch.arange(T) * seg  # (T,)
    if training:
        offset = torch.randint(0, seg - L + 1, (T,), generator=generator)
    else:
        offset = torch.full((T,), (seg - L) // 2)
    positions = (base + offset)[:, None] + torch.arange(L)  # (T, L)
    return frames[positions % n], torch.stack([base, base + seg], dim=1)


def erased_view_frames(seg_bounds: torch.Tensor, keep: torch.Tensor, n_frames: int, seq_len: int,
                       snippet_duration: int, training: bool, generator: Optional[torch.Generator] = None
                       ) -> torch.Tensor:
    """The frames of an erased view (CTEN, Sec. 3.3): TSN sampling (`tsn_sample`, the same boundary rule) over the
    frames of the kept segments -> frame_indices int64 (T, L).

    seg_bounds (S, 2): [start, end) of each segment in the loop-padded frame index space (padded index p is frame
    p % n_frames), as `tsn_sample` returns them; keep (S,) bool. The kept segments' frames are concatenated in time
    order (an empty `keep` means the whole video) and sampled like a video of their own.
    """
    if not keep.any():
        keep = torch.ones_like(keep)
    frames = [torch.arange(int(s), int(e)) for (s, e), k in zip(seg_bounds.tolist(), keep.tolist()) if k]
    frames = torch.cat(frames) % n_frames
    if frames.numel() == 0:
        raise ValueError("the kept segments hold no frames (every [start, end) is empty)")
    return tsn_sample(frames, seq_len, snippet_duration, training, generator)[0]


# ------------------------------------------------------------------------------- spatial transform


def draw_spatial_aug(training: bool, generator: Optional[torch.Generator] = None, p_extra: float = 0.3,
                     max_rotation: float = 20.0, brightness_range: tuple = (0.5, 1.0)) -> torch.Tensor:
    """One spatial draw for a whole video, encoded as `aug` (8,) (layout above).

    Training: a square crop of the short side at one of CROPS, then with probability p_extra exactly one of
    {horizontal flip, rotation by U(-max_rotation, max_rotation) degrees, brightness x U(*brightness_range)}.
    Evaluation: the centre square, nothing else (the official code crops at random in evaluation too).
    """
    aug = torch.tensor(IDENTITY_AUG)
    if not training:
        return aug
    u = torch.rand(4, generator=generator)
    aug[0] = int(torch.randint(0, len(CROPS), (1,), generator=generator))
    if u[0] < p_extra:
        op = int(torch.randint(0, 3, (1,), generator=generator))
        if op == 0:
            aug[1] = 1.0
        elif op == 1:
            aug[2] = (2 * u[1] - 1) * max_rotation
        else:
            lo, hi = brightness_range
            aug[3] = lo + (hi - lo) * u[2]
    return aug


def crop_square(w: int, h: int, crop: int) -> tuple:
    """The square of side min(w, h) at CROPS[crop] -> (x0, y0, side)."""
    s = min(w, h)
    x0, y0 = {0: ((w - s) // 2, (h - s) // 2), 1: (0, 0), 2: (w - s, 0), 3: (0, h - s), 4: (w - s, h - s)}[crop]
    return x0, y0, s


def apply_spatial_aug(img: Image.Image, aug: torch.Tensor, size: int) -> Image.Image:
    """Apply one draw `aug` (8,) to an RGB frame -> size x size RGB."""
    crop, hflip, angle, brightness = (float(v) for v in aug[:4])
    x0, y0, s = crop_square(*img.size, int(crop))
    img = img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + s, y0 + s))
    if hflip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if angle:
        img = img.rotate(angle, resample=Image.BILINEAR)
    if brightness != 1.0:
        img = ImageEnhance.Brightness(img).enhance(brightness)
    return img


def decode_frame(path, aug: torch.Tensor, size: int) -> np.ndarray:
    """One JPEG -> transformed uint8 (size, size, 3). JPEG decoding uses DCT-domain downscaling
    (PIL draft) to the smallest power-of-two reduction whose short side is still >= size."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            img = im.convert("RGB")
    except FileNotFoundError:
        raise DataError(path, "frame file missing", _REEXTRACT) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(path, f"cannot decode JPEG ({e})", _REEXTRACT) from None
    return np.asarray(apply_spatial_aug(img, aug, size))


def read_frames(video_dir, frame_indices: torch.Tensor, aug: torch.Tensor, size: int, threads: int = 4,
                pool: Optional[Executor] = None) -> torch.Tensor:
    """Decode and transform frames: frame_indices (T, L) 0-based, aug (8,) -> uint8 (T, 3, L, size, size).

    Every distinct frame is decoded once, in `pool` when given (a long-lived executor: no thread start-up per
    call), else in a pool of `threads` threads made for this call (PIL releases the GIL while decoding);
    threads <= 1 without a pool decodes in the calling thread.
    """
    T, L = frame_indices.shape
    flat = frame_indices.reshape(-1).tolist()
    unique = list(dict.fromkeys(flat))
    decode = lambda i: decode_frame(frame_path(video_dir, i), aug, size)  # noqa: E731
    if pool is not None and len(unique) > 1:
        images = list(pool.map(decode, unique))
    elif threads > 1 and len(unique) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(unique))) as pool:
            images = list(pool.map(decode, unique))
    else:
        images = [decode(i) for i in unique]
    where = {i: k for k, i in enumerate(unique)}
    stack = torch.from_numpy(np.stack(images))  # (U, S, S, 3)
    video = stack[torch.tensor([where[i] for i in flat])]  # (T*L, S, S, 3)
    return video.view(T, L, size, size, 3).permute(0, 4, 1, 2, 3).contiguous()  # (T, 3, L, S, S)


# ----------------------------------------------------------------- batched decoding on a device (decode_jpeg)


def read_jpeg_bytes(path) -> torch.Tensor:
    """One JPEG file's bytes -> uint8 (N,), decode_jpeg's input (read in a thread: file I/O releases the GIL)."""
    try:
        return torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
    except FileNotFoundError:
        raise DataError(path, "frame file missing", _REEXTRACT) from None


def transform_frames(frames: torch.Tensor, aug: torch.Tensor, size: int) -> torch.Tensor:
    """`apply_spatial_aug` on decoded frames of one video, on their device: uint8 (N, 3, H, W) -> (N, 3, S, S).
    Matches the PIL path within interpolation rounding (PIL's JPEG draft downscaling is not reproduced: the full
    frame is resized with an antialiased bilinear filter, as PIL's resize is)."""
    crop, hflip, angle, brightness = (float(v) for v in aug[:4])
    x0, y0, s = crop_square(frames.shape[-1], frames.shape[-2], int(crop))
    x = frames[..., y0:y0 + s, x0:x0 + s].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if hflip:
        x = x.flip(-1)
    if angle:
        x = rotate(x, angle, interpolation=InterpolationMode.BILINEAR)  # counter-clockwise, black fill, as PIL
    if brightness != 1.0:
        x = x * brightness  # PIL's Brightness: a blend with black
    return x.round().clamp(0, 255).to(torch.uint8)


def decode_views(requests: Sequence, size: int, device, pool: Optional[Executor] = None) -> torch.Tensor:
    """Several videos' frames decoded in one batched torchvision.io.decode_jpeg call on `device` (nvJPEG on CUDA).

    requests: [(frame_dir, frame_indices (T, L) 0-based, aug (8,))], the same T and L for all ->
    uint8 (B, T, 3, L, S, S) on `device`, the layout of `read_frames` stacked. Each video's distinct frames are
    read once, as bytes, in `pool` when given (threads); decoding and the spatial transform run on the device.
    """
    unique = [list(dict.fromkeys(fi.reshape(-1).tolist())) for _, fi, _ in requests]
    paths = [frame_path(d, i) for (d, _, _), u in zip(requests, unique) for i in u]
    data = list(pool.map(read_jpeg_bytes, paths)) if pool is not None else [read_jpeg_bytes(p) for p in paths]
    try:
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)  # [(3, H, W)]
    except RuntimeError:
        images = [_decode_one(b, p, device) for b, p in zip(data, paths)]  # names the file that failed
    views, k = [], 0
    for (frame_dir, fi, aug), u in zip(requests, unique):
        frames = images[k:k + len(u)]
        k += len(u)
        if len({tuple(f.shape) for f in frames}) > 1:
            raise DataError(frame_dir, "frames of different sizes in one folder", _REEXTRACT)
        frames = transform_frames(torch.stack(frames), aug, size)  # (U, 3, S, S)
        where = {i: j for j, i in enumerate(u)}
        idx = torch.tensor([where[i] for i in fi.reshape(-1).tolist()], device=frames.device)
        T, L = fi.shape
        views.append(frames[idx].view(T, L, 3, size, size).permute(0, 2, 1, 3, 4))  # (T, 3, L, S, S)
    return torch.stack(views).contiguous()


def _decode_one(data: torch.Tensor, path, device) -> torch.Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as e:
        raise DataError(path, f"cannot decode JPEG ({e})", _REEXTRACT) from None
