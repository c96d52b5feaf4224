import numpy as np
import pytest
import torch

from core.detection import (baseline_detections, combine_attention, detect_batch, fold_detections, minmax_normalise,
                            nms_1d, oic_segments, segments_from_attention, upsample_curve)
from core.metrics import detection_map


def _times(T, length=2.0):
    return np.stack([np.arange(T) * length, np.arange(1, T + 1) * length], axis=1)  # (T, 2) contiguous


def test_minmax_normalise_and_constant_curve():
    np.testing.assert_allclose(minmax_normalise([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(minmax_normalise([0.3, 0.3, 0.3]), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(minmax_normalise(np.zeros(4)), np.ones(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        minmax_normalise([0.0, np.nan])


def test_threshold_selects_and_contiguous_segments_merge():
    att = [0.0, 0.2, 0.8, 1.0, 0.1, 0.6, 0.0]  # normalised = itself
    segs = segments_from_attention(att, _times(7), threshold=0.5)
    assert segs == [(4.0, 8.0, pytest.approx(0.9)), (10.0, 12.0, pytest.approx(0.6))]
    segs = segments_from_attention(att, _times(7), threshold=0.15)
    assert [(s, e) for s, e, _ in segs] == [(2.0, 8.0), (10.0, 12.0)]  # 0.1 at [8, 10] splits them


def test_merge_gap_joins_nearby_candidates_only():
    att = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    times = _times(6)
    assert [(s, e) for s, e, _ in segments_from_attention(att, times)] == [(0, 2), (4, 6), (10, 12)]
    assert [(s, e) for s, e, _ in segments_from_attention(att, times, merge_gap=2.0)] == [(0, 6), (10, 12)]
    assert [(s, e) for s, e, _ in segments_from_attention(att, times, merge_gap=4.0)] == [(0, 12)]


def test_float32_touching_bounds_merge():
    times = np.array([[0.0, 1 / 3], [1 / 3, 2 / 3]], dtype=np.float32).astype(np.float64)
    times[1, 0] += 1e-7
    assert len(segments_from_attention([1.0, 1.0], times, normalise="none")) == 1


def test_constant_curve_is_one_whole_video_segment():
    segs = segments_from_attention([0.25] * 5, _times(5), threshold=0.7)
    assert segs == [(0.0, 10.0, 1.0)]


def test_single_segment_video():
    assert segments_from_attention([3.0], [[1.5, 4.0]]) == [(1.5, 4.0, 1.0)]


def test_score_options_and_class_prob():
    att = [1.0, 3.0, 5.0, 0.0]  # normalised 0.2, 0.6, 1.0, 0
    t = _times(4)
    (s, e, sc), = segments_from_attention(att, t, threshold=0.5)
    assert (s, e) == (2.0, 6.0) and sc == pytest.approx(0.8)
    assert segments_from_attention(att, t, threshold=0.5, score="max")[0][2] == pytest.approx(1.0)
    assert segments_from_attention(att, t, threshold=0.5, score_source="raw")[0][2] == pytest.approx(4.0)
    assert segments_from_attention(att, t, threshold=0.5, class_prob=0.5)[0][2] == pytest.approx(0.4)


def test_min_len_and_unnormalised_threshold():
    att = [1.0, 0.0, 1.0, 1.0, 0.0]
    segs = segments_from_attention(att, _times(5, 1.0), min_len=1.5)
    assert [(s, e) for s, e, _ in segs] == [(2.0, 4.0)]
    assert segments_from_attention([0.1, 0.2], _times(2), normalise="none", threshold=0.5) == []


def test_segments_input_errors():
    with pytest.raises(ValueError, match=r"\(T, 2\) = \(3, 2\)"):
        segments_from_attention([1, 2, 3], _times(2))
    with pytest.raises(ValueError, match="end >= start"):
        segments_from_attention([1, 2], [[0, 1], [3, 2]])
    with pytest.raises(ValueError, match="merge_gap"):
        segments_from_attention([1, 2], _times(2), merge_gap=-1)
    with pytest.raises(ValueError, match="unknown segment score"):
        segments_from_attention([1, 2], _times(2), score="median")


def test_combine_attention_modes():
    curves = {"att_v": [0.0, 1.0, 2.0, 4.0], "att_a": [4.0, 3.0, 2.0, 0.0]}  # normalised v .0 .25 .5 1; a 1 .75 .5 0
    np.testing.assert_allclose(combine_attention(curves, "min"), [0.0, 0.25, 0.5, 0.0])
    np.testing.assert_allclose(combine_attention(curves, "product"), [0.0, 0.1875, 0.25, 0.0])
    np.testing.assert_allclose(combine_attention(curves, "mean"), [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(combine_attention(curves, "visual"), [0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(combine_attention(curves, "audio"), [1.0, 0.75, 0.5, 0.0])
    # a constant modality (e.g. silent audio) does not veto the other
    flat = {"att_v": [0.0, 2.0, 1.0], "att_a": [0.5, 0.5, 0.5]}
    np.testing.assert_allclose(combine_attention(flat, "product"), [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match=r"needs one curve named '\*_a'"):
        combine_attention({"att_v": [1.0, 2.0]}, "audio")
    degrees = {"degree_v": [0.0, 1.0, 2.0, 4.0], "degree_a": [4.0, 3.0, 2.0, 0.0]}  # MART's curves
    np.testing.assert_allclose(combine_attention(degrees, "visual"), [0.0, 0.25, 0.5, 1.0])
    with pytest.raises(ValueError, match="differ in length"):
        combine_attention({"att_v": [1.0, 2.0], "att_a": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="unknown attention combination"):
        combine_attention(curves, "sum")


def test_detect_batch_feeds_detection_map():
    att_v = torch.tensor([[0.0, 0.1, 0.9, 1.0], [1.0, 0.9, 0.0, 0.1]])
    att_a = torch.tensor([[0.0, 0.2, 1.0, 0.8], [0.8, 1.0, 0.1, 0.0]])
    times = torch.tensor(_times(4), dtype=torch.float32).expand(2, 4, 2)
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    dets = detect_batch({"att_v": att_v, "att_a": att_a}, times, ["a", "b"], logits, method="threshold")
    assert list(dets) == ["a", "b"]
    # a: min of normalised curves [0, .1, .9, .8], re-normalised [0, 1/9, 1, 8/9] -> segments 2-3
    (s, e, score, cls), = dets["a"]
    assert (s, e, cls) == (4.0, 8.0, 0)
    p = torch.softmax(logits[0], 0)[0].item()
    assert score == pytest.approx(p * (1.0 + 8 / 9) / 2)
    # b: min [.8, .9, 0, 0] -> [8/9, 1, 0, 0]; tied logits -> class 0 with probability 1/2
    assert dets["b"] == [(0.0, 4.0, pytest.approx(0.5 * (8 / 9 + 1.0) / 2), 0)]
    out = detection_map(dets, {"a": [[4.0, 8.0]], "b": [[0.0, 4.0]]})
    assert out["mAP_avg"] == pytest.approx(1.0)
    plain = detect_batch({"att_v": att_v}, times, ["a", "b"], logits, combine="visual", use_class_prob=False,
                         method="threshold")
    assert plain["b"][0][2] == pytest.approx(0.95)
    with pytest.raises(ValueError, match=r"\(B, C\) with B = 3"):
        detect_batch({"att_v": att_v}, times, ["a", "b", "c"], logits)


def test_upsample_interpolates_between_segment_centres():
    values, bins = upsample_curve([0.0, 1.0, 0.0], _times(3), 2)  # centres at 1, 3, 5 s
    np.testing.assert_allclose(bins, [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6]])
    np.testing.assert_allclose(values, [0.0, 0.25, 0.75, 0.75, 0.25, 0.0])  # bin centres .5 1.5 2.5 3.5 4.5 5.5
    same, bins1 = upsample_curve([3.0, 1.0], _times(2), 1)
    np.testing.assert_allclose(same, [3.0, 1.0])
    np.testing.assert_allclose(bins1, _times(2))


def test_oic_finds_the_bump_and_scores_by_contrast():
    att = [0.0, 0.1, 0.9, 1.0, 0.1, 0.0, 0.0, 0.2]
    dets = oic_segments(att, _times(8, 1.0), upsample=1, nms_iou=0.0)
    top = max(dets, key=lambda d: d[2])
    assert (top[0], top[1]) == (2.0, 4.0)
    inner, outer = (0.9 + 1.0) / 2, 0.1  # one bin of margin each side: 0.1 and 0.1
    assert top[2] == pytest.approx(inner - outer)
    assert oic_segments(att, _times(8, 1.0), upsample=1, nms_iou=0.0, class_prob=0.5)[0][2] == pytest.approx(
        sorted(dets)[0][2] * 0.5)
    for s, e, _ in dets:  # NMS at 0: no two detections overlap
        assert all(min(e, e2) <= max(s, s2) for s2, e2, _ in dets if (s2, e2) != (s, e))


def test_oic_constant_curve_is_the_whole_clip_and_every_video_gets_a_detection():
    assert oic_segments([0.3] * 4, _times(4)) == [(0.0, 8.0, 1.0)]  # no margin left: inner 1 - outer 0
    g = np.random.default_rng(0)
    for _ in range(50):
        assert oic_segments(g.random(6), _times(6), thresholds=(0.9,))


def test_nms_keeps_the_best_of_overlapping_detections():
    dets = [(0.0, 2.0, 0.5), (0.0, 2.5, 0.9), (3.0, 4.0, 0.1)]
    assert nms_1d(dets, 0.5) == [(0.0, 2.5, 0.9), (3.0, 4.0, 0.1)]
    assert len(nms_1d(dets, 0.9)) == 3


def test_fold_detections_maps_padded_time_into_the_clip():
    dets = [(1.0, 2.0, 0.9, 3), (4.5, 5.5, 0.5, 3), (6.5, 7.0, 0.4, 3), (0.0, 8.0, 0.2, 3)]  # clip of 5 s
    assert fold_detections(dets, 5.0) == [(1.0, 2.0, 0.9, 3), (4.5, 5.0, 0.5, 3), (0.0, 0.5, 0.5, 3),
                                          (1.5, 2.0, 0.4, 3), (0.0, 5.0, 0.2, 3)]
    with pytest.raises(ValueError, match="duration"):
        fold_detections(dets, 0.0)


def test_baselines():
    durations = {"a": 6.0, "b": 3.0}
    assert baseline_detections(durations, 2.0, "whole_clip") == {"a": [(0.0, 6.0, 1.0)], "b": [(0.0, 3.0, 1.0)]}
    assert baseline_detections(durations, 2.0, "centre_span", {"a": 0.3, "b": 0.6}) == {
        "a": [(2.0, 4.0, 0.3)], "b": [(0.5, 2.5, 0.6)]}
    rng = np.random.default_rng(0)
    starts = [baseline_detections(durations, 2.0, "random_span", generator=rng)["a"][0][0] for _ in range(200)]
    assert min(starts) >= 0 and max(starts) <= 4.0 and np.std(starts) > 0.8  # uniform on [0, 4]: std 1.15
    assert baseline_detections({"c": 1.0}, 2.0, "random_span", generator=rng)["c"] == [(0.0, 1.0, 1.0)]
    with pytest.raises(ValueError, match="generator"):
        baseline_detections(durations, 2.0, "random_span")


def test_detect_batch_class_curves_read_the_predicted_class_and_fold():
    att = {"att_v": torch.ones(2, 4), "att_a": torch.ones(2, 4)}  # flat attention: no temporal preference
    times = torch.tensor(_times(4, 1.0), dtype=torch.float32).expand(2, 4, 2)
    scores = torch.zeros(2, 4, 3)
    scores[0, 1, 2] = 5.0  # video a: class 2 lives in segment 1
    scores[0, 3, 0] = 5.0  # another class elsewhere, not the predicted one
    scores[1, 3, 1] = 5.0  # video b: class 1 in segment 3, which lies past the 3 s clip (loop-padded)
    contributions = scores.flip(1)  # a different curve, read only by source 'tcam'
    curves = {**att, "seg_scores": scores, "seg_logits": contributions}
    logits = torch.tensor([[0.0, 0.0, 3.0], [0.0, 3.0, 0.0]])
    rule = dict(method="oic", oic=dict(upsample=1, nms_iou=0.0))
    dets = detect_batch(curves, times, ["a", "b"], logits, durations=[4.0, 3.0], **rule)
    assert max(dets["a"], key=lambda d: d[2])[:2] == (1.0, 2.0) and dets["a"][0][3] == 2
    assert max(dets["b"], key=lambda d: d[2])[:2] == (0.0, 1.0)  # 3-4 s of padded time is 0-1 s of the clip
    tcam = detect_batch(curves, times, ["a", "b"], logits, source="tcam", **rule)
    assert max(tcam["a"], key=lambda d: d[2])[:2] == (2.0, 3.0)  # segment 1 flipped is segment 2
    flat = detect_batch(att, times, ["a", "b"], logits, source="attention", **rule)
    assert [d[:2] for d in flat["a"]] == [(0.0, 4.0)]
    assert detect_batch(att, times, ["a", "b"], logits, **rule) == flat  # auto: attention without class curves
    with pytest.raises(ValueError, match="seg_logits"):
        detect_batch(att, times, ["a", "b"], logits, source="tcam")
    with pytest.raises(ValueError, match="unknown detection method"):
        detect_batch(att, times, ["a", "b"], logits, method="peaks")


def test_cten_segment_contributions_add_up_to_the_logits():
    from models.cten import CTEN
    torch.manual_seed(0)
    for attention in ("paper", "joint"):
        model = CTEN(5, 4, temporal_attention=attention, visual_depth=10, feature_dim=None).eval()
        out = model(visual_feats=torch.randn(2, 4, 512), audio=torch.randn(2, 4, 16, 16))
        assert out["seg_logits"].shape == out["seg_scores"].shape == (2, 4, 5)
        torch.testing.assert_close(out["seg_logits"].mean(dim=1) + model.classifier.bias, out["logits"])
        if attention == "joint":  # one attention: the contribution is the class score scaled by it
            torch.testing.assert_close(out["seg_logits"], out["seg_scores"] * out["att_v"][..., None])


def test_summarise_scores_baselines_with_the_same_map():
    from core.evaluate import summarise
    records = []
    for i, (peak, dur) in enumerate([(1, 4.0), (2, 4.0), (0, 4.0)]):
        seg_scores = np.zeros((4, 2), dtype=np.float32)
        seg_scores[peak, 0] = 4.0
        records.append({"video_id": f"v{i}", "label": 0, "probs": np.array([0.9, 0.1]), "duration": dur,
                        "seg_times": _times(4, 1.0), "att_v": np.ones(4), "seg_scores": seg_scores})
    gt = {f"v{i}": [[p, p + 1.0]] for i, p in enumerate([1, 2, 0])}
    out = summarise(records, ["x", "y"], torch.tensor([1.0, -1.0]), gt, curves=("att_v",),
                    det_rule=dict(method="oic", oic=dict(upsample=1, nms_iou=0.0)))
    assert out["detection"]["mAP@0.5"] == pytest.approx(1.0)
    base = out["detection_baselines"]
    assert base["span_length_s"] == pytest.approx(1.0)
    assert base["whole_clip"]["mAP@0.3"] == 0.0 and base["whole_clip"]["mAP@0.2"] == pytest.approx(1.0)  # IoU 0.25
    assert base["centre_span"]["mAP@0.5"] == 0.0  # [1.5, 2.5] against [1, 2], [2, 3], [0, 1]
    assert 0.0 < base["random_span"]["mAP@0.1"] < 1.0
    from core.evaluate import detection_lines
    lines = detection_lines(out)
    assert len(lines) == 4 and "model" in lines[0] and "mAP@0.5 1.000" in lines[0] and "whole_clip" in lines[1]
