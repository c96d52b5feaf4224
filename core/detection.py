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

That rule (`method='threshold'`, on the attention: `source='attention'`) is the paper-literal path. The default
(`method='oic'`, `source='auto'`) follows weakly-supervised temporal action localisation (class activation
sequences as in W-TALC / BaS-Net, the outer-inner contrast of AutoLoc / CoLA; docs/divergences.md):

- Source `cas` (`auto` picks it when the model gives `seg_scores`, else `attention`): the classifier applied to each
  segment's features, W_c f_t, for the predicted class c: how strongly each segment alone shows the predicted
  emotion. `tcam`: each segment's contribution to that logit, A_t W_c f_t (STPN's T-CAM; the model's
  `seg_logits`, whose mean over T plus the bias is the logits), so the attention gates it. `attention`: the
  modality attentions combined as above.
- Method `oic` (`oic_segments`): the curve is upsampled `upsample` times by linear interpolation between segment
  centres and min-max normalised; every run of bins at or above each of `thresholds` is a proposal, scored by the
  mean of the curve inside minus the mean over a margin of `margin` x its length on each side (at least one bin,
  clipped to the clip; no margin left scores 0); proposals whose tIoU with a better one exceeds `nms_iou` are
  dropped. The bin at the curve's maximum lies in a proposal of every threshold, so every video has a detection.

`fold_detections` maps detections of a loop-padded clip (seg_times past its duration) back into [0, duration].
`baseline_detections` gives the trivial detectors every result is compared with.
"""
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from core.metrics import temporal_iou
from models.erasing import minmax_normalize

COMBINE = ("min", "product", "mean", "visual", "audio")
NORMALISE = ("minmax", "none")
SCORE = ("mean", "max")
SCORE_SOURCE = ("normalised", "raw")
METHODS = ("oic", "threshold")
SOURCES = ("auto", "cas", "tcam", "attention")
CLASS_CURVES = {"cas": "seg_scores", "tcam": "seg_logits"}  # source -> the model output it reads
BASELINES = ("whole_clip", "random_span", "centre_span")
MODALITY_SUFFIX = {"visual": "_v", "audio": "_a"}  # CTEN's att_v / att_a, MART's degree_v / degree_a
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
    """(T,) -> (T,) float64 in [0, 1]: CTEN Eq. 8 by models/erasing.py `minmax_normalize` (the one rule, a
    constant curve -> ones), on a checked finite curve."""
    return minmax_normalize(torch.from_numpy(_curve(att, "minmax_normalise"))).numpy()


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


def upsample_curve(curve, seg_times, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """(T,) values at segment centres, seg_times (T, 2) -> (T * factor,) values and (T * factor, 2) bin times: each
    segment split into `factor` equal bins valued by linear interpolation between segment centres (constant beyond
    the first and last centre)."""
    if factor < 1:
        raise ValueError(f"upsample factor must be >= 1; got {factor}")
    c = _curve(curve, "upsample_curve")
    times = _numpy(seg_times).astype(np.float64)
    frac = np.arange(factor + 1) / factor  # (U + 1,)
    edges = times[:, :1] + (times[:, 1:] - times[:, :1]) * frac  # (T, U + 1)
    bins = np.stack([edges[:, :-1].ravel(), edges[:, 1:].ravel()], axis=1)  # (T * U, 2)
    return np.interp(bins.mean(axis=1), times.mean(axis=1), c), bins


def nms_1d(dets: list, iou: float) -> list:
    """[(start, end, score), ...] -> the kept ones by descending score: each drops every later one whose tIoU with
    it exceeds `iou`."""
    kept = []
    for d in sorted(dets, key=lambda d: -d[2]):
        if not kept or temporal_iou(d[:2], [k[:2] for k in kept]).max() <= iou:
            kept.append(d)
    return kept


def oic_segments(att, seg_times, thresholds: Sequence[float] = tuple(np.arange(1, 10) / 10), margin: float = 0.25,
                 nms_iou: float = 0.5, upsample: int = 4, class_prob: float | None = None
                 ) -> list[tuple[float, float, float]]:
    """The `oic` rule of the module docstring on one curve att (T,) with seg_times (T, 2) seconds -> [(start, end,
    score), ...] by start time; score = (inner mean - outer mean) x class_prob (when given)."""
    if not thresholds or not all(np.isfinite(thresholds)):
        raise ValueError(f"thresholds must be a non-empty list of finite values; got {thresholds}")
    if margin < 0 or not 0 <= nms_iou <= 1:
        raise ValueError(f"margin must be >= 0 and nms_iou in [0, 1]; got {margin}, {nms_iou}")
    curve, bins = upsample_curve(att, seg_times, upsample)  # (N,), (N, 2)
    curve = minmax_normalise(curve)  # after upsampling, so that a bin reaches 1 whatever the factor
    n = curve.size
    proposals = {}
    for th in thresholds:
        above = np.concatenate([[False], curve >= th, [False]])
        edges = np.flatnonzero(np.diff(above.astype(np.int8)))  # run starts and ends, alternating
        for s, e in zip(edges[::2], edges[1::2]):  # bins [s, e)
            pad = max(1, int(round(margin * (e - s))))
            outer = np.concatenate([curve[max(0, s - pad):s], curve[e:min(n, e + pad)]])
            contrast = curve[s:e].mean() - (outer.mean() if outer.size else 0.0)
            proposals[(s, e)] = contrast * (1.0 if class_prob is None else float(class_prob))
    dets = [(float(bins[s, 0]), float(bins[e - 1, 1]), sc) for (s, e), sc in proposals.items()]
    return sorted(nms_1d(dets, nms_iou))


def fold_detections(dets: list, duration: float) -> list:
    """Detections (start, end, score, ...) in the loop-padded time of seg_times -> the clip's own time
    [0, duration]: a clip shorter than T x L frames is loop-padded, so time t past the duration shows t mod duration.
    A detection at least the duration long becomes the whole clip; one that wraps splits into its two pieces (each
    keeps the score and any further fields); slivers under 1e-6 s are dropped. Detections are not merged."""
    if not duration > 0:
        raise ValueError(f"duration must be > 0; got {duration}")
    out = []
    for start, end, *rest in dets:
        if end - start >= duration:
            out.append((0.0, float(duration), *rest))
            continue
        s = start % duration
        e = s + (end - start)
        pieces = [(s, min(e, duration))] + ([(0.0, e - duration)] if e > duration else [])
        out += [(a, b, *rest) for a, b in pieces if b - a > 1e-6]
    return out


def baseline_detections(durations: Mapping[str, float], length: float, kind: str, scores: Mapping | None = None,
                        generator: np.random.Generator | None = None) -> dict:
    """One detection per video from no model at all: `whole_clip` [0, duration], `centre_span` the centred span of
    `length` seconds, `random_span` a span of `length` at a uniform random start (from `generator`); length is
    clipped to the duration. scores: {video_id: score} (default 1). -> {video_id: [(start, end, score)]}."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; choose from {BASELINES}")
    if kind == "random_span" and generator is None:
        raise ValueError("the random_span baseline needs a numpy generator")
    out = {}
    for vid, dur in durations.items():
        span = dur if kind == "whole_clip" else min(length, dur)
        start = {"whole_clip": 0.0, "centre_span": (dur - span) / 2}.get(kind)
        if start is None:
            start = float(generator.uniform(0.0, dur - span))
        out[vid] = [(start, start + span, 1.0 if scores is None else float(scores[vid]))]
    return out


