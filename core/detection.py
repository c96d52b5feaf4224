"""Weakly-supervised emotional-segment detection from temporal attention (CTEN Sec. 4.5).

The paper scores detections from the trained model's temporal attention but does not say how segments
and scores are formed. The documented detection rule of this project, per video:

1. Combine the modality curves (`combine_attention`): each curve (att_v, att_a: one value per TSN
   segment) is min-max normalised over T, then they are combined per segment. Default 'min': a segment
   is as salient as its less attended modality, the keyframe rule of the temporal erasing (Eqs. 8-9:
   A*_v >= theta AND A*_a >= theta). Alternatives: 'product', 'mean', or one modality
   ('visual' = att_v, 'audio' = att_a). A model with one modality has one curve.
2. Normalise the combined curve over T: 'minmax' (default) stretches it to [0, 1] again, so the
   threshold is relative to the video's own range and every video yields at least one detection (each
   video carries an emotion); 'none' keeps it, and then 'min' with threshold theta selects exactly the
   erasing keyframes (possibly none).
3. Candidates: the segments whose normalised value is >= threshold (default 0.5).
4. Merge: candidates sorted by start time join while the next one starts at most merge_gap seconds
   (default 0: touching segments, as TSN segments are) after the running segment ends; a merged
   segment spans [first start, last end].
5. Drop merged segments shorter than min_len seconds (default 0: keep all).
6. Score: the mean (default) or max, over the merged TSN segments (each counts once), of the
   normalised curve (default) or of the curve as given before step 2 ('raw'); multiplied by the
   probability of the predicted class when one is given (default in `detect_batch`), so that
   detections of confident videos rank first in the cross-video mAP ranking.

Min-max normalisation of a constant curve (range at most 1e-6 of its largest magnitude, including all
zeros) gives all ones: no temporal preference makes every segment equally salient, so the whole video
is one detection, and a constant modality is neutral for the 'min' and 'product' combinations.
Each detection is (start, end, score) in seconds, listed by start time.
"""
from collections.abc import Mapping, Sequence

import numpy as np
import torch

COMBINE = ("min", "product", "mean", "visual", "audio")
NORMALISE = ("minmax", "none")
SCORE = ("mean", "max")
SCORE_SOURCE = ("normalised", "raw")
MODALITY_SUFFIX = {"visual": "_v", "audio": "_a"}  # CTEN's att_v / att_a, MART's degree_v / degree_a
CONSTANT_RTOL = 1e-6
GAP_TOL = 1e-6  # seconds; absorbs float32 round-off of shared segment bounds


