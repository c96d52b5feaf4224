"""Cached features of the frozen visual backbone: a dense temporal grid of snippets x a fixed set of spatial crops,
written once per dataset by tools/extract_features.py and read here, lazily, from memory-mapped files.

Layout of a cache folder:

    manifest.json              how the cache was made (below) and one entry per video
    feats/<video_id>.npy       float16 (V, G, D): crop v, grid snippet g, feature dim D
    backbone_random_init.pth   only for a randomly initialised backbone: its weights, in the published format

Grid. For a video of n frames and L-frame snippets, snippet g starts at frame `grid_starts(n, L, stride)[g]` and
holds frames (start + l) % n for l < L: the form of every snippet the dataset's TSN sampling (datasets/frames.py
`tsn_sample`, loop-padded) reads, whose first frame fixes the rest. The grid is every `stride`-th frame, plus the
last start n - L that needs no wrap-around, so a snippet that does not wrap always maps to one that does not either.
A snippet is looked up by the nearest grid start to its first frame (`nearest_grid`, distance taken around the loop):
at most stride / 2 frames away; stride 1 is exact. An erased view's snippet (datasets/frames.py `erased_view_frames`) is
L consecutive frames of its kept segments, looked up alike; the rare one that straddles two non-adjacent kept
segments gets the grid snippet of its first frame, i.e. L consecutive frames from there.

Crops (stored spatial views; "view" alone means an erased view of CTEN). Named `<crop>` or `<crop>+flip`, crop one
of datasets/frames.py CROPS; each is one spatial draw `aug` (8,) with that crop and flip and no rotation or
brightness change (`crop_aug`), decoded by the dataset's own `read_frames`. The default set ("all") is the 5
positions x {plain, flipped} = 10 crops, crop 0 the centre, which is what evaluation reads (the manifest keeps its
older key "views" for them). In training a stored crop stands in for the per-video spatial augmentation: either the
crop matching the position and flip of the dataset's own draw (`crop_for_aug`; its rotation and brightness change
are dropped) or one drawn uniformly (`random_crop`).

Manifest fields compared against what a run expects (`cache_expectation`): depth, input_preset,
snippet_duration, sample_size, backbone_sha256 (of the weight file; for a random backbone, of the saved
backbone_random_init.pth) and, when the run passes its backbone's tensors, backbone_state_sha256; the run's videos
(id and class) must all be in the cache with the frame counts they have now. The annotation file's own hash is
recorded but not compared: the splits of one dataset share every video and so share one cache.

Audio (CTEN with --freeze-audio: the paper fixes the whole feature extractor). A cache extracted with --freeze-audio
also holds the frozen audio ResNet trunk's output (before the projection, which trains) for a grid of windows:

    audio/<video_id>.npy       float16 (G_a, W): window g starts at feature frame `grid_starts(period, F, stride)[g]`

A window's content depends only on its start modulo the audio's period (datasets/audio.py `window_frames`), so the
grid covers one period and a segment's window is looked up by the nearest start around the loop (`audio_stride`
frames of 10 ms apart: at most stride / 2 off; 1 is exact). Compared against the run (AUDIO_FIELDS): audio_arch,
audio_first_conv, audio_resize, audio_features, audio_frames and audio_sha256 (of --audio-weights, or of
the saved audio_random_init.pth); each video's period (its audio length) must be the one it has now.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch

from datasets.annotations import load_annotation
from datasets.errors import DataError
from datasets.frames import CROPS, IDENTITY_AUG

FORMAT = "cten-feature-cache/1"
MANIFEST = "manifest.json"
RANDOM_INIT = "random-init"
CROP_SETS = {
    "all": tuple(CROPS) + tuple(f"{c}+flip" for c in CROPS),
    "crops": tuple(CROPS),
    "centre": ("centre",),
}
AUDIO_FIELDS = ("audio_arch", "audio_first_conv", "audio_resize", "audio_features", "audio_frames", "audio_sha256")
_FIX = ("re-run `python tools/extract_features.py --out {path} ...` with this run's settings (it refuses to mix "
        "settings: give it a new --out or --overwrite), or point --feature-cache at a cache made with them")


# ------------------------------------------------------------------------------------------ the grid


def grid_starts(n_frames: int, snippet_duration: int, stride: int) -> torch.Tensor:
    """Start frames (G,) int64 of a video's grid snippets: every `stride`-th frame in [0, n), plus n - L when n >= L."""
    if n_frames < 1 or snippet_duration < 1 or stride < 1:
        raise ValueError(f"grid needs n_frames, snippet_duration, stride >= 1, "
                         f"got {n_frames}, {snippet_duration}, {stride}")
    starts = set(range(0, n_frames, stride))
    if n_frames >= snippet_duration:
        starts.add(n_frames - snippet_duration)
    return torch.tensor(sorted(starts), dtype=torch.long)


