"""VideoEmotionDataset: one sample dict per video of a VE-8 / Ekman-6 style root, and its collate.

Layout under `root` (see docs and datasets/frames.py): imgs/<Class>/<video_id>/000001.jpg ...,
mp3/<Class>/<video_id>.mp3 (or .wav), srt/<Class>/<video_id>.srt, and an annotation JSON.

Sample dict (T = seq_len, L = snippet_duration, S = sample_size, F = audio_frames):

    video          uint8   (T, 3, L, S, S)  RGB 0-255 after the per-video spatial transform
    audio          float32 (T, F, 128)      normalised Kaldi log-mel fbank, F frames (F / 100 s) per segment
                                            ((T, F, n_mfcc) with audio_features='mfcc'; absent when with_audio=False)
    label          int64   ()
    index          int64   ()               dataset index (to read more frames of the same video)
    video_id       str
    frame_indices  int64   (T, L)           0-based frame indices actually sampled (in [0, n_frames))
    seg_bounds     int64   (T, 2)           [start, end) of each TSN segment in the loop-padded frame
                                            index space (padded index p is frame p % n_frames)
    seg_times      float32 (T, 2)           seg_bounds / fps: start/end seconds of each segment. For a
                                            loop-padded video (n_frames < T * L) times past n_frames / fps
                                            are the looped replay (time t is t mod the duration)
    aug            float32 (8,)             the per-video spatial transform draw (datasets/frames.py), so
                                            more frames of the same video can be read identically with
                                            dataset.read_frames(index, frame_indices, aug)
    n_frames       int64   ()
    fps            float32 ()               the folder's `fps` file, else n_frames / audio duration (the
                                            decoded length; the container's metadata when with_audio=False),
                                            else default_fps
    texts          list[str] (T,)           transcript text per segment ('' when none or with_text=False)

With a feature cache (`feature_cache`, CTEN's frozen backbone run once by tools/extract_features.py) `video`
is replaced by
    visual_feats   float32 (T, D)           cached features of the sampled snippets (nearest grid snippet)
    audio_feats    float32 (T, W)           instead of `audio`, when the cache holds the frozen audio trunk's
                                            features (its `with_audio`): those of each segment's window
    grid_feats     float16 (G, D)           training only: the video's whole grid in the same spatial view,
    grid_starts    int64   (G,)             and each grid snippet's first frame (for the erased views);
                                            collate pads them to the longest grid of the batch

`collate_samples` stacks the tensors (adding a leading B) and turns str / list fields into lists.

Subsets: 'train' = the official training subset minus a carved validation subset (`val_fraction`,
`val_seed`, stratified; val_fraction=0 keeps all of training, the papers' protocol), 'val' = that carved
subset, 'test' = the official "validation" subset (the papers' test split).

Randomness (training_aug: random TSN offsets, spatial draw, audio window offsets, SpecAugment) comes from
a per-sample torch.Generator seeded from torch's global RNG, so a run is reproducible given
torch.manual_seed: DataLoader workers get distinct torch seeds derived from the main process's RNG (no
worker_init_fn is needed; python's random and numpy are not used). Evaluation samples are deterministic.
No file handle is kept open between samples, so the dataset is safe to use in workers.

Data problems: a missing frame folder raises one DataError listing the missing videos at construction
(on_missing='skip' drops them; see `skipped`). Audio that is missing, unreadable, without an audio stream
or empty raises DataError naming the file (missing_audio='error') or is replaced by silence
(missing_audio='zeros'); all-zero audio is used as is (finite features). Those events and transcripts with
skipped garbage blocks are recorded per video in shared memory (visible across DataLoader workers):
`issues()` and `report()` list them.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset

from datasets.annotations import (TEST_SUBSET, TRAIN_SUBSET, carve_validation, empty_subset_message, load_annotation,
                                  subset_entries)
from datasets.errors import DataError
from datasets.audio import audio_duration, decode_audio
from datasets.feature_cache import pad_grids
from datasets.frames import count_frames, decode_views, read_fps, read_frames
from datasets.sample import SampleSpec, build_sample
from datasets.transcripts import read_srt

AUDIO_EXTENSIONS = (".mp3", ".wav")
# Per-video problems recorded while sampling: name -> bit in the shared flag tensor.
ISSUES = {"audio_missing": 1, "audio_unreadable": 2, "audio_silent": 4, "transcript_garbage": 8,
          "transcript_unusable": 16}
_SHOW = 5


class VideoEmotionDataset(Dataset):
    """Videos of one subset of an annotation file under `root` (format and sample dict: module docstring).

    **sampling: the fields of datasets/sample.py `SampleSpec` (seq_len T segments, one snippet of snippet_duration
    L frames each, sample_size S pixels, audio_frames F per segment, audio_features 'fbank' | 'mfcc', spec_augment
    in training_aug only, ...); training_aug: random temporal/spatial/audio sampling (default: subset ==
    'train'); with_audio, with_text: which modalities to read; val_fraction, val_seed: the
    carved validation subset; missing_audio 'error' | 'zeros'; on_missing 'error' | 'skip' for missing frame
    folders; default_fps when a video has neither an fps file nor audio; decode_threads for JPEG decoding.
    """

    def __init__(self, root, annotation_path, subset: str, training_aug: Optional[bool] = None,
                 with_audio: bool = True, with_text: bool = False, val_fraction: float = 0.1, val_seed: int = 0,
                 missing_audio: str = "error", on_missing: str = "error", default_fps: float = 30.0,
                 decode_threads: int = 4, frames_dir: str = "imgs", audio_dir: str = "mp3", srt_dir: str = "srt",
                 feature_cache=None, cache_train_crop: str = "aug", **sampling):
        if subset not in ("train", "val", "test"):
            raise ValueError(f"subset must be 'train', 'val' or 'test', got {subset!r}")
        if missing_audio not in ("error", "zeros"):
            raise ValueError(f"missing_audio must be 'error' or 'zeros', got {missing_audio!r}")
        if on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
        self.spec = spec = SampleSpec(**sampling)
        if spec.audio_features not in ("fbank", "mfcc"):
            raise ValueError(f"audio_features must be 'fbank' or 'mfcc', got {spec.audio_features!r}")
        if spec.spec_augment and spec.audio_features != "fbank":
            raise ValueError("spec_augment applies to audio_features='fbank' only")
        if cache_train_crop not in ("aug", "random"):
            raise ValueError(f"cache_train_crop must be 'aug' or 'random', got {cache_train_crop!r}")
        self.root = Path(root)
        self.subset = subset
        self.seq_len, self.snippet_duration, self.sample_size = spec.seq_len, spec.snippet_duration, spec.sample_size
        self.training_aug = subset == "train" if training_aug is None else bool(training_aug)
        self.with_audio, self.with_text = with_audio, with_text
        self.missing_audio, self.default_fps = missing_audio, float(default_fps)
        self.decode_threads, self.sample_rate = decode_threads, spec.sample_rate
        self.feature_cache, self.cache_train_crop = feature_cache, cache_train_crop

        data = load_annotation(annotation_path)
        self.labels = list(data["labels"])
        entries = self._select(data, subset, val_fraction, val_seed, annotation_path)
        self.videos, missing = [], []
        for vid, cls in entries:
            frame_dir = self.root / frames_dir / cls / vid
            try:
                n_frames = count_frames(frame_dir)
            except DataError as e:
                missing.append((vid, e.path, e.why))
                continue
            srt = self.root / srt_dir / cls / (vid + ".srt")
            self.videos.append({"video_id": vid, "label": self.labels.index(cls), "frame_dir": frame_dir,
                                "n_frames": n_frames, "audio": _audio_file(self.root / audio_dir / cls, vid),
                                "srt": srt if srt.is_file() else None})
        if missing and (on_missing == "error" or not self.videos):
            raise DataError(self.root / frames_dir, _listing(missing, len(entries), "have no usable frame folder"),
                            "create the frames with `python tools/preprocess ...`, or pass --on-missing-video skip "
                            "(on_missing='skip')")
        self.skipped = [(vid, why) for vid, _, why in missing]  # [(video_id, reason)] dropped at construction
        # [video_id] with fewer frames than one snippet: sampled looping over their own frames
        self.short = [v["video_id"] for v in self.videos if v["n_frames"] < spec.snippet_duration]
        if with_audio and missing_audio == "error":
            absent = [(v["video_id"], _either_name(v["audio"]), "not found") for v in self.videos
                      if not v["audio"].is_file()]
            if absent:
                raise DataError(self.root / audio_dir,
                                _listing(absent, len(self.videos), "have no audio file (.mp3/.wav)"),
                                "extract the audio with `python tools/preprocess ...`, pass --missing-audio zeros "
                                "(missing_audio='zeros') to use silence, or leave audio out of --modalities")
        self._flags = torch.zeros(len(self.videos), dtype=torch.uint8).share_memory_()

    @staticmethod
    def _select(data, subset, val_fraction, val_seed, path) -> list:
        if subset == "test":
            entries = subset_entries(data, TEST_SUBSET)
        else:
            carved = set(carve_validation(data, val_fraction, val_seed))
            entries = [(v, c) for v, c in subset_entries(data, TRAIN_SUBSET) if (v in carved) == (subset == "val")]
        if not entries:
            raise DataError(path, *empty_subset_message(data, subset, val_fraction))
        return entries

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def video_ids(self) -> list:
        return [v["video_id"] for v in self.videos]

    @property
    def targets(self) -> list:
        return [v["label"] for v in self.videos]

    def __getitem__(self, index: int) -> dict:
        v = self.videos[index]
        g = None
        if self.training_aug:
            g = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,))))
        wave, fps = self.wave_and_fps(index)
        read_audio = None
        if self.feature_cache is None:
            read_visual = lambda fi, aug, g: {"video": self.read_frames(index, fi, aug)}  # noqa: E731
        else:
            read_visual = lambda fi, aug, g: self._cached_features(v, fi, aug, g)  # noqa: E731
            if self.feature_cache.with_audio:
                read_audio = lambda starts, period: {  # noqa: E731
                    "audio_feats": self.feature_cache.audio_lookup(v["video_id"], starts, period)}
        sample = build_sample(self.spec, v["n_frames"], fps, read_visual, self.training_aug, g, wave=wave,
                              with_audio=self.with_audio, cues=self._cues(index), read_audio=read_audio)
        sample.update(video_id=v["video_id"], label=torch.tensor(v["label"], dtype=torch.long),
                      index=torch.tensor(index, dtype=torch.long))
        return sample

    def wave_and_fps(self, index: int) -> tuple:
        """The decoded waveform (N,) or None (no audio read, or unusable with missing_audio='zeros'), and the frame
        rate the sample uses."""
        v = self.videos[index]
        wave = self._wave(index) if self.with_audio else None
        audio_seconds = None
        if wave is not None:
            audio_seconds = wave.numel() / self.sample_rate
        elif not self.with_audio and v["audio"].is_file():
            audio_seconds = audio_duration(v["audio"])
        return wave, read_fps(v["frame_dir"], v["n_frames"], audio_seconds, self.default_fps)

    def _cached_features(self, v: dict, frame_indices: torch.Tensor, aug: torch.Tensor, g) -> dict:
        """With a feature cache (datasets/feature_cache.py): the sampled snippets' features 'visual_feats' (T, D)
        from the stored spatial view standing in for the frames' transform (the one matching this draw's crop and
        flip, or a random one), and in training the video's whole grid for the erased views."""
        cache = self.feature_cache
        view = cache.random_crop(g) if (self.training_aug and self.cache_train_crop == "random") else cache.crop_for_aug(aug)
        out = {"visual_feats": cache.lookup(v["video_id"], view, frame_indices[:, 0], v["n_frames"])}
        if self.training_aug:
            out["grid_feats"], out["grid_starts"] = cache.grid(v["video_id"], view, dtype=torch.float16)
        return out

    def read_frames(self, index: int, frame_indices: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
        """More frames of video `index` with the spatial draw `aug`: (T, L) -> uint8 (T, 3, L, S, S)."""
        return read_frames(self.videos[index]["frame_dir"], frame_indices, aug, self.sample_size, self.decode_threads,
                           pool=self._decode_pool())

    def read_views(self, requests: list, device) -> torch.Tensor:
        """Frames of several videos decoded batched on `device` (datasets/frames.py `decode_views`; the JPEG bytes
        are read in the decoding thread pool): [(index, frame_indices (T, L), aug (8,))] -> uint8
        (B, T, 3, L, S, S) on `device`."""
        jobs = [(self.videos[i]["frame_dir"], fi, aug) for i, fi, aug in requests]
        return decode_views(jobs, self.sample_size, device, pool=self._decode_pool())

    def _decode_pool(self) -> Optional[ThreadPoolExecutor]:
        """One decoding thread pool per process, made on first use (DataLoader workers each get their own)."""
        if self.decode_threads <= 1:
            return None
        if getattr(self, "_pool_pid", None) != os.getpid():
            self._pool = ThreadPoolExecutor(max_workers=self.decode_threads)
            self._pool_pid = os.getpid()
        return self._pool

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_pool", None)
        state.pop("_pool_pid", None)
        return state

    def _wave(self, index: int) -> Optional[torch.Tensor]:
        """The decoded waveform, or None (recorded) when it is unusable and missing_audio='zeros'."""
        path = self.videos[index]["audio"]
        try:
            wave = decode_audio(path, self.sample_rate)
        except DataError as e:
            if self.missing_audio == "error":
                if path.is_file():
                    raise
                raise DataError(_either_name(path), e.why, e.fix) from None  # it may have either extension
            self._flag(index, "audio_unreadable" if path.is_file() else "audio_missing")
            return None
        if not bool(wave.any()):
            self._flag(index, "audio_silent")
        return wave

    def _cues(self, index: int) -> Optional[list]:
        """The transcript's cues (None without text); garbage or unusable transcripts are recorded."""
        srt = self.videos[index]["srt"]
        if not self.with_text or srt is None:
            return None
        transcript = read_srt(srt)
        if transcript.garbage:
            self._flag(index, "transcript_garbage")
        if transcript.unusable:
            self._flag(index, "transcript_unusable")
        return transcript.cues

    def _flag(self, index: int, issue: str) -> None:
        self._flags[index] |= ISSUES[issue]

    def issues(self) -> dict:
        """{issue: [video_id, ...]} of the problems met so far while sampling (see ISSUES)."""
        flags = self._flags.tolist()
        return {name: [self.videos[i]["video_id"] for i, f in enumerate(flags) if f & bit]
                for name, bit in ISSUES.items()}

    def counts(self) -> dict:
        """{event: number of videos} of the skips and substitutions so far (results.json's 'data_issues')."""
        return {"skipped_without_frames": len(self.skipped), "shorter_than_a_snippet": len(self.short),
                **{k: len(v) for k, v in self.issues().items()}}

    def report(self) -> str:
        """One printable line of the videos skipped at construction and the problems met while sampling
        ('' when there is nothing to report)."""
        parts = []
        if self.skipped:
            shown = ", ".join(vid for vid, _ in self.skipped[:_SHOW])
            parts.append(f"{len(self.skipped)} skipped without frames (e.g. {shown})")
        if self.short:
            parts.append(f"{len(self.short)} shorter than one snippet ({self.snippet_duration} frames), their frames "
                         f"looped (e.g. {', '.join(self.short[:_SHOW])})")
        for name, ids in self.issues().items():
            if ids:
                parts.append(f"{name}: {len(ids)} (e.g. {', '.join(ids[:_SHOW])})")
        return "; ".join(parts)


def _audio_file(folder: Path, video_id: str) -> Path:
    """<video_id>.mp3 or .wav, whichever exists (the .mp3 name when neither does)."""
    for ext in AUDIO_EXTENSIONS:
        if (folder / (video_id + ext)).is_file():
            return folder / (video_id + ext)
    return folder / (video_id + AUDIO_EXTENSIONS[0])


def _either_name(path: Path) -> str:
    """.../<video_id>.mp3 -> '.../<video_id>.mp3|.wav': the audio file may have either extension."""
    return f"{path.with_suffix('')}{'|'.join(AUDIO_EXTENSIONS)}"


def _listing(problems: list, total: int, what: str) -> str:
    """[(video_id, path, why)] -> 'k of n annotated videos <what>: path (why); ... and m more'."""
    shown = "; ".join(f"{path} ({why})" for _, path, why in problems[:_SHOW])
    more = f" and {len(problems) - _SHOW} more" if len(problems) > _SHOW else ""
    return f"{len(problems)} of {total} annotated videos {what}: {shown}{more}"


def collate_samples(samples: list) -> dict:
    """List of sample dicts -> batch: tensors stacked (leading B), str and list fields as lists."""
    batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in ("grid_feats", "grid_starts"):  # one grid per video, of different lengths
            batch[key] = pad_grids(values)
        else:
            batch[key] = torch.stack(values) if torch.is_tensor(values[0]) else values
    return batch
