import pytest
import torch

from models.mart import attention_mask, guided_attention, mask_counts, mask_ratio, patchify_tubelets, tubelet_targets
from models.video_vit import TubeletEmbed


def test_mask_ratio_schedule():
    assert mask_ratio(0, 100) == pytest.approx(0.1)
    assert mask_ratio(25, 100) == pytest.approx(0.3)
    assert mask_ratio(50, 100) == pytest.approx(0.5)
    assert mask_ratio(99, 100) == pytest.approx(0.5)
    assert mask_ratio(3, 4) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mask_ratio(0, 0)


def test_mask_counts():
    assert mask_counts(392, 0.5) == (196, 19, 39)
    assert mask_counts(392, 0.1) == (39, 3, 39)
    assert mask_counts(100, 0.29) == (29, 2, 10)  # no float truncation to 28
    assert mask_counts(8, 0.1) == (0, 0, 0)
    assert mask_counts(20, 0.5, hint_ratio=0.5, hint_pool=0.1) == (10, 2, 2)  # hints capped by the pool


@pytest.mark.parametrize("n,ratio", [(392, 0.5), (392, 0.1), (49, 0.3)])
def test_attention_mask_counts_and_choice(n, ratio):
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(3, 4, n, generator=g)
    mask = attention_mask(attn, ratio, no_mask_prob=0.0, generator=g)
    n_top, n_hint, n_pool = mask_counts(n, ratio)
    assert mask.shape == attn.shape and mask.dtype == torch.bool
    assert (mask.sum(-1) == n_top - n_hint).all()
    order = attn.argsort(dim=-1, descending=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n).expand_as(order))  # 0 = most attended
    assert (rank[mask] < n_top).all()  # only top-attended tokens are masked
    revealed = (rank < n_top) & ~mask
    assert (rank[revealed] < n_pool).all()  # hints come from the most attended pool
    assert (revealed.sum(-1) == n_hint).all()


def test_attention_mask_without_hints_masks_exactly_the_top():
    attn = torch.tensor([[0.1, 0.9, 0.3, 0.7, 0.0, 0.5]])
    mask = attention_mask(attn, 0.5, hint_ratio=0.0, no_mask_prob=0.0)
    assert mask.tolist() == [[False, True, False, True, False, True]]


def test_attention_mask_no_mask_probability_is_seeded_and_per_segment():
    attn = torch.rand(400, 50)
    a = attention_mask(attn, 0.5, no_mask_prob=0.5, generator=torch.Generator().manual_seed(7))
    b = attention_mask(attn, 0.5, no_mask_prob=0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    per_row = a.sum(-1)
    n_top, n_hint, _ = mask_counts(50, 0.5)
    assert set(per_row.tolist()) == {0, n_top - n_hint}  # a segment is fully masked or not at all
    assert 0.4 < (per_row == 0).float().mean().item() < 0.6
    assert not attention_mask(attn, 0.5, no_mask_prob=1.0).any()


def test_guided_attention_mixes_renormalised_maps():
    cls_attn = torch.tensor([[0.2, 0.1, 0.1]])  # sums to 0.4: renormalised to 0.5, 0.25, 0.25
    text_attn = torch.tensor([[0.0, 0.0, 1.0]])
    assert torch.allclose(guided_attention(cls_attn, text_attn, 1.0), torch.tensor([[0.5, 0.25, 0.25]]))
    mixed = guided_attention(cls_attn, text_attn, 0.5)
    assert torch.allclose(mixed, torch.tensor([[0.25, 0.125, 0.625]]))
    assert torch.allclose(mixed.sum(-1), torch.ones(1))


def test_patchify_matches_the_vit_patch_embedding_order():
    tubelet, patch, C = 2, 4, 3
    embed = TubeletEmbed(tubelet * patch * patch * C, tubelet, patch)
    with torch.no_grad():  # output channel k copies pixel (frame, row, col, channel) of the tubelet
        embed.proj.weight.zero_()
        embed.proj.bias.zero_()
        k = 0
        for i in range(tubelet):
            for j in range(patch):
                for l in range(patch):
                    for c in range(C):
                        embed.proj.weight[k, c, i, j, l] = 1.0
                        k += 1
    video = torch.rand(2, 3, C, 4, 8, 12)  # (B, T, 3, L, H, W): 2 x 2 x 3 = 12 tokens
    tokens = embed(video.flatten(0, 1)).unflatten(0, (2, 3))  # (B, T, N, P * 3)
    patches = patchify_tubelets(video, tubelet, patch)
    assert patches.shape == (2, 3, 12, tubelet * patch * patch, C)
    assert torch.allclose(patches.flatten(-2), tokens, atol=1e-6)


def test_tubelet_targets_are_normalised_per_patch_and_channel():
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 118, (1, 2, 3, 4, 32, 32), dtype=torch.uint8, generator=g) * 2
    target = tubelet_targets(video, 2, 16)
    assert target.shape == (1, 2, 2 * 2 * 2, 2 * 16 * 16 * 3)
    per_channel = target.unflatten(-1, (-1, 3))  # (B, T, N, P, 3)
    assert torch.allclose(per_channel.mean(-2), torch.zeros(1), atol=1e-5)
    assert torch.allclose(per_channel.std(-2, unbiased=True), torch.ones(1), atol=1e-4)
    brighter = video // 2 + 20  # an exact affine change of brightness
    assert torch.allclose(tubelet_targets(brighter, 2, 16), target, atol=1e-3)
    flat = tubelet_targets(torch.full((1, 1, 3, 2, 16, 16), 77, dtype=torch.uint8), 2, 16)
    assert torch.isfinite(flat).all() and flat.abs().max() == 0
    with pytest.raises(ValueError, match="tubelets"):
        tubelet_targets(video[..., :30, :30], 2, 16)
