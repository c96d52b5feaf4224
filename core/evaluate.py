"""From per-video predictions to the reported numbers: accuracy, per-class and sentiment accuracy, the confusion
matrix, and (with ground-truth segments) weakly-supervised detection mAP at tIoU 0.1-0.5 beside the trivial
baselines' mAP (core/detection.py `baseline_detections`), all scored by the same core.metrics.detection_map."""
from typing import Optional, Sequence

import numpy as np
import torch

from core.detection import BASELINES, CLASS_CURVES, baseline_detections, detect_batch
from core.metrics import TIOUS, classification_summary, confusion_matrix, detection_map, per_class_accuracy


def summarise(records: list, labels: Sequence[str], polarity: torch.Tensor, gt_segments: Optional[dict] = None,
              curves: Sequence[str] = (), det_rule: Optional[dict] = None, also: Sequence[str] = ()) -> dict:
    """records: predict_all's per-video dicts. Returns scalars, 'per_class_acc', 'confusion', 'per_video' and,
    given gt_segments (video_id -> [[start, end], ...]) and attention curves, 'detection' (class-agnostic, as
    the paper), 'detection_per_class' and 'detection_baselines'; per-segment class curves in the records (core.detection
    .CLASS_CURVES) are used too. det_rule: keyword options of core.detection.detect_batch; 'detection_source'
    names the score source and proposal method it used. also: further score sources (core.detection SOURCES) scored
    by the same rule into 'detection_also' {source: mAP} (those the records lack are left out)."""
    probs = np.stack([r["probs"] for r in records])  # (N, C)
    y = np.array([r["label"] for r in records])
    out = classification_summary(probs, y, len(labels), polarity)
    out["per_class_acc"] = dict(zip(labels, per_class_accuracy(probs, y, len(labels)).tolist()))
    out["confusion"] = confusion_matrix(probs, y, len(labels)).tolist()
    out["labels"] = list(labels)
    present = [c for c in (*curves, *CLASS_CURVES.values()) if c in records[0]]
    out["curves"] = [c for c in present if c not in CLASS_CURVES.values()]  # the (T,) curves the timelines draw
    rule = det_rule or {}
    durations = np.array([clip_duration(r) for r in records])
    detections = {}
    if out["curves"]:  # at least one attention curve
        detections = detect_batch({c: np.stack([r[c] for r in records]) for c in present},
                                  np.stack([r["seg_times"] for r in records]), [r["video_id"] for r in records],
                                  np.log(np.clip(probs, 1e-12, None)),
                                  durations=durations, **rule)
    if gt_segments is not None and detections:
        missing = [r["video_id"] for r in records if r["video_id"] not in gt_segments]
        if missing:
            raise ValueError(f"ground-truth segments lack {len(missing)} evaluated videos (e.g. {missing[:3]}); "
                             "pass the key-span file written for this dataset")
        gt = {r["video_id"]: gt_segments[r["video_id"]] for r in records}
        gt_labels = {r["video_id"]: r["label"] for r in records}
        out["detection"] = detection_map(detections, gt, TIOUS)  # class-agnostic, as the paper
        out["detection_source"] = f"{resolved_source(rule.get('source', 'auto'), records[0])} " \
                                  f"{rule.get('method', 'threshold')}"
        out["detection_also"] = {s: summarise(records, labels, polarity, gt_segments, curves, {**rule, "source": s})
                                 ["detection"] for s in also
                                 if s not in CLASS_CURVES or CLASS_CURVES[s] in records[0]}
        per_class = detection_map(detections, gt, TIOUS, class_agnostic=False, gt_labels=gt_labels)
        out["detection_per_class"] = {labels[c]: v for c, v in per_class.pop("per_class").items()}
        out["detection_per_class"]["mean"] = per_class
        scores = {r["video_id"]: float(r["probs"].max()) if rule.get("use_class_prob", True) else 1.0
                  for r in records}
        out["detection_baselines"] = detection_baselines(detections, dict(zip([r["video_id"] for r in records], durations.tolist())),
                                                         gt, scores)
    out["per_video"] = [{"video_id": r["video_id"], "label": labels[r["label"]],
                         "pred": labels[int(r["probs"].argmax())], "probs": r["probs"].round(4).tolist(),
                         "segments": detections.get(r["video_id"], []),
                         **{c: r[c].round(4).tolist() for c in present}} for r in records]
    return out


RANDOM_DRAWS = 20


