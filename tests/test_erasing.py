import pytest
import torch

from datasets.frames import erased_view_frames
from models.erasing import erasing_masks, minmax_normalize, reuse_view, view_stats


def test_minmax_normalises_each_row_over_time():
    att = torch.tensor([[1.0, 3.0, 2.0, 5.0], [0.0, 0.0, 4.0, 2.0]])
    torch.testing.assert_close(minmax_normalize(att), torch.tensor([[0.0, 0.5, 0.25, 1.0], [0.0, 0.0, 1.0, 0.5]]))


def test_minmax_of_constant_attention_is_all_ones_not_nan():
    att = torch.tensor([[0.0, 0.0, 0.0], [2.5, 2.5, 2.5], [1e-30, 1e-30, 1e-30]])
    out = minmax_normalize(att)
    assert torch.equal(out, torch.ones(3, 3))


def test_paper_rule_needs_both_modalities_above_theta_with_ties_included():
    att_v = torch.tensor([[0.0, 1.0, 2.0, 2.0, 1.5]])  # normalised: 0, .5, 1, 1, .75
    att_a = torch.tensor([[4.0, 4.0, 0.0, 4.0, 2.0]])  # normalised: 1, 1, 0, 1, .5
    key, context = erasing_masks([att_v, att_a], theta=0.5, rule="paper")
    assert key.tolist() == [[False, True, False, True, True]]
    assert context.tolist() == [[True, False, True, False, False]]
    key_v, _ = erasing_masks([att_v], theta=0.5, rule="paper")
    assert key_v.tolist() == [[False, True, True, True, True]]


def test_paper_rule_default_theta_and_constant_attention():
    att = torch.tensor([[0.0, 0.69, 0.7, 1.0], [3.0, 3.0, 3.0, 3.0]])
    key, context = erasing_masks([att], rule="paper")
    assert key.tolist() == [[False, False, True, True], [True] * 4]
    assert context.tolist() == [[True, True, False, False], [False] * 4]  # empty context: the view falls back


def test_joint_rule_renormalises_the_per_segment_minimum():
    att_v = torch.tensor([[0.0, 1.0, 2.0, 2.0, 1.5]])  # normalised: 0, .5, 1, 1, .75
    att_a = torch.tensor([[8.0, 8.0, 0.0, 4.0, 5.0]])  # normalised: 1, 1, 0, .5, .625
    # minimum 0, .5, 0, .5, .625 -> renormalised 0, .8, 0, .8, 1
    key, context = erasing_masks([att_v, att_a], theta=0.7)
    assert key.tolist() == [[False, True, False, True, True]] and torch.equal(context, ~key)
    paper_key, _ = erasing_masks([att_v, att_a], theta=0.7, rule="paper")
    assert not paper_key.any()  # the literal rule finds no keyframe in the same video
    key, _ = erasing_masks([att_v, att_a], theta=0.9)
    assert key.tolist() == [[False, False, False, False, True]]


def test_joint_rule_never_leaves_a_view_empty_on_random_curves():
    g = torch.Generator().manual_seed(0)
    for T in (2, 3, 6, 16):
        atts = [torch.randn(2000, T, generator=g).relu() for _ in range(2)]  # exact zeros, like a dead ReLU
        for theta in (0.05, 0.7, 1.0):
            key, context = erasing_masks(atts, theta=theta, generator=g)
            assert key.any(dim=1).all() and context.any(dim=1).all(), (T, theta)
        paper_key, _ = erasing_masks(atts, theta=0.7, rule="paper")
        assert T < 6 or (~paper_key.any(dim=1)).float().mean() > 0.5  # what the default avoids


def test_joint_rule_draws_one_keyframe_when_there_is_no_temporal_preference():
    flat = [torch.zeros(400, 6), torch.full((400, 6), 2.0)]
    key, context = erasing_masks(flat, generator=torch.Generator().manual_seed(0))
    assert key.sum(dim=1).eq(1).all() and torch.equal(context, ~key)
    assert set(key.float().argmax(dim=1).tolist()) == set(range(6))  # uniform draw, not always the first segment
    again, _ = erasing_masks(flat, generator=torch.Generator().manual_seed(0))
    assert torch.equal(key, again)
    one_flat = [torch.zeros(1, 4), torch.tensor([[0.0, 3.0, 1.0, 0.5]])]  # a dead modality defers to the other
    key, _ = erasing_masks(one_flat)
    assert key.tolist() == [[False, True, False, False]]


def test_view_stats_count_empty_views_per_video():
    key = torch.tensor([[True, False], [False, False], [True, True], [False, True]])
    context = torch.tensor([[False, True], [True, True], [False, False], [True, False]])
    assert view_stats(key, context) == {"empty_key_views": 0.25, "empty_context_views": 0.25,
                                        "keyframe_fraction": 0.5}


