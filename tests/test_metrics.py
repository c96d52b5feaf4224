import math

import numpy as np
import pytest
import torch

from core.metrics import (accuracy, average_precision, classification_summary, confusion_matrix,
                          detection_map, per_class_accuracy, polarity_accuracy, temporal_iou)

KEYS = ["mAP@0.1", "mAP@0.2", "mAP@0.3", "mAP@0.4", "mAP@0.5"]


# ---------------------------------------------------------------- classification

def test_accuracy_from_preds_and_logits():
    labels = [0, 1, 2, 2]
    assert accuracy([0, 1, 1, 2], labels) == pytest.approx(0.75)
    logits = torch.tensor([[5.0, 0, 0], [0, 3, 0], [0, 2, 1], [0, 0, 9]])  # argmax 0, 1, 1, 2
    assert accuracy(logits, torch.tensor(labels)) == pytest.approx(0.75)
    assert accuracy(logits.bfloat16(), torch.tensor(labels)) == pytest.approx(0.75)  # AMP outputs
    with pytest.raises(ValueError, match="3 predictions but 4 labels"):
        accuracy([0, 1, 1], labels)
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


def test_confusion_and_per_class_accuracy_nan_for_absent_class():
    preds, labels = [0, 1, 1, 2, 0, 0], [0, 1, 2, 2, 2, 0]
    cm = confusion_matrix(preds, labels, 4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = 2
    expected[1, 1] = 1
    expected[2, 1] = expected[2, 2] = expected[2, 0] = 1
    np.testing.assert_array_equal(cm, expected)
    acc = per_class_accuracy(preds, labels, 4)
    np.testing.assert_allclose(acc[:3], [1.0, 1.0, 1 / 3])
    assert math.isnan(acc[3])
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        confusion_matrix([0, 4], [0, 1], 4)


def test_polarity_accuracy_counts_same_sentiment_as_correct():
    polarity = [-1, 1, -1, 1]  # classes 1 and 3 positive
    preds, labels = [0, 3, 2, 1, 0], [2, 1, 1, 3, 0]
    # 0 vs 2: both neg ok; 3 vs 1: both pos ok; 2 vs 1: neg vs pos wrong; 1 vs 3 ok; 0 vs 0 ok
    assert polarity_accuracy(preds, labels, polarity) == pytest.approx(0.8)
    assert accuracy(preds, labels) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="polarity"):
        polarity_accuracy(preds, labels, [2, 1, -1, 1])
    # class 0 neutral: its two samples (labels 0) leave the metric; a polar sample predicted neutral is wrong
    assert polarity_accuracy(preds, labels, [0, 1, -1, 1]) == pytest.approx(2 / 4)


def test_classification_summary():
    s = classification_summary([0, 1, 1, 1], [0, 1, 2, 2], 4, polarity=[1, -1, -1, 1])
    assert s["acc"] == pytest.approx(0.5)
    assert s["mean_class_acc"] == pytest.approx((1 + 1 + 0) / 3)  # class 3 absent: left out
    assert s["polarity_acc"] == pytest.approx(1.0)


# ---------------------------------------------------------------- tIoU and AP

def test_temporal_iou_edge_cases():
    segs = [[0, 10], [10, 12], [2, 3], [5, 15], [20, 30], [4, 4]]
    np.testing.assert_allclose(temporal_iou([0, 10], segs), [1.0, 0.0, 0.1, 5 / 15, 0.0, 0.0])
    assert temporal_iou([3, 3], [[3, 3]]).tolist() == [0.0]  # zero-length union
    assert temporal_iou([0, 1], np.zeros((0, 2))).shape == (0,)
    with pytest.raises(ValueError, match="ends before it starts"):
        temporal_iou([5, 1], segs)


def test_average_precision_uses_monotone_envelope():
    # ranks: FP, TP, TP with 2 positives: P = 0, 1/2, 2/3; envelope at both TPs is 2/3
    assert average_precision([0.9, 0.8, 0.7], [0, 1, 1], 2) == pytest.approx(2 / 3)
    # unsorted input is ranked by score; TP, FP, FP, TP: (1 + 1/2) / 2
    assert average_precision([0.2, 0.9, 0.5, 0.4], [1, 1, 0, 0], 2) == pytest.approx(0.75)
    assert average_precision([], [], 3) == 0.0
    with pytest.raises(ValueError, match="undefined"):
        average_precision([0.5], [0], 0)


# ---------------------------------------------------------------- detection mAP

GT3 = {"v1": [[0, 10]], "v2": [[0, 10]], "v3": [[0, 10]]}


def test_perfect_predictions_give_one():
    gt = {"a": [[0, 2]], "b": [[3, 5], [7, 9]]}
    pred = {"a": [(0, 2, 0.1, 0)], "b": [(7, 9, 0.3, 0), (3, 5, 0.2, 0)]}
    out = detection_map(pred, gt)
    assert list(out) == KEYS + ["mAP_avg"]
    assert all(v == pytest.approx(1.0) for v in out.values())


def test_no_predictions_give_zero():
    assert all(v == 0.0 for v in detection_map({}, GT3).values())
    assert all(v == 0.0 for v in detection_map({"v1": []}, GT3).values())


