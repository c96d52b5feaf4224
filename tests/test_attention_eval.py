"""The attention evidence (core/evaluate.py detection_by_source, attention_liveness, view_accuracy;
CTENMethod.predict_views): each score source is scored on its own curve, and the erased views of an evaluation hold
the segments the attention picks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.evaluate import attention_liveness, detection_by_source, view_accuracy
from core.methods.cten import CTENMethod
from test_cten_step import KEYFRAMES, T, RecordingNet, attention, frames_as_video, make_batch, segment_of

LABELS = ["a", "b"]


def records(n=4, t=5):
    """Videos of t one-second segments whose key span is segment k = i % t; the attention peaks there, the class
    scores (cas) peak one segment later."""
    out = []
    for i in range(n):
        k = i % t
        att = np.full(t, 0.1)
        att[k] = 1.0
        cas = np.zeros((t, 2))
        cas[(k + 1) % t, i % 2] = 3.0
        out.append({"video_id": f"v{i}", "label": i % 2, "probs": np.eye(2)[i % 2] * 0.8 + 0.1,
                    "seg_times": np.stack([np.arange(t), np.arange(t) + 1.0], 1), "duration": float(t),
                    "att_v": att, "att_a": att.copy(), "seg_scores": cas, "seg_logits": cas * 0.5})
    return out


def test_detection_by_source_scores_each_curve_with_baselines_beside():
    recs = records()
    gt = {r["video_id"]: [[i % 5, i % 5 + 1]] for i, r in enumerate(recs)}
    det = detection_by_source(recs, LABELS, torch.tensor([1, 0]), gt, curves=("att_v", "att_a"))
    assert set(det) == {f"{s} {m}" for s in ("attention", "tcam", "cas") for m in ("oic", "threshold")}
    assert det["attention threshold"]["model"]["mAP@0.5"] == pytest.approx(1.0)
    assert det["cas threshold"]["model"]["mAP@0.5"] == pytest.approx(0.0)  # one segment late: no overlap
    assert {"whole_clip", "random_span", "centre_span"} <= set(det["attention oic"])
    bare = [{k: v for k, v in r.items() if k not in ("seg_scores", "seg_logits")} for r in recs]
    assert set(detection_by_source(bare, LABELS, torch.tensor([1, 0]), gt, curves=("att_v",),
                                   det_methods=("oic",))) == {"attention oic"}


def test_liveness_counts_segments_above_zero_and_view_accuracy():
    recs = [{"att_v": np.array([0.0, 0.0, 2.0]), "att_a": np.array([1.0, 1.0, 1.0])},
            {"att_v": np.zeros(3), "att_a": np.array([0.0, 1.0, 1.0])}]
    assert attention_liveness(recs) == pytest.approx({"att_v": 1 / 6, "att_a": 5 / 6})
    views = [{"keyframe": np.array([2.0, 0.0]), "context": np.array([0.0, 1.0])},
             {"keyframe": np.array([2.0, 0.0]), "context": np.array([1.0, 0.0])}]
    assert view_accuracy(views, [0, 0]) == {"keyframe": 1.0, "context": 0.5}


def test_predict_views_feed_the_keyframes_and_the_context_the_attention_picks():
    net = RecordingNet(attention())
    method = CTENMethod(F.cross_entropy, read_frames=lambda index, fi, aug: frames_as_video(fi))
    with torch.no_grad():
        out = method.predict_views(net, make_batch())
    assert set(out) == {"keyframe", "context"} and out["keyframe"].shape == (2, 3)
    key_in, context_in = net.calls[1]["visual"], net.calls[2]["visual"]  # after the original clip's pass
    for b, keys in enumerate(KEYFRAMES):
        assert set(segment_of(key_in[b]).flatten().tolist()) == keys
        assert set(segment_of(context_in[b]).flatten().tolist()) == set(range(T)) - keys


def test_summarise_prints_the_attention_and_cas_rows_side_by_side():
    from core.evaluate import detection_lines, summarise
    recs = records()
    gt = {r["video_id"]: [[i % 5, i % 5 + 1]] for i, r in enumerate(recs)}
    out = summarise(recs, LABELS, torch.tensor([1, 0]), gt, curves=("att_v", "att_a"),
                    det_rule=dict(source="attention", method="threshold"), also=("cas", "tcam"))
    assert out["detection_source"] == "attention threshold" and set(out["detection_also"]) == {"cas", "tcam"}
    assert out["detection"]["mAP@0.5"] == pytest.approx(1.0) and out["detection_also"]["cas"]["mAP@0.5"] == 0.0
    lines = detection_lines(out)
    assert "model (attention threshold)" in lines[0] and "model (cas threshold)" in lines[1]
    assert "mAP@0.5 1.000" in lines[0] and "mAP@0.5 0.000" in lines[1] and len(lines) == 6
