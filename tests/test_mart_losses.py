import math

import pytest
import torch

from core.methods.mart import (blend_targets, degree_kl, distillation_kl, info_nce, push_loss, reconstruction_loss,
                               temporal_degree, verify_cues)


def _cues():
    """One positive-label video (b=0) and one negative-label video (b=1), four segments each, three classes
    (0 positive, 1 and 2 negative)."""
    sentiment = torch.tensor([[0.5, -0.5, 0.0, 1.0],
                              [-0.2, -1.0, 0.3, 0.0]])
    emotion = torch.tensor([[[1., 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]],
                            [[0, 1, 0], [0, 0.5, 0.5], [0, 1, 0], [0, 0, 0]]])
    has_cue = torch.tensor([[True, True, True, True], [True, True, True, False]])
    probs = torch.tensor([[[0.8, 0.1, 0.1]] * 3 + [[0.95, 0.03, 0.02]],
                          [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3]]])
    polarity = torch.tensor([1, -1])
    return sentiment, emotion, has_cue, polarity, probs


def test_verification_levels():
    sentiment, emotion, has_cue, polarity, probs = _cues()
    verified, counts = verify_cues(sentiment, emotion, has_cue, polarity, probs, 0.0, 0.1)
    # b0: t0 agrees and matches; t1 wrong sign; t2 no polarity; t3 agrees but the model sees class 0, not 1
    # b1: t0 agrees and matches; t1 agrees, match 0.45; t2 wrong sign; t3 no cue
    assert verified.tolist() == [[True, False, False, False], [True, True, False, False]]
    assert counts == {"cues": 7, "verified": 3, "rejected_sentiment": 3, "rejected_emotion": 1}


def test_verification_thresholds():
    sentiment, emotion, has_cue, polarity, probs = _cues()
    verified, counts = verify_cues(sentiment, emotion, has_cue, polarity, probs, sentiment_threshold=0.6,
                                   match_threshold=0.5)
    # |0.5| and |-0.2| fall below 0.6; b1 t1 has match 0.45 < 0.5; b0 t3 still fails the match
    assert verified.tolist() == [[False] * 4, [False] * 4]
    assert counts == {"cues": 7, "verified": 0, "rejected_sentiment": 5, "rejected_emotion": 2}


def test_blend_and_temporal_degree():
    probs = torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]])
    cue = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    verified = torch.tensor([[True, False, True]])
    target = blend_targets(probs, cue, verified, blend=0.5)
    assert torch.allclose(target, torch.tensor([[[0.75, 0.25], [0.9, 0.1], [0.6, 0.4]]]))
    degree = temporal_degree(target, torch.tensor([0]))
    assert torch.allclose(degree, torch.tensor([[0.75, 0.9, 0.6]]) / 2.25)
    assert torch.allclose(blend_targets(probs, cue, verified, blend=0.0), probs)


def test_distillation_kl_zero_iff_equal():
    logits = torch.randn(2, 3, 5)
    assert distillation_kl(logits.softmax(-1), logits).abs() < 1e-6
    assert distillation_kl(torch.randn(2, 3, 5).softmax(-1), logits) > 1e-3
    one_hot = torch.zeros(2, 3, 5)
    one_hot[..., 1] = 1
    assert torch.allclose(distillation_kl(one_hot, logits), -logits.log_softmax(-1)[..., 1].mean())


def test_degree_kl_zero_iff_degrees_match():
    logits = torch.randn(2, 4, 3)
    labels = torch.tensor([2, 0])
    same = temporal_degree(logits.softmax(-1), labels)
    assert degree_kl(same, logits, labels).abs() < 1e-6
    other = temporal_degree(torch.randn(2, 4, 3).softmax(-1), labels)
    assert degree_kl(other, logits, labels) > 1e-4


def test_info_nce_prefers_aligned_pairs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 32, generator=g)
    aligned = x + 0.1 * torch.randn(16, 32, generator=g)
    shuffled = aligned[torch.roll(torch.arange(16), 1)]
    low, high = info_nce(x, aligned, 0.1), info_nce(x, shuffled, 0.1)
    assert low < math.log(16) < high
    assert low < 0.1
    assert info_nce(x[:1], aligned[:1], 0.1).abs() < 1e-6  # a single pair has no negative


def test_info_nce_gradient_pulls_pairs_together():
    x = torch.randn(8, 16)
    y = torch.randn(8, 16, requires_grad=True)
    info_nce(x, y, 0.5).backward()
    with torch.no_grad():
        before = torch.nn.functional.cosine_similarity(x, y).mean()
        after = torch.nn.functional.cosine_similarity(x, y - 0.5 * y.grad).mean()
    assert after > before


def test_push_loss_margin():
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # cosine 1, 0, -1
    assert push_loss(v, a, 0.0) == pytest.approx(1 / 3)
    assert push_loss(v, a, 0.5) == pytest.approx(0.5 / 3)
    assert push_loss(v, a, -0.5) == pytest.approx((1.5 + 0.5) / 3)


def test_reconstruction_loss_counts_masked_tokens_only():
    target = torch.zeros(1, 2, 3, 4)
    pred = torch.zeros(1, 2, 3, 4)
    pred[0, 0, 0] = 2.0  # masked token, squared error 4
    pred[0, 1, 2] = 100.0  # visible token: ignored
    mask = torch.tensor([[[True, True, False], [False, False, False]]])
    assert reconstruction_loss(pred, target, mask) == pytest.approx(2.0)
    assert reconstruction_loss(pred, target, torch.zeros_like(mask)) == 0.0
