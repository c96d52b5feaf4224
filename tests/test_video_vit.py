import math

import pytest
import torch
import torch.nn.functional as F

from models.video_vit import (IMAGENET_MEAN, IMAGENET_STD, QVBiasLinear, VideoViT, VideoViTConfig, cls_attention,
                              sinusoid_table)

TINY = VideoViTConfig(img_size=32, num_frames=4, dim=32, depth=2, num_heads=4)


def tiny_video(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, TINY.num_frames, TINY.img_size, TINY.img_size), generator=g, dtype=torch.uint8)


def test_full_size_tokens_on_meta():
    with torch.device("meta"):
        vit = VideoViT()
        tokens = vit.embed(torch.zeros(2, 3, 16, 112, 112, dtype=torch.uint8))
    assert vit.cfg.grid == (8, 7, 7) and vit.num_patches == 392
    assert tokens.shape == (2, 393, 768)
    assert len(vit.blocks) == 12 and vit.blocks[0].mlp.fc1.out_features == 3072
    assert vit.blocks[0].attn.num_heads == 12


def test_sinusoid_table_formula():
    n, d = 5, 6
    table = sinusoid_table(n, d)
    for p in range(n):
        for j in range(d):
            angle = p / 10000 ** (2 * (j // 2) / d)
            want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[p, j].item() == pytest.approx(want, abs=1e-6)


def test_positions_are_fixed_buffers_not_in_state_dict():
    vit = VideoViT(TINY)
    names = set(vit.state_dict())
    assert not {"pos_embed", "mean", "std"} & names
    assert "pos_embed" not in dict(vit.named_parameters())
    assert {"cls_token", "mask_token", "fc_norm.weight"} <= names
    assert {"blocks.0.attn.qkv.q_bias", "blocks.0.attn.qkv.v_bias"} <= names
    assert "blocks.0.attn.qkv.bias" not in names


def test_qv_bias_linear_has_zero_k_bias():
    lin = QVBiasLinear(8, 8)
    with torch.no_grad():
        lin.weight.normal_()
        lin.q_bias.normal_()
        lin.v_bias.normal_()
    x = torch.randn(3, 8)
    out = lin(x)
    ref = x @ lin.weight.T + torch.cat([lin.q_bias, torch.zeros(8), lin.v_bias])
    torch.testing.assert_close(out, ref)
    assert {n for n, _ in lin.named_parameters()} == {"weight", "q_bias", "v_bias"}
    out.sum().backward()
    torch.testing.assert_close(lin.q_bias.grad, torch.full((8,), 3.0))


@pytest.mark.parametrize("cls_position", ["first", "none"])
def test_embed_normalises_masks_then_adds_positions(cls_position):
    cfg = VideoViTConfig(img_size=32, num_frames=4, dim=32, depth=1, num_heads=4, cls_position=cls_position)
    vit = VideoViT(cfg).eval()
    video = tiny_video()
    mask = torch.zeros(2, vit.num_patches, dtype=torch.bool)
    mask[0, [1, 5]] = True
    tokens = vit.embed(video, mask)

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    x = (video.float() / 255 - mean) / std
    patches = F.conv3d(x, vit.patch_embed.proj.weight, vit.patch_embed.proj.bias, stride=(2, 16, 16))
    patches = patches.flatten(2).transpose(1, 2)  # (2, P, D)
    patches[0, [1, 5]] = vit.mask_token[0, 0]
    n = vit.num_patches
    table = sinusoid_table(n + 1 if cls_position == "first" else n, cfg.dim)
    if cls_position == "first":
        want_cls, want_patches = vit.cls_token[0, 0] + table[0], patches + table[1:]
    else:
        want_cls, want_patches = vit.cls_token[0, 0], patches + table
    torch.testing.assert_close(tokens[:, 0], want_cls.expand(2, -1))
    torch.testing.assert_close(tokens[:, 1:], want_patches)


def test_embed_rejects_wrong_mask_shape():
    vit = VideoViT(TINY)
    with pytest.raises(ValueError, match="mask"):
        vit.embed(tiny_video(), torch.zeros(2, 3, dtype=torch.bool))


def test_bad_config_raises():
    with pytest.raises(ValueError, match="cls_position"):
        VideoViT(VideoViTConfig(dim=32, depth=1, num_heads=4, cls_position="last"))
    with pytest.raises(ValueError, match="multiples"):
        VideoViT(VideoViTConfig(img_size=40, dim=32, depth=1, num_heads=4))


def test_cls_attention_matches_block_attention():
    torch.manual_seed(0)
    vit = VideoViT(TINY).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.3)
    blk = vit.blocks[0]
    x = torch.randn(2, 9, TINY.dim)
    probs = cls_attention(blk, x)  # (2, H, 9)
    assert probs.shape == (2, 4, 9)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4))

    attn = blk.attn
    h = blk.norm1(x)
    v = attn.qkv(h).unflatten(-1, (3, 4, 8))[:, :, 2].transpose(1, 2)  # (2, H, 9, d)
    cls_out = (probs.unsqueeze(2) @ v).squeeze(2).flatten(1)  # (2, D)
    torch.testing.assert_close(attn.proj(cls_out), attn(h)[:, 0], atol=1e-5, rtol=1e-5)


def test_forward_returns_cls_feature_per_clip():
    vit = VideoViT(TINY).eval()
    video = tiny_video()
    out = vit(video)
    assert out.shape == (2, TINY.dim)
    torch.testing.assert_close(out[1:], vit(video[1:]), atol=1e-5, rtol=1e-5)