def resolved_source(source: str, record: dict) -> str:
    """The score source detect_batch reads for `source` ('auto': cas when the record has per-segment class scores)."""
    if source != "auto":
        return source
    return "cas" if CLASS_CURVES["cas"] in record else "attention"


def clip_duration(record: dict) -> float:
    """A record's clip length in seconds: its 'duration', else where its last segment ends."""
    return float(record["duration"]) if "duration" in record else float(np.max(record["seg_times"]))


def detection_baselines(detections: dict, durations: dict, gt: dict, scores: dict) -> dict:
    """Class-agnostic mAP of the trivial detectors (core.detection.baseline_detections): the whole clip, and spans of
    the mean length of each video's top-scored detection, centred or at a random start (mean over RANDOM_DRAWS
    seeded draws). Every baseline detection carries the video's score from `scores`. Returns {baseline: {mAP@t, ...},
    'span_length_s': the length used}."""
    tops = [max(d, key=lambda x: x[2]) for d in detections.values() if d]
    length = float(np.mean([e - s for s, e, *_ in tops])) if tops else 0.0
    out = {"span_length_s": length}
    for kind in BASELINES:
        draws = RANDOM_DRAWS if kind == "random_span" else 1
        rng = np.random.default_rng(0)
        maps = [detection_map(baseline_detections(durations, length, kind, scores, rng), gt, TIOUS)
                for _ in range(draws)]
        out[kind] = {k: float(np.mean([m[k] for m in maps])) for k in maps[0]}
    return out


def detection_lines(result: dict) -> list[str]:
    """The printed summary of a result's detection: the model's class-agnostic mAP (labelled with its score source
    and proposal method), the same rule on each further source ('detection_also'), and each baseline's, one line
    each, in the same tIoU columns."""
    if "detection" not in result:
        return []
    method = result.get("detection_source", " ").split(" ")[1]
    rows = [(f"model ({result['detection_source']})" if "detection_source" in result else "model", result["detection"])]
    rows += [(f"model ({source} {method})", m) for source, m in result.get("detection_also", {}).items()]
    base = result.get("detection_baselines", {})
    rows += [(f"{kind} ({base['span_length_s']:.2f} s)" if kind != "whole_clip" else kind, base[kind])
             for kind in BASELINES if kind in base]
    width = max(len(name) for name, _ in rows)
    return [f"detection {name:<{width}}: " + " ".join(f"{k} {v:.3f}" for k, v in m.items())
            for name, m in rows]


DET_SOURCES = ("attention", "tcam", "cas")  # the score curves a CTEN-like model gives (core.detection SOURCES)


def detection_by_source(records: list, labels: Sequence[str], polarity: torch.Tensor, gt_segments: dict,
                        det_rule: Optional[dict] = None, curves: Sequence[str] = (), sources: Sequence[str] = DET_SOURCES,
                        det_methods: Sequence[str] = ("oic", "threshold")) -> dict:
    """Detection mAP of one set of predictions read from each score source, by each proposal method, with the
    trivial baselines of the same detections beside each. det_rule: the other detect_batch options (taken as
    given). Sources the records lack (e.g. 'cas' for a model without per-segment class scores) are left out.
    -> {'<source> <method>': {'model': {mAP@t: ...}, 'whole_clip': ..., 'random_span': ..., 'centre_span': ...,
    'span_length_s': ...}}."""
    out = {}
    for source in sources:
        if source in CLASS_CURVES and CLASS_CURVES[source] not in records[0]:
            continue
        for method in det_methods:
            res = summarise(records, labels, polarity, gt_segments, curves,
                            {**(det_rule or {}), "source": source, "method": method})
            out[f"{source} {method}"] = {"model": res["detection"], **res["detection_baselines"]}
    return out


def attention_liveness(records: list, names: Sequence[str] = ("att_v", "att_a")) -> dict:
    """{curve name: the share of (video, segment) values above 0} over the records: a ReLU attention (CTEN Eq. 7)
    that is 0 in a segment gives that segment no weight, and one that is 0 over a whole video has no temporal
    preference at all (min-max normalisation makes it a constant)."""
    return {n: float(np.mean(np.concatenate([r[n] for r in records]) > 0)) for n in names if n in records[0]}


def view_accuracy(view_logits: list, y) -> dict:
    """view_logits: [{'keyframe': (C,), 'context': (C,)} per video], y: true labels -> each view's accuracy."""
    y = np.asarray(y)
    return {view: float(np.mean(np.array([int(np.argmax(v[view])) for v in view_logits]) == y))
            for view in view_logits[0]}
