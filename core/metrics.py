"""Evaluation metrics: classification (accuracy, per class, sentiment polarity, confusion) and temporal
detection (mAP at temporal-IoU thresholds, CTEN Sec. 4.5 / Table 3).

Every classification function takes either predicted class indices (N,) or scores/logits (N, C), whose
argmax along dim 1 is the prediction, and labels (N,), as numpy arrays, torch tensors or lists.
Accuracies are fractions in [0, 1]; mAP values too (the papers print percentages).
"""
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

TIOUS = (0.1, 0.2, 0.3, 0.4, 0.5)
IOU_TOL = 1e-9  # a tIoU "reaches" a threshold when tiou >= threshold - IOU_TOL (guards float round-off)


def _numpy(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()  # numpy has no bfloat16
    return np.asarray(x)


def _preds_labels(outputs, labels, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    out, lab = _numpy(outputs), _numpy(labels).astype(np.int64).reshape(-1)
    if out.ndim == 2:
        out = out.argmax(axis=1)
    elif out.ndim != 1:
        raise ValueError(f"predictions must be class indices (N,) or scores (N, C); got shape {out.shape}")
    pred = out.astype(np.int64)
    if pred.shape != lab.shape:
        raise ValueError(f"{pred.shape[0]} predictions but {lab.shape[0]} labels")
    if pred.size == 0:
        raise ValueError("no samples to score: predictions and labels are empty")
    if n_classes is not None:
        for name, v in (("prediction", pred), ("label", lab)):
            if v.min() < 0 or v.max() >= n_classes:
                raise ValueError(f"{name} outside [0, {n_classes}): min {v.min()}, max {v.max()}")
    return pred, lab


def accuracy(outputs, labels) -> float:
    """Fraction of samples whose prediction (index, or argmax of (N, C) scores) equals the label."""
    pred, lab = _preds_labels(outputs, labels)
    return float((pred == lab).mean())


def confusion_matrix(outputs, labels, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    pred, lab = _preds_labels(outputs, labels, n_classes)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (lab, pred), 1)
    return cm


def per_class_accuracy(outputs, labels, n_classes: int) -> np.ndarray:
    """(C,) float64 recall of each class (correct / samples of that class).

    A class with no sample among `labels` gets NaN (its accuracy is undefined, not zero); average with
    np.nanmean for the mean class accuracy.
    """
    cm = confusion_matrix(outputs, labels, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def polarity_accuracy(outputs, labels, polarity) -> float:
    """Sentiment accuracy: fraction of samples whose predicted class has the true class's polarity, over the
    samples of polar classes (a neutral true class has no polarity and is left out; a polar sample predicted
    neutral counts as wrong). NaN when no sample has a polar class.

    polarity: (C,) of +1 (positive) / -1 (negative) / 0 (neutral) per class, e.g.
    datasets.annotations.class_polarity.
    """
    pol = _numpy(polarity).reshape(-1)
    if not np.isin(pol, (-1, 0, 1)).all():
        raise ValueError(f"polarity must hold only +1/-1/0 per class; got {pol.tolist()}")
    pred, lab = _preds_labels(outputs, labels, len(pol))
    polar = pol[lab] != 0
    return float((pol[pred] == pol[lab])[polar].mean()) if polar.any() else float("nan")


def classification_summary(outputs, labels, n_classes: int, polarity=None) -> dict:
    """The scalars logged per evaluation: 'acc', 'mean_class_acc' (mean over classes present),
    and 'polarity_acc' when polarity is given."""
    out = {"acc": accuracy(outputs, labels),
           "mean_class_acc": float(np.nanmean(per_class_accuracy(outputs, labels, n_classes)))}
    if polarity is not None:
        out["polarity_acc"] = polarity_accuracy(outputs, labels, polarity)
    return out


# ----------------------------------------------------------------------------------------------------
# Temporal detection


def _segments(segs, what: str) -> np.ndarray:
    arr = np.asarray(segs, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{what}: segments must be [[start, end], ...]; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: segment bounds must be finite; got {arr.tolist()}")
    if (arr[:, 1] < arr[:, 0]).any():
        raise ValueError(f"{what}: a segment ends before it starts: {arr[arr[:, 1] < arr[:, 0]].tolist()}")
    return arr


def temporal_iou(seg, segs) -> np.ndarray:
    """tIoU of one segment [start, end] with each of segs (M, 2) -> (M,) float64.

    tIoU = |intersection| / |union| with |union| = len(seg) + len(other) - |intersection|. Touching or
    disjoint segments give 0; a pair whose union has zero length (two points) gives 0.
    """
    s = _segments([seg], "temporal_iou seg")[0]
    others = _segments(segs, "temporal_iou segs")
    inter = np.clip(np.minimum(s[1], others[:, 1]) - np.maximum(s[0], others[:, 0]), 0.0, None)
    union = (s[1] - s[0]) + (others[:, 1] - others[:, 0]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def average_precision(scores, is_tp, n_positives: int) -> float:
    """Area under the interpolated precision-recall curve (ActivityNet / THUMOS style).

    Detections are ranked by score, highest first (a stable sort: ties keep their input order).
    With tp_i in {0, 1} at rank i and n_positives ground-truth segments:
        P_k = sum_{i<=k} tp_i / k,   R_k = sum_{i<=k} tp_i / n_positives,
        interpolated precision  P^_k = max_{j >= k} P_j   (the monotone envelope),
        AP = sum_k (R_k - R_{k-1}) P^_k = (1 / n_positives) * sum_{k: tp_k = 1} P^_k.
    Ground truth never detected lowers the reachable recall and so the area. No detection gives 0.
    """
    if n_positives <= 0:
        raise ValueError("average precision is undefined without ground-truth positives")
    scores, tp = np.asarray(scores, dtype=np.float64).reshape(-1), np.asarray(is_tp, dtype=bool).reshape(-1)
    if scores.shape != tp.shape:
        raise ValueError(f"{scores.size} scores but {tp.size} true-positive flags")
    if tp.sum() > n_positives:
        raise ValueError(f"{tp.sum()} true positives exceed {n_positives} ground-truth segments")
    if tp.size == 0:
        return 0.0
    tp = tp[np.argsort(-scores, kind="stable")]
    precision = np.cumsum(tp) / np.arange(1, tp.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(envelope[tp].sum() / n_positives)


def _flatten_predictions(predictions: Mapping, need_class: bool):
    """-> video ids, segments (N, 2), scores (N,), classes (N,) in sorted-video-id then list order."""
    vids, segs, scores, classes = [], [], [], []
    for vid in sorted(predictions):
        for det in predictions[vid]:
            if len(det) not in (3, 4) or (need_class and len(det) != 4):
                want = "(start, end, score, class_idx)" if need_class else "(start, end, score[, class_idx])"
                raise ValueError(f"video {vid!r}: a prediction must be {want}; got {tuple(det)}")
            vids.append(vid)
            segs.append(det[:2])
            scores.append(float(det[2]))
            classes.append(int(det[3]) if len(det) == 4 else -1)
    seg_arr = _segments(segs, "predictions")
    score_arr = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(score_arr).all():
        raise ValueError("prediction scores must be finite")
    return vids, seg_arr, score_arr, np.asarray(classes, dtype=np.int64)


def _match(vids: Sequence[str], segs: np.ndarray, scores: np.ndarray, gt: Mapping[str, np.ndarray],
           tious: Sequence[float]) -> np.ndarray:
    """(len(tious), N) bool true-positive flags of detections against ground truth.

    Greedy in decreasing score over all videos: a detection takes, among its video's ground-truth
    segments not yet matched at this threshold, the one of highest tIoU, if that tIoU reaches the
    threshold; otherwise (no ground truth in its video, no overlap, or every overlapping segment
    already taken, e.g. a duplicate) it is a false positive.
    """
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros((len(tious), len(vids)), dtype=bool)
    taken = {(t, vid): np.zeros(len(g), dtype=bool) for t in range(len(tious)) for vid, g in gt.items()}
    for i in order:
        g = gt.get(vids[i])
        if g is None or len(g) == 0:
            continue
        iou = temporal_iou(segs[i], g)
        ranked = np.argsort(-iou, kind="stable")
        for t, thr in enumerate(tious):
            used = taken[(t, vids[i])]
            for j in ranked:
                if iou[j] < thr - IOU_TOL:
                    break
                if not used[j]:
                    used[j] = tp[t, i] = True
                    break
    return tp


def _ap_per_tiou(vids, segs, scores, gt, tious) -> list[float]:
    n_gt = sum(len(g) for g in gt.values())
    tp = _match(vids, segs, scores, gt, tious)
    return [average_precision(scores, tp[t], n_gt) for t in range(len(tious))]


def detection_map(predictions: Mapping, ground_truth: Mapping, tious: Sequence[float] = TIOUS,
                  class_agnostic: bool = True, gt_labels: Mapping | None = None) -> dict:
    """Temporal detection mAP at each tIoU threshold.

    predictions:  {video_id: [(start, end, score, class_idx), ...]} (class_idx may be left out when
                  class_agnostic); seconds.
    ground_truth: {video_id: [[start, end], ...]} emotional segments in seconds ([] for none).
    gt_labels:    {video_id: class_idx} of every ground-truth video; required when not class_agnostic.

    Matching and AP: see `_match` (each ground-truth segment matched at most once, greedy by score
    across all videos, tIoU >= threshold) and `average_precision`. Predictions of a video absent from
    ground_truth (or with []) are false positives; ground-truth videos without predictions count in
    the recall denominator.

    class_agnostic=True (CTEN Table 3): every prediction against every ground-truth segment, classes
    ignored. Returns {'mAP@0.1': AP, ..., 'mAP_avg': mean over the thresholds}.
    class_agnostic=False: for each class c with at least one ground-truth segment, the AP of the
    predictions with class_idx == c against the segments of the videos labelled c; 'mAP@t' is the
    mean over those classes and 'per_class' = {c: {'AP@0.1': ..., 'AP_avg': ...}}. Classes without
    ground truth have no AP and are left out (their predictions are ignored).
    """
    tious = tuple(float(t) for t in tious)
    if not tious or any(not 0.0 < t <= 1.0 for t in tious):
        raise ValueError(f"tIoU thresholds must lie in (0, 1]; got {tious}")
    gt = {vid: _segments(s, f"ground truth of {vid!r}") for vid, s in ground_truth.items()}
    if sum(len(g) for g in gt.values()) == 0:
        raise ValueError("detection mAP needs at least one ground-truth segment; the ground truth is empty")
    vids, segs, scores, classes = _flatten_predictions(predictions, need_class=not class_agnostic)
    keys = [f"mAP@{t:g}" for t in tious]

    if class_agnostic:
        aps = _ap_per_tiou(vids, segs, scores, gt, tious)
        return {**dict(zip(keys, aps)), "mAP_avg": float(np.mean(aps))}

    if gt_labels is None:
        raise ValueError("per-class detection mAP needs gt_labels = {video_id: class_idx}")
    missing = sorted(v for v in gt if v not in gt_labels)
    if missing:
        raise ValueError(f"gt_labels has no class for ground-truth videos {missing[:5]}")
    per_class = {}
    for c in sorted({int(gt_labels[v]) for v, g in gt.items() if len(g)}):
        keep = np.flatnonzero(classes == c)
        gt_c = {v: g for v, g in gt.items() if int(gt_labels[v]) == c}
        aps = _ap_per_tiou([vids[i] for i in keep], segs[keep], scores[keep], gt_c, tious)
        per_class[c] = {**{f"AP@{t:g}": a for t, a in zip(tious, aps)}, "AP_avg": float(np.mean(aps))}
    table = np.array([[per_class[c][f"AP@{t:g}"] for t in tious] for c in per_class])  # (classes, tious)
    means = table.mean(axis=0)
    return {**dict(zip(keys, means.tolist())), "mAP_avg": float(means.mean()), "per_class": per_class}


def mean_std(values: list) -> tuple:
    """Mean and sample standard deviation (n - 1; None for a single value) of the finite values."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