def nearest_grid(starts: torch.Tensor, grid: torch.Tensor, n_frames=None) -> torch.Tensor:
    """starts (..., T) snippet start frames, grid (..., G) grid start frames -> (..., T) int64 index of the nearest
    grid start (leading dims batch alike).

    With n_frames (an int, or a tensor of the leading shape) the distance is taken around the loop: a loop-padded
    snippet starting at frame n - 1 is one frame from the one starting at 0. Ties go to the earlier grid entry, so a
    grid padded by repeating its last start (`pad_grids`) looks up as the unpadded one."""
    d = (starts.long().unsqueeze(-1) - grid.long().unsqueeze(-2)).abs()  # (..., T, G)
    if n_frames is not None:
        n = torch.as_tensor(n_frames, device=d.device).long()
        n = n.reshape(*n.shape, 1, 1)
        d = torch.minimum(d % n, (-d) % n)
    return d.argmin(dim=-1)


def gather_grid(feats: torch.Tensor, grid: torch.Tensor, starts: torch.Tensor, n_frames=None) -> torch.Tensor:
    """feats (..., G, D) of a grid, grid (..., G) its start frames, snippet starts (..., T) -> (..., T, D): each
    snippet's nearest grid feature. For frame indices (..., T, L) from the dataset or from models/erasing.py
    `erased_view_frames`, pass frame_indices[..., 0]."""
    index = nearest_grid(starts, grid, n_frames)  # (..., T)
    return feats.gather(-2, index.unsqueeze(-1).expand(*index.shape, feats.shape[-1]))


def grid_lookup(batch: dict, b: int, frame_indices: torch.Tensor) -> torch.Tensor:
    """core/methods/cten.py CTENMethod's `grid_lookup` for batches that carry each video's grid in its view:
    'grid_feats' (B, G, D) and 'grid_starts' (B, G) (padded by `pad_grids`), 'n_frames' (B,).
    frame_indices (T, L) of a re-sampled view of video b -> (T, D) features of the nearest grid snippets."""
    feats = batch["grid_feats"][b]
    starts = frame_indices[:, 0].to(feats.device)
    return gather_grid(feats, batch["grid_starts"][b], starts, batch["n_frames"][b]).float()


def pad_grids(grids: list) -> torch.Tensor:
    """Per-video tensors (G_i, ...) -> (B, max G_i, ...), each padded by repeating its last entry: applied alike to
    'grid_feats' and 'grid_starts' when batching, it leaves `nearest_grid` / `gather_grid` results unchanged."""
    longest = max(g.shape[0] for g in grids)
    return torch.stack([torch.cat([g, g[-1:].expand(longest - g.shape[0], *g.shape[1:])]) for g in grids])


# ----------------------------------------------------------------------------------------- the crops


def parse_crops(spec: str) -> list:
    """'all' | 'crops' | 'centre' | a comma-separated list of `<crop>` / `<crop>+flip` -> view names."""
    names = list(CROP_SETS[spec]) if spec in CROP_SETS else [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        if name.removesuffix("+flip") not in CROPS:
            raise ValueError(f"unknown view {name!r}: use {', '.join(CROP_SETS)}, or names among {', '.join(CROPS)} "
                             "with an optional '+flip'")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"crops must be distinct and at least one, got {spec!r}")
    return names