def test_partial_overlaps_at_each_tiou_ranked_across_videos():
    pred = {"v1": [(0, 10, 0.9)],     # tIoU 1.0
            "v2": [(0, 4, 0.8)],      # tIoU 0.4
            "v3": [(0, 2.5, 0.95)]}   # tIoU 0.25, ranked first
    out = detection_map(pred, GT3)
    # 0.1, 0.2: all TP -> 1
    # 0.3, 0.4 (0.4 reaches 0.4): FP, TP, TP -> (2/3 + 2/3) / 3 = 4/9
    # 0.5: FP, TP, FP -> (1/2) / 3 = 1/6
    expected = [1.0, 1.0, 4 / 9, 4 / 9, 1 / 6]
    np.testing.assert_allclose([out[k] for k in KEYS], expected)
    assert out["mAP_avg"] == pytest.approx(np.mean(expected))


def test_duplicate_detection_is_false_positive():
    gt = {"v1": [[0, 10]], "v2": [[0, 10]]}
    clean = {"v1": [(0, 10, 0.9)], "v2": [(0, 10, 0.7)]}
    dup = {"v1": [(0, 10, 0.9), (1, 10, 0.8)], "v2": [(0, 10, 0.7)]}
    assert detection_map(clean, gt)["mAP@0.5"] == pytest.approx(1.0)
    # TP, FP (v1 already matched), TP -> (1 + 2/3) / 2
    assert detection_map(dup, gt)["mAP@0.5"] == pytest.approx(5 / 6)


def test_detection_takes_next_unmatched_ground_truth():
    gt = {"v": [[0, 10], [8, 20]]}
    # A matches the first; B's best (tIoU 10/12) is taken, its next is [8, 20] at tIoU 4/20 = 0.2
    pred = {"v": [(0, 10, 0.9), (0, 12, 0.8)]}
    out = detection_map(pred, gt)
    assert out["mAP@0.1"] == pytest.approx(1.0)
    assert out["mAP@0.2"] == pytest.approx(1.0)
    assert out["mAP@0.3"] == pytest.approx(0.5)


def test_predictions_in_video_without_ground_truth_are_false_positives():
    gt = {"v1": [[0, 10]], "empty": []}
    out = detection_map({"unknown": [(0, 10, 0.95)], "v1": [(0, 10, 0.9)]}, gt)
    assert out["mAP@0.5"] == pytest.approx(0.5)
    out = detection_map({"empty": [(0, 10, 0.95)], "v1": [(0, 10, 0.9)]}, gt)
    assert out["mAP@0.5"] == pytest.approx(0.5)


def test_missed_ground_truth_video_counts_in_recall():
    out = detection_map({"v1": [(0, 10, 0.9)]}, GT3)
    assert out["mAP@0.5"] == pytest.approx(1 / 3)


def test_per_class_and_class_agnostic():
    labels = {"v1": 0, "v2": 1, "v3": 1}
    pred = {"v1": [(0, 10, 0.9, 0)],
            "v2": [(0, 10, 0.95, 0), (0, 10, 0.7, 1)],
            "v3": [(0, 10, 0.6, 1), (0, 10, 0.99, 2)]}
    out = detection_map(pred, GT3, class_agnostic=False, gt_labels=labels)
    # class 0: FP (v2 is class 1), TP -> 1/2; class 1: TP, TP -> 1; class 2 has no ground truth
    assert set(out["per_class"]) == {0, 1}
    assert out["per_class"][0]["AP@0.3"] == pytest.approx(0.5)
    assert out["per_class"][1]["AP_avg"] == pytest.approx(1.0)
    assert all(out[k] == pytest.approx(0.75) for k in KEYS)
    # class-agnostic: v3@.99 TP, v2@.95 TP, v1@.9 TP, v2@.7 dup FP, v3@.6 dup FP -> 1
    assert detection_map(pred, GT3)["mAP_avg"] == pytest.approx(1.0)
    pred["v3"] = [(0, 10, 0.6, 1)]
    # v2 TP, v1 TP, v2 dup FP, v3 TP -> (1 + 1 + 3/4) / 3
    assert detection_map(pred, GT3)["mAP@0.1"] == pytest.approx(2.75 / 3)


def test_detection_map_input_errors():
    with pytest.raises(ValueError, match="gt_labels"):
        detection_map({}, GT3, class_agnostic=False)
    with pytest.raises(ValueError, match="no class for ground-truth videos"):
        detection_map({}, GT3, class_agnostic=False, gt_labels={"v1": 0})
    with pytest.raises(ValueError, match="class_idx"):
        detection_map({"v1": [(0, 1, 0.5)]}, GT3, class_agnostic=False, gt_labels={"v1": 0, "v2": 0, "v3": 0})
    with pytest.raises(ValueError, match="at least one ground-truth segment"):
        detection_map({}, {"v1": []})
    with pytest.raises(ValueError, match="'v1'.*ends before"):
        detection_map({}, {"v1": [[3, 1]]})
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        detection_map({}, GT3, tious=(0.0,))