def _numpy(x) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _curve(att, what: str) -> np.ndarray:
    a = _numpy(att).astype(np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{what}: an attention curve must be a non-empty (T,) vector; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: attention holds NaN or inf: {a.tolist()}")
    return a


def minmax_normalise(att) -> np.ndarray:
    """(T,) -> (T,) float64 in [0, 1]: (a - min) / (max - min) (CTEN Eq. 8); a constant curve -> ones."""
    a = _curve(att, "minmax_normalise")
    lo, hi = a.min(), a.max()
    if hi - lo <= CONSTANT_RTOL * np.abs(a).max():
        return np.ones_like(a)
    return (a - lo) / (hi - lo)


def combine_attention(curves: Mapping, how: str = "min") -> np.ndarray:
    """Per-curve min-max normalisation, then a per-segment combination -> (T,) float64 in [0, 1].

    curves: {name: (T,)}, keyed like the model's outputs ('att_v', 'att_a' or 'degree_v', 'degree_a');
    'visual' / 'audio' pick the curve whose name ends in '_v' / '_a'. 'min' / 'product' / 'mean' combine
    every curve given.
    """
    if how not in COMBINE:
        raise ValueError(f"unknown attention combination {how!r}; choose from {COMBINE}")
    if not curves:
        raise ValueError("combine_attention needs at least one attention curve")
    if how in MODALITY_SUFFIX:
        keys = [k for k in curves if k.endswith(MODALITY_SUFFIX[how])]
        if len(keys) != 1:
            raise ValueError(f"combination {how!r} needs one curve named '*{MODALITY_SUFFIX[how]}'; the model gave "
                             f"{sorted(curves)}")
        return minmax_normalise(_curve(curves[keys[0]], keys[0]))
    normed = [minmax_normalise(_curve(c, name)) for name, c in curves.items()]
    if len({len(c) for c in normed}) != 1:
        raise ValueError(f"attention curves differ in length: { {k: len(_numpy(v)) for k, v in curves.items()} }")
    stack = np.stack(normed)  # (M, T)
    if how == "min":
        return stack.min(axis=0)
    if how == "product":
        return stack.prod(axis=0)
    return stack.mean(axis=0)


def segments_from_attention(att, seg_times, threshold: float = 0.5, normalise: str = "minmax",
                            merge_gap: float = 0.0, min_len: float = 0.0, score: str = "mean",
                            score_source: str = "normalised", class_prob: float | None = None,
                            ) -> list[tuple[float, float, float]]:
    """Steps 2-6 of the module's detection rule on one curve att (T,) with seg_times (T, 2) seconds.

    Returns [(start, end, score), ...] by start time; empty when no segment reaches the threshold
    (possible only with normalise='none' or threshold > 1) or min_len removes every segment.
    """
    if normalise not in NORMALISE:
        raise ValueError(f"unknown normalisation {normalise!r}; choose from {NORMALISE}")
    if score not in SCORE:
        raise ValueError(f"unknown segment score {score!r}; choose from {SCORE}")
    if score_source not in SCORE_SOURCE:
        raise ValueError(f"unknown score source {score_source!r}; choose from {SCORE_SOURCE}")
    for name, v in (("threshold", threshold), ("merge_gap", merge_gap), ("min_len", min_len)):
        if not np.isfinite(v) or (name != "threshold" and v < 0):
            raise ValueError(f"{name} must be finite{'' if name == 'threshold' else ' and >= 0'}; got {v}")
    if class_prob is not None and not (np.isfinite(class_prob) and class_prob >= 0):
        raise ValueError(f"class_prob must be a finite probability; got {class_prob}")
    raw = _curve(att, "segments_from_attention")
    times = _numpy(seg_times).astype(np.float64)
    if times.shape != (raw.size, 2):
        raise ValueError(f"seg_times must be (T, 2) = ({raw.size}, 2) to match the attention; got {times.shape}")
    if not np.isfinite(times).all() or (times[:, 1] < times[:, 0]).any():
        raise ValueError(f"seg_times must be finite [start, end] pairs with end >= start; got {times.tolist()}")

    norm = minmax_normalise(raw) if normalise == "minmax" else raw
    source = norm if score_source == "normalised" else raw
    candidates = np.flatnonzero(norm >= threshold)
    candidates = candidates[np.argsort(times[candidates, 0], kind="stable")]

    groups: list[list[int]] = []
    end = -np.inf
    for t in candidates:
        if groups and times[t, 0] - end <= merge_gap + GAP_TOL:
            groups[-1].append(t)
            end = max(end, times[t, 1])
        else:
            groups.append([t])
            end = times[t, 1]

    pool = np.mean if score == "mean" else np.max
    weight = 1.0 if class_prob is None else float(class_prob)
    out = []
    for g in groups:
        start, stop = float(times[g, 0].min()), float(times[g, 1].max())
        if stop - start >= min_len:
            out.append((start, stop, float(pool(source[g])) * weight))
    return out


def detect_batch(att: Mapping, seg_times, video_ids: Sequence[str], logits, combine: str = "min",
                 use_class_prob: bool = True, **rule) -> dict[str, list[tuple[float, float, float, int]]]:
    """Detections of a batch, ready for core.metrics.detection_map.

    att: {'att_v': (B, T), 'att_a': (B, T)} (the modalities the model has); seg_times (B, T, 2) seconds;
    logits (B, C). Each detection is (start, end, score, predicted class); with use_class_prob the score
    is multiplied by the softmax probability of the predicted class. rule: the keyword options of
    `segments_from_attention` (threshold, normalise, merge_gap, min_len, score, score_source).
    """
    logit = torch.as_tensor(_numpy(logits))
    if logit.ndim != 2 or logit.shape[0] != len(video_ids):
        raise ValueError(f"logits must be (B, C) with B = {len(video_ids)} videos; got {tuple(logit.shape)}")
    prob, pred = logit.softmax(dim=1).max(dim=1)  # (B,), (B,)
    curves = {k: _numpy(v) for k, v in att.items()}
    times = _numpy(seg_times)
    for k, v in curves.items():
        if v.ndim != 2 or v.shape[0] != len(video_ids):
            raise ValueError(f"{k} must be (B, T) with B = {len(video_ids)} videos; got {v.shape}")
    out = {}
    for b, vid in enumerate(video_ids):
        curve = combine_attention({k: v[b] for k, v in curves.items()}, combine)
        segs = segments_from_attention(curve, times[b], class_prob=float(prob[b]) if use_class_prob else None,
                                       **rule)
        out[vid] = [(s, e, sc, int(pred[b])) for s, e, sc in segs]
    return out