def detect_batch(att: Mapping, seg_times, video_ids: Sequence[str], logits, combine: str = "min",
                 use_class_prob: bool = True, method: str = "oic", source: str = "auto",
                 durations=None, oic: Mapping | None = None,
                 **rule) -> dict[str, list[tuple[float, float, float, int]]]:
    """Detections of a batch, ready for core.metrics.detection_map.

    att: the model's curves by output name: attentions (B, T) ('att_v', 'att_a', the modalities the model has) and,
    when the model gives them, per-segment class curves (B, T, C) ('seg_scores' for source 'cas', 'seg_logits' for
    'tcam'); seg_times (B, T, 2) seconds; logits (B, C); durations (B,) seconds: detections are folded into each clip's own time
    (`fold_detections`). Each detection is (start, end, score, predicted class); with use_class_prob the score is
    multiplied by the softmax probability of the predicted class. method 'threshold': `segments_from_attention` with
    the keyword options `rule` (threshold, normalise, merge_gap, min_len, score, score_source); method 'oic':
    `oic_segments` with the options `oic`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown detection method {method!r}; choose from {METHODS}")
    if source not in SOURCES:
        raise ValueError(f"unknown detection source {source!r}; choose from {SOURCES}")
    logit = torch.as_tensor(_numpy(logits))
    if logit.ndim != 2 or logit.shape[0] != len(video_ids):
        raise ValueError(f"logits must be (B, C) with B = {len(video_ids)} videos; got {tuple(logit.shape)}")
    prob, pred = logit.softmax(dim=1).max(dim=1)  # (B,), (B,)
    class_curves = {k: v for k, v in att.items() if k in CLASS_CURVES.values()}
    curves = {k: _numpy(v) for k, v in att.items() if k not in class_curves}
    times = _numpy(seg_times)
    durations = None if durations is None else _numpy(durations)
    for k, v in curves.items():
        if v.ndim != 2 or v.shape[0] != len(video_ids):
            raise ValueError(f"{k} must be (B, T) with B = {len(video_ids)} videos; got {v.shape}")
    if source == "auto":
        source = "cas" if CLASS_CURVES["cas"] in class_curves else "attention"
    per_class = None
    if source in CLASS_CURVES:
        name = CLASS_CURVES[source]
        if name not in class_curves:
            raise ValueError(f"detection source {source!r} needs the model's per-segment class curve {name!r}; "
                             "use source 'attention' for a model without it")
        per_class = _numpy(class_curves[name])  # (B, T, C)
        if per_class.ndim != 3 or per_class.shape[0] != len(video_ids) or per_class.shape[2] != logit.shape[1]:
            raise ValueError(f"{name} must be (B, T, C) = ({len(video_ids)}, T, {logit.shape[1]}); "
                             f"got {per_class.shape}")
    out = {}
    for b, vid in enumerate(video_ids):
        p = float(prob[b]) if use_class_prob else None
        if per_class is not None:
            curve = per_class[b, :, int(pred[b])]  # (T,) of the predicted class
        else:
            curve = combine_attention({k: v[b] for k, v in curves.items()}, combine)
        if method == "oic":
            segs = oic_segments(curve, times[b], class_prob=p, **(oic or {}))
        else:
            segs = segments_from_attention(curve, times[b], class_prob=p, **rule)
        dets = [(s, e, sc, int(pred[b])) for s, e, sc in segs]
        out[vid] = fold_detections(dets, float(durations[b])) if durations is not None else dets
    return out
