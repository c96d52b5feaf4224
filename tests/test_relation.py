import pytest
import torch

from models.relation import CrossModalAttention, InterModalRelation, NonLocalBlock, TemporalAttention, attention_pool

B, T, D = 3, 5, 16


def feats(seed=0, b=B, t=T, d=D):
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("train", [True, False])
def test_nonlocal_is_identity_at_init(train):
    torch.manual_seed(0)
    block = NonLocalBlock(D, inner=8).train(train)
    f = feats()
    torch.testing.assert_close(block(f), f)


def test_nonlocal_mixes_segments_once_wz_is_learnt():
    torch.manual_seed(0)
    block = NonLocalBlock(D, inner=8).eval()
    torch.nn.init.ones_(block.bn.weight)
    f = feats()
    g = f.clone()
    g[:, 0] += 1.0
    out_f, out_g = block(f), block(g)
    assert not torch.allclose(out_f[:, 3], out_g[:, 3])  # segment 3 sees segment 0
    manual = f + block.bn(block.out(torch.softmax(block.theta(f) @ block.phi(f).transpose(1, 2) / 8 ** 0.5, -1)
                                    @ block.g(f)).reshape(-1, D)).view(B, T, D)
    torch.testing.assert_close(out_f, manual)


def test_nonlocal_official_init_has_no_identity_path():
    torch.manual_seed(0)
    block = NonLocalBlock(D, inner=8, init="official").eval()
    f = feats()
    assert block.alpha.item() == 0.0
    out = block(f)
    assert not torch.allclose(out, f)
    z = torch.softmax(block.theta(f) @ block.phi(f).transpose(1, 2) / 8 ** 0.5, -1) @ block.g(f)
    torch.testing.assert_close(out, block.bn(block.out(z).reshape(-1, D)).view(B, T, D))
    out.sum().backward()
    assert block.alpha.grad is not None


def test_nonlocal_rejects_unknown_init():
    with pytest.raises(ValueError, match="zero"):
        NonLocalBlock(D, init="zero")


def test_cross_attention_matches_per_head_computation():
    torch.manual_seed(0)
    attn = CrossModalAttention(D, heads=4)
    q_in, ctx = feats(1, t=3), feats(2, t=T)
    relu = torch.relu
    q, k, v = relu(attn.q(q_in)), relu(attn.k(ctx)), relu(attn.v(ctx))
    heads = []
    for h in range(4):
        sl = slice(h * 4, (h + 1) * 4)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0, dim=-1)  # sqrt(D / heads) = 2
        heads.append(w @ v[..., sl])
    expected = relu(attn.o(torch.cat(heads, dim=-1)))
    out = attn(q_in, ctx)
    assert out.shape == (B, 3, D)
    torch.testing.assert_close(out, expected)


def test_cross_attention_needs_divisible_width():
    with pytest.raises(ValueError, match="divisible"):
        CrossModalAttention(10, heads=8)


def test_inter_modal_semantics_follow_the_release():
    """F''_v = F'_v + MHA(q=F'_a, kv=F'_v): audio segment t only chooses how visual segments mix into visual slot t."""
    torch.manual_seed(0)
    inter = InterModalRelation(D, heads=8)
    fv, fa = feats(1), feats(2)
    fv2, fa2 = inter(fv, fa)
    assert fv2.shape == fa2.shape == (B, T, D)
    torch.testing.assert_close(fv2, fv + inter.to_visual(fa, fv))
    torch.testing.assert_close(fa2, fa + inter.to_audio(fv, fa))
    fa_moved = fa.clone()
    fa_moved[:, 2] += 3.0
    fv2_moved, _ = inter(fv, fa_moved)
    changed = (fv2_moved - fv2).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [False, False, True, False, False]


def test_temporal_attention_paper_form():
    torch.manual_seed(0)
    att = TemporalAttention(D, T)
    x = feats()
    a = att(x)
    assert a.shape == (B, T) and (a >= 0).all()
    expected = torch.relu(att.w1((x @ att.w2.weight.t()).squeeze(-1)))  # ReLU(W1 (W2 X^T)^T)
    torch.testing.assert_close(a, expected)
    assert att.w2.bias is None and att.bn is None


def test_temporal_attention_official_form_squashes_scores():
    torch.manual_seed(0)
    att = TemporalAttention(D, T, squash=True).train()
    x = feats() * 100
    scores = torch.tanh(att.bn(att.w2(x).transpose(1, 2))).squeeze(1)
    assert scores.abs().max() <= 1
    torch.testing.assert_close(att(x), torch.relu(att.w1(scores)))


@pytest.mark.parametrize("squash", [False, True])
def test_temporal_attention_identity_w1_follows_content_not_position(squash):
    """W1 = I: permuting the segments permutes the attention (no position prior at init); the default W1 mixes."""
    torch.manual_seed(0)
    x, perm = feats(), torch.randperm(T, generator=torch.Generator().manual_seed(1))
    ident = TemporalAttention(D, T, squash=squash, w1_init="identity").eval()
    torch.testing.assert_close(ident(x[:, perm]), ident(x)[:, perm])
    w2 = ident.w2(x).squeeze(-1)  # (B, T)
    torch.testing.assert_close(ident(x), torch.relu(torch.tanh(ident.bn(w2[:, None]))[:, 0] if squash else w2))
    mixed = TemporalAttention(D, T, squash=squash).eval()
    assert not torch.allclose(mixed(x[:, perm]), mixed(x)[:, perm])
    with pytest.raises(ValueError, match="W1 init"):
        TemporalAttention(D, T, w1_init="zeros")


def test_attention_pool_is_mean_of_weighted_segments():
    f = feats()
    a = torch.rand(B, T)
    torch.testing.assert_close(attention_pool(f, a), sum(a[:, t, None] * f[:, t] for t in range(T)) / T)


def test_inter_modal_paper_direction_lets_each_stream_query_the_other():
    """Eq. 5's symbols, U_v = S(Q_v, K_a) V_a: visual slot t gathers audio features, chosen by visual segment t."""
    torch.manual_seed(0)
    inter = InterModalRelation(D, heads=8, direction="paper")
    fv, fa = feats(1), feats(2)
    fv2, fa2 = inter(fv, fa)
    torch.testing.assert_close(fv2, fv + inter.to_visual(fv, fa))
    torch.testing.assert_close(fa2, fa + inter.to_audio(fa, fv))
    fv_moved = fv.clone()
    fv_moved[:, 2] += 3.0
    fv2_moved, _ = inter(fv_moved, fa)
    mixed = (fv2_moved - fv_moved - (fv2 - fv)).abs().amax(dim=(0, 2)) > 1e-6  # the attention term alone
    assert mixed.tolist() == [False, False, True, False, False]  # a visual segment only changes its own query
    official = InterModalRelation(D, heads=8)
    official.load_state_dict(inter.state_dict())
    assert not torch.allclose(official(fv, fa)[0], fv2)
    with pytest.raises(ValueError, match="direction"):
        InterModalRelation(D, direction="both")


def test_temporal_attention_refuses_another_number_of_segments():
    att = TemporalAttention(D, T)
    with pytest.raises(ValueError, match="--eval-seq-len must equal --seq-len"):
        att(torch.randn(B, T + 2, D))
