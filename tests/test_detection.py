import numpy as np
import pytest
import torch

from core.detection import combine_attention, detect_batch, minmax_normalise, segments_from_attention
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
    dets = detect_batch({"att_v": att_v, "att_a": att_a}, times, ["a", "b"], logits)
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
    plain = detect_batch({"att_v": att_v}, times, ["a", "b"], logits, combine="visual", use_class_prob=False)
    assert plain["b"][0][2] == pytest.approx(0.95)
    with pytest.raises(ValueError, match=r"\(B, C\) with B = 3"):
        detect_batch({"att_v": att_v}, times, ["a", "b", "c"], logits)
