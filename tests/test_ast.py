import pytest
import torch

from models.ast import AST, ASTConfig

TINY = ASTConfig(dim=32, depth=2, num_heads=4)


def test_full_size_tokens_on_meta():
    with torch.device("meta"):
        ast = AST()
        tokens = ast.embed(torch.zeros(3, 100, 128))
    assert ast.cfg.grid == (12, 9) and ast.num_patches == 108
    assert tokens.shape == (3, 110, 768)
    assert ast.pos_embed.shape == (1, 110, 768)
    assert ast.patch_embed.proj.weight.shape == (768, 1, 16, 16)
    assert ast.patch_embed.proj.stride == (10, 10)
    assert len(ast.blocks) == 12 and ast.blocks[0].attn.qkv.bias.shape == (2304,)


def test_patches_are_frequency_major_over_overlapping_windows():
    torch.manual_seed(0)
    ast = AST(TINY)
    fbank = torch.randn(2, 100, 128)  # (N, time, mel)
    tokens = ast.patch_embed(fbank)  # (N, 108, D)
    image = fbank.transpose(1, 2)  # (N, mel, time)
    w, b = ast.patch_embed.proj.weight[:, 0], ast.patch_embed.proj.bias
    for f, t in [(0, 0), (3, 5), (11, 8)]:
        window = image[:, 10 * f:10 * f + 16, 10 * t:10 * t + 16]  # (N, 16, 16)
        want = torch.einsum("nij,dij->nd", window, w) + b
        torch.testing.assert_close(tokens[:, f * 9 + t], want, atol=1e-4, rtol=1e-4)


def test_embed_prepends_cls_and_distillation_with_positions():
    ast = AST(TINY)
    fbank = torch.randn(2, 100, 128)
    tokens = ast.embed(fbank)
    pos = ast.pos_embed[0]
    torch.testing.assert_close(tokens[:, 0], (ast.cls_token[0, 0] + pos[0]).expand(2, -1))
    torch.testing.assert_close(tokens[:, 1], (ast.dist_token[0, 0] + pos[1]).expand(2, -1))
    torch.testing.assert_close(tokens[:, 2:], ast.patch_embed(fbank) + pos[2:])


def test_forward_is_mean_of_normalised_cls_and_distillation():
    ast = AST(TINY).eval()
    fbank = torch.randn(2, 100, 128)
    x = ast.embed(fbank)
    for blk in ast.blocks:
        x = blk(x)
    x = ast.norm(x)
    torch.testing.assert_close(ast(fbank), (x[:, 0] + x[:, 1]) / 2)


def test_wrong_segment_shape_raises():
    ast = AST(TINY)
    with pytest.raises(ValueError, match=r"\(100, 128\)"):
        ast.embed(torch.randn(2, 128, 100))
    with pytest.raises(ValueError, match="smaller than one"):
        AST(ASTConfig(n_frames=8, dim=32, depth=1, num_heads=4))


def test_whole_spectrum_patches_are_time_slices():
    cfg = ASTConfig(dim=16, depth=1, num_heads=2, patch_freq=128)
    assert cfg.grid == (1, 9) and cfg.num_patches == 9
    model = AST(cfg).eval()
    fbank = torch.randn(2, 100, 128)
    with torch.no_grad():
        tokens = model.patch_embed(fbank)  # (2, 9, 16)
        changed = fbank.clone()
        changed[:, 95:, :] += 1.0  # the last 5 frames: only the last window (frames 80-95) sees them
        moved = (model.patch_embed(changed) - tokens).abs().sum(-1)
    assert tokens.shape == (2, 9, 16)
    assert moved[:, :8].max() < 1e-6
    assert (moved[:, 8] > 0).all()


def test_input_renormalisation():
    plain = AST(TINY).eval()
    torch.manual_seed(0)
    renorm = AST(ASTConfig(dim=32, depth=2, num_heads=4, input_mean=0.3, input_std=0.5)).eval()
    renorm.load_state_dict(plain.state_dict())
    fbank = torch.randn(2, 100, 128)
    with torch.no_grad():
        torch.testing.assert_close(renorm.embed(fbank), plain.embed((fbank - 0.3) / 0.5))