def crop_aug(name: str) -> torch.Tensor:
    """View name -> the spatial draw `aug` (8,) (datasets/frames.py layout) that the dataset decodes it with."""
    aug = torch.tensor(IDENTITY_AUG)
    aug[0] = CROPS.index(name.removesuffix("+flip"))
    aug[1] = float(name.endswith("+flip"))
    return aug


def sha256_file(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and values (keys sorted; BatchNorm counters, which never
    change an output, left out): identifies the weights a backbone actually holds, however they were made."""
    h = hashlib.sha256()
    for key in sorted(k for k in state if not k.endswith("num_batches_tracked")):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def audio_expectation(arch: str, first_conv: str, resize: int, features: str, frames: int,
                      audio_weights=None) -> dict:
    """The AUDIO_FIELDS a run with a frozen audio trunk expects of a cache (for `cache_expectation(audio=...)`)."""
    return {"audio_arch": arch, "audio_first_conv": first_conv, "audio_resize": resize, "audio_features": features,
            "audio_frames": frames, "audio_sha256": sha256_file(audio_weights) if audio_weights else RANDOM_INIT}


def cache_expectation(annotation, depth: int, input_preset: str, snippet_duration: int, sample_size: int,
                      visual_weights=None, backbone_state: Optional[Mapping[str, torch.Tensor]] = None,
                      audio: Optional[dict] = None) -> dict:
    """What a training run expects of a cache, for `FeatureCache(path, expect=...)`.

    annotation: the run's annotation JSON (its videos must be in the cache); visual_weights: the run's 3D ResNet
    weight file, None for a random backbone (which no cache can match: train with --visual-weights set to the
    cache's backbone_random_init.pth instead); backbone_state: optionally the run's backbone state dict, compared
    tensor by tensor through its hash; audio: `audio_expectation(...)` when the run reads the frozen audio trunk's
    features from the cache too."""
    data = load_annotation(annotation)
    expect = {"depth": depth, "input_preset": input_preset, "snippet_duration": snippet_duration,
              "sample_size": sample_size,
              "backbone_sha256": sha256_file(visual_weights) if visual_weights else RANDOM_INIT,
              "videos": {vid: e["annotations"]["label"] for vid, e in data["database"].items()}}
    if backbone_state is not None:
        expect["backbone_state_sha256"] = state_sha256(backbone_state)
    expect.update(audio or {})
    return expect


# ----------------------------------------------------------------------------------------- the cache


class FeatureCache:
    """A feature cache folder (module docstring), opened lazily: each process memory-maps a video's file on first
    use, so one instance can be handed to DataLoader workers.

    expect: fields the manifest must hold (`cache_expectation`); 'videos' maps video_id -> class and each must be
    in the cache under that class. Raises DataError naming the field, both values and the fix."""

    def __init__(self, path, expect: Optional[dict] = None):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(manifest_path, "no feature cache manifest", "build the cache with "
                            "`python tools/extract_features.py --out " + str(self.path) + " ...`")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(manifest_path, f"unreadable manifest ({e})", _FIX.format(path=self.path)) from None
        m = self.manifest
        if m.get("format") != FORMAT:
            raise DataError(manifest_path, f"format {m.get('format')!r}, expected {FORMAT!r}",
                            _FIX.format(path=self.path))
        if not m.get("complete"):
            raise DataError(manifest_path, "the extraction did not finish", "run the same "
                            "`python tools/extract_features.py` command again: it resumes where it stopped")
        self.crops = list(m["views"])  # the manifest's key predates the name "crop"
        self.feature_dim = int(m["feature_dim"])
        self.snippet_duration = int(m["snippet_duration"])
        self.stride = int(m["stride"])
        self.videos = m["videos"]
        self.with_audio = any(k in AUDIO_FIELDS for k in (expect or {}))  # the run reads audio features from here
        self._check(expect or {})
        self._maps: dict = {}
        self._pid = os.getpid()

    def _check(self, expect: dict) -> None:
        where = self.path / MANIFEST
        if self.with_audio and "audio_trunk_dim" not in self.manifest:
            raise DataError(where, "the cache holds no audio features, which this run (--freeze-audio) reads from it",
                            _FIX.format(path=self.path) + ", adding --freeze-audio so it extracts the audio trunk's "
                            "features too (or train without --freeze-audio)")
        for key, want in expect.items():
            if key == "videos":
                continue
            have = self.manifest.get(key)
            if have != want:
                hint = ""
                if key == "backbone_sha256" and RANDOM_INIT in (want, self.manifest.get("backbone_checkpoint")):
                    hint = (f"; a random backbone is only reproducible from its saved weights: train with "
                            f"--visual-weights {self.path / 'backbone_random_init.pth'} or extract with the run's "
                            f"weights")
                if key == "audio_sha256" and RANDOM_INIT in (want, self.manifest.get("audio_checkpoint")):
                    hint = (f"; a random audio trunk is only reproducible from its saved weights: train with "
                            f"--audio-weights {self.path / 'audio_random_init.pth'} or extract with the run's weights")
                raise DataError(where, f"stale feature cache: {key} is {have!r} in the cache but this run expects "
                                       f"{want!r}{hint}", _FIX.format(path=self.path))
        videos = expect.get("videos", {})
        missing = [v for v in videos if v not in self.videos]
        moved = [v for v in videos if v in self.videos and self.videos[v]["label"] != videos[v]]
        if missing or moved:
            why = []
            if missing:
                why.append(f"{len(missing)} of the run's videos are not in the cache (e.g. {', '.join(missing[:5])})")
            if moved:
                why.append(f"{len(moved)} videos have another class in the cache (e.g. {moved[0]}: cache "
                           f"{self.videos[moved[0]]['label']!r}, run {videos[moved[0]]!r})")
            raise DataError(where, "; ".join(why), _FIX.format(path=self.path) + " (over this run's annotation file)")
        if "centre" not in self.crops:
            raise DataError(where, f"the cache has no 'centre' crop (crops: {self.crops}), which evaluation reads",
                            _FIX.format(path=self.path) + " with --crops including centre")

    # ---- crops

    def crop_index(self, name: str) -> int:
        if name not in self.crops:
            raise KeyError(f"crop {name!r} is not in the cache {self.path} (crops: {self.crops})")
        return self.crops.index(name)

    def crop_for_aug(self, aug: torch.Tensor) -> int:
        """The stored view with the crop and flip of a spatial draw `aug` (8,); rotation and brightness are dropped.
        A flipped draw whose flipped view is not stored takes the plain view of its crop; a crop not stored, centre."""
        crop = CROPS[int(aug[0])]
        for name in ((f"{crop}+flip", crop) if float(aug[1]) else (crop,)) + ("centre",):
            if name in self.crops:
                return self.crops.index(name)
        raise KeyError(f"no view for crop {crop!r} in {self.path}")

    def random_crop(self, generator: Optional[torch.Generator] = None) -> int:
        return int(torch.randint(0, len(self.crops), (1,), generator=generator))

    # ---- features

    def _entry(self, video_id: str) -> dict:
        entry = self.videos.get(video_id)
        if entry is None:
            raise DataError(self.path / MANIFEST, f"video {video_id!r} is not in the feature cache",
                            _FIX.format(path=self.path) + " over an annotation file that lists it")
        return entry

    def _array(self, video_id: str) -> np.ndarray:
        if self._pid != os.getpid():  # a forked worker: map its own files
            self._maps, self._pid = {}, os.getpid()
        arr = self._maps.get(video_id)
        if arr is None:
            entry = self._entry(video_id)
            arr = self._load(entry["file"], (len(self.crops), int(entry["grid"]), self.feature_dim))
            self._maps[video_id] = arr
        return arr

    def _finite(self, video_id: str, rows: np.ndarray) -> np.ndarray:
        """The rows read for a sample, refused when any is NaN or infinite (only what is read is checked)."""
        if not np.isfinite(rows).all():
            raise DataError(self.path / self._entry(video_id)["file"], f"cached features hold "
                            f"{int(np.count_nonzero(~np.isfinite(rows)))} NaN or infinite values",
                            _FIX.format(path=self.path))
        return rows

    def n_frames(self, video_id: str) -> int:
        return int(self._entry(video_id)["n_frames"])

    def grid_starts(self, video_id: str) -> torch.Tensor:
        """(G,) int64 start frame of each grid snippet of the video."""
        return grid_starts(self.n_frames(video_id), self.snippet_duration, self.stride)

    def grid(self, video_id: str, view: int, dtype: torch.dtype = torch.float32) -> tuple:
        """-> feats (G, D) in `dtype` (float16 halves what a DataLoader worker hands over), starts (G,) int64 of
        one video's grid in one view."""
        feats = torch.from_numpy(self._finite(video_id, np.array(self._array(video_id)[view])))
        return feats.to(dtype), self.grid_starts(video_id)

    def lookup(self, video_id: str, view: int, snippet_starts: torch.Tensor,
               n_frames: Optional[int] = None) -> torch.Tensor:
        """Snippet start frames (T,) -> features (T, D) float32 of the nearest grid snippets in one view.

        n_frames: the frame count the caller sees now; a cache made when the video had another count is stale."""
        n = self.n_frames(video_id)
        if n_frames is not None and int(n_frames) != n:
            raise DataError(self.path / MANIFEST, f"stale feature cache: video {video_id!r} had {n} frames when "
                                                  f"cached, {int(n_frames)} now", _FIX.format(path=self.path))
        index = nearest_grid(torch.as_tensor(snippet_starts), self.grid_starts(video_id), n)
        rows = np.asarray(self._array(video_id)[view][index.numpy()], dtype=np.float32)
        return torch.from_numpy(self._finite(video_id, rows))

    def audio_lookup(self, video_id: str, starts: torch.Tensor, period: int) -> torch.Tensor:
        """Window starts (T,) in feature frames of audio with `period` frames -> the audio trunk's features (T, W)
        float32 of the nearest grid windows (module docstring)."""
        entry = self._entry(video_id)
        if int(entry["audio_period"]) != int(period):
            raise DataError(self.path / MANIFEST, f"stale feature cache: video {video_id!r} had {entry['audio_period']}"
                                                  f" audio frames when cached, {int(period)} now",
                            _FIX.format(path=self.path))
        grid = grid_starts(int(period), int(self.manifest["audio_frames"]), int(self.manifest["audio_stride"]))
        index = nearest_grid(torch.as_tensor(starts), grid, int(period))
        if self._pid != os.getpid():  # a forked worker: map its own files
            self._maps, self._pid = {}, os.getpid()
        key = "audio:" + video_id
        arr = self._maps.get(key)
        if arr is None:
            arr = self._load(entry["audio_file"], (len(grid), int(self.manifest["audio_trunk_dim"])))
            self._maps[key] = arr
        rows = np.asarray(arr[index.numpy()], dtype=np.float32)
        return torch.from_numpy(self._finite(video_id, rows))

    def _load(self, name: str, want: tuple) -> np.ndarray:
        """A cached float16 array of the expected shape, memory-mapped; refused with the fix otherwise."""
        file = self.path / name
        try:
            arr = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(file, f"cannot read cached features ({e})", _FIX.format(path=self.path)) from None
        if arr.shape != want or arr.dtype != np.float16:
            raise DataError(file, f"cached features are {arr.dtype} {arr.shape}, the manifest says float16 {want}",
                            _FIX.format(path=self.path))
        return arr

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