def test_official_rule_thresholds_raw_attention_and_leaves_ties_out():
    att = torch.tensor([[10.0, 3.0, 7.9, 8.0, 0.0]])  # 0.7 * 10 + 0.3 * 0 = 7
    key, context = erasing_masks([att], rule="official")
    assert key.tolist() == [[True, False, True, True, False]]
    assert context.tolist() == [[False, True, False, False, True]]
    att = torch.tensor([[2.0, 1.0, 1.6, 1.3]])  # threshold 0.7 * 2 + 0.3 * 1 = 1.7
    key, context = erasing_masks([att], rule="official")
    assert key.tolist() == [[True, False, False, False]] and context.tolist() == [[False, True, True, True]]
    tie = torch.tensor([[0.0, 7.0, 10.0]])
    key, context = erasing_masks([tie], rule="official")
    assert key.tolist() == [[False, False, True]] and context.tolist() == [[True, False, False]]
    flat = torch.full((1, 4), 0.5)
    key, context = erasing_masks([flat], rule="official")
    assert not key.any() and not context.any()


def test_erasing_masks_reject_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        erasing_masks([])
    with pytest.raises(ValueError, match="rule"):
        erasing_masks([torch.rand(1, 3)], rule="max")


def bounds(n_segments, length, start=0):
    s = torch.arange(n_segments) * length + start
    return torch.stack([s, s + length], dim=1)


def test_view_covers_exactly_the_kept_frames_in_time_order():
    seg = bounds(4, 8)  # [0, 8), [8, 16), [16, 24), [24, 32)
    keep = torch.tensor([True, False, True, False])
    out = erased_view_frames(seg, keep, n_frames=32, seq_len=4, snippet_duration=4, training=False)
    expected = torch.cat([torch.arange(0, 8), torch.arange(16, 24)]).view(4, 4)
    assert torch.equal(out, expected)
    out = erased_view_frames(seg, keep, n_frames=32, seq_len=4, snippet_duration=4, training=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, expected)


def test_eval_view_takes_the_centre_of_each_part():
    seg = bounds(2, 20)
    out = erased_view_frames(seg, torch.tensor([False, True]), n_frames=40, seq_len=2, snippet_duration=4, training=False)
    assert torch.equal(out, torch.tensor([[23, 24, 25, 26], [33, 34, 35, 36]]))  # parts [20, 30), [30, 40)


def test_training_view_draws_inside_each_part_reproducibly():
    seg = bounds(6, 30)
    keep = torch.tensor([False, True, True, False, True, False])
    kept = set(range(30, 90)) | set(range(120, 150))
    draws = []
    for seed in (0, 0, 1, 2):
        out = erased_view_frames(seg, keep, 180, seq_len=5, snippet_duration=6, training=True, generator=torch.Generator().manual_seed(seed))
        assert out.shape == (5, 6) and set(out.flatten().tolist()) <= kept
        kept_list = sorted(kept)
        for i, row in enumerate(out.tolist()):
            pos = [kept_list.index(f) for f in row]
            assert pos == list(range(pos[0], pos[0] + 6))  # consecutive kept frames
            assert i * 18 <= pos[0] and pos[-1] < (i + 1) * 18  # inside part i of 90 / 5 = 18
        draws.append(out)
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2]) or not torch.equal(draws[0], draws[3])


def test_short_view_is_loop_padded_and_padded_indices_wrap():
    seg = torch.tensor([[0, 3], [3, 6], [6, 9], [9, 12]])
    out = erased_view_frames(seg, torch.tensor([False, False, False, True]), n_frames=10, seq_len=3, snippet_duration=4, training=False)
    # kept padded indices 9, 10, 11 -> frames 9, 0, 1; looped to 12 frames, split into 3 parts of 4
    assert torch.equal(out, torch.tensor([[9, 0, 1, 9], [0, 1, 9, 0], [1, 9, 0, 1]]))


def test_empty_view_falls_back_to_the_whole_video():
    seg = bounds(4, 8)
    whole = erased_view_frames(seg, torch.ones(4, dtype=torch.bool), 32, seq_len=4, snippet_duration=8, training=False)
    empty = erased_view_frames(seg, torch.zeros(4, dtype=torch.bool), 32, seq_len=4, snippet_duration=8, training=False)
    assert torch.equal(empty, whole) and torch.equal(whole, torch.arange(32).view(4, 8))


def test_view_of_empty_segments_raises():
    with pytest.raises(ValueError, match="no frames"):
        erased_view_frames(torch.tensor([[3, 3], [5, 5]]), torch.tensor([True, True]), 10, seq_len=2, snippet_duration=2, training=False)


def test_batched_views_match_single_views():
    seg = torch.stack([bounds(4, 8), bounds(4, 5)])
    keep = torch.tensor([[True, False, False, True], [False, True, True, True]])
    n_frames = torch.tensor([32, 17])
    out = torch.stack([erased_view_frames(sb, k, int(n), 4, 3, False) for sb, k, n in zip(seg, keep, n_frames)])
    assert out.shape == (2, 4, 3)
    for b in range(2):
        assert torch.equal(out[b], erased_view_frames(seg[b], keep[b], int(n_frames[b]), 4, 3, False))
    assert out[1].max() < 17


def test_reuse_view_stretches_kept_segments_by_nearest_index():
    keep = torch.tensor([[True, False, True, False],
                         [True, True, True, True],
                         [False, False, False, False],
                         [False, False, True, False],
                         [False, True, True, True]])
    assert reuse_view(keep).tolist() == [[0, 0, 2, 2], [0, 1, 2, 3], [0, 1, 2, 3], [2, 2, 2, 2], [1, 2, 2, 3]]
