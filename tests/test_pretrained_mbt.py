"""VideoMAE / AST loaders on tiny random files written in the published key layouts."""
import pytest
import torch
import torch.nn.functional as F

from models.ast import AST, ASTConfig
from models.pretrained import CheckpointError, cut_ast_pos_embed, load_ast, load_videomae
from models.mbt import MBT
from models.video_vit import VideoViT, VideoViTConfig

D, DEPTH, HEADS = 32, 2, 4
VIDEO = VideoViTConfig(img_size=32, num_frames=4, dim=D, depth=DEPTH, num_heads=HEADS)
AUDIO = ASTConfig(dim=D, depth=DEPTH, num_heads=HEADS)


def rand(*shape):
    return torch.randn(*shape) * 0.2


def block_keys(prefix, dim, qv_bias):
    """One pre-norm ViT block as VideoMAE (q/v biases) or timm-0.4.5 DeiT (full qkv bias) names it."""
    keys = {f"{prefix}norm1.weight": 1 + rand(dim), f"{prefix}norm1.bias": rand(dim),
            f"{prefix}attn.qkv.weight": rand(3 * dim, dim),
            f"{prefix}attn.proj.weight": rand(dim, dim), f"{prefix}attn.proj.bias": rand(dim),
            f"{prefix}norm2.weight": 1 + rand(dim), f"{prefix}norm2.bias": rand(dim),
            f"{prefix}mlp.fc1.weight": rand(4 * dim, dim), f"{prefix}mlp.fc1.bias": rand(4 * dim),
            f"{prefix}mlp.fc2.weight": rand(dim, 4 * dim), f"{prefix}mlp.fc2.bias": rand(dim)}
    if qv_bias:
        keys.update({f"{prefix}attn.q_bias": rand(dim), f"{prefix}attn.v_bias": rand(dim)})
    else:
        keys[f"{prefix}attn.qkv.bias"] = rand(3 * dim)
    return keys


def videomae_state(pretraining, dim=D, dec_dim=16):
    """VideoMAE encoder keys; pre-training files prefix them `encoder.` and add the MAE decoder."""
    enc = {"patch_embed.proj.weight": rand(dim, 3, 2, 16, 16), "patch_embed.proj.bias": rand(dim)}
    for i in range(DEPTH):
        enc.update(block_keys(f"blocks.{i}.", dim, qv_bias=True))
    if not pretraining:
        return {**enc, "fc_norm.weight": 1 + rand(dim), "fc_norm.bias": rand(dim),
                "head.weight": rand(400, dim), "head.bias": rand(400)}
    enc.update({"norm.weight": 1 + rand(dim), "norm.bias": rand(dim)})
    state = {f"encoder.{k}": v for k, v in enc.items()}
    state.update(block_keys("decoder.blocks.0.", dec_dim, qv_bias=True))
    state.update({"decoder.norm.weight": rand(dec_dim), "decoder.norm.bias": rand(dec_dim),
                  "decoder.head.weight": rand(1536, dec_dim), "decoder.head.bias": rand(1536),
                  "encoder_to_decoder.weight": rand(dec_dim, dim), "mask_token": rand(1, 1, dec_dim)})
    return state


def ast_state(dim=D, n_pos=2 + 12 * 101):
    """The AudioSet AST file: a DataParallel state dict of ASTModel (`module.v.*` DeiT, `module.mlp_head.*`)."""
    v = {"cls_token": rand(1, 1, dim), "dist_token": rand(1, 1, dim), "pos_embed": rand(1, n_pos, dim),
         "patch_embed.proj.weight": rand(dim, 1, 16, 16), "patch_embed.proj.bias": rand(dim),
         "norm.weight": 1 + rand(dim), "norm.bias": rand(dim),
         "head.weight": rand(1000, dim), "head.bias": rand(1000),
         "head_dist.weight": rand(1000, dim), "head_dist.bias": rand(1000)}
    for i in range(DEPTH):
        v.update(block_keys(f"blocks.{i}.", dim, qv_bias=False))
    state = {f"module.v.{k}": t for k, t in v.items()}
    state.update({"module.mlp_head.0.weight": rand(dim), "module.mlp_head.0.bias": rand(dim),
                  "module.mlp_head.1.weight": rand(527, dim), "module.mlp_head.1.bias": rand(527)})
    return state


def reference_blocks(sd, prefix, x, qv_bias):
    """The published blocks computed directly from the file's tensors (explicit softmax attention)."""
    n, length, dim = x.shape
    hd = dim // HEADS
    for i in range(DEPTH):
        p = lambda name: sd[f"{prefix}blocks.{i}.{name}"]
        h = F.layer_norm(x, (dim,), p("norm1.weight"), p("norm1.bias"), 1e-6)
        bias = torch.cat([p("attn.q_bias"), torch.zeros(dim), p("attn.v_bias")]) if qv_bias else p("attn.qkv.bias")
        q, k, v = F.linear(h, p("attn.qkv.weight"), bias).reshape(n, length, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
        attn = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        x = x + F.linear((attn @ v).transpose(1, 2).reshape(n, length, dim), p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (dim,), p("norm2.weight"), p("norm2.bias"), 1e-6)
        h = F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias")))
        x = x + F.linear(h, p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    return x


def tiny_video(n=2):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 4, 32, 32), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("pretraining,container", [(True, "model"), (False, "module"), (False, None)])
def test_load_videomae_layouts_match_reference(tmp_path, pretraining, container):
    sd = videomae_state(pretraining)
    path = tmp_path / "videomae.pth"
    torch.save(sd if container is None else {container: sd, "epoch": 3}, path)
    vit = VideoViT(VIDEO).eval()
    report = load_videomae(path, vit)

    pre = "encoder." if pretraining else ""
    final_norm = f"{pre}norm" if pretraining else "fc_norm"
    assert report["kind"] == ("pretraining" if pretraining else "finetuned")
    assert report["kept_init"] == ["cls_token", "mask_token"]
    if pretraining:
        assert set(report["ignored"]) == {k for k in sd if not k.startswith("encoder.")}
    else:
        assert set(report["ignored"]) == {"head.weight", "head.bias"}
    torch.testing.assert_close(vit.blocks[1].attn.qkv.q_bias, sd[f"{pre}blocks.1.attn.q_bias"])
    torch.testing.assert_close(vit.blocks[1].attn.qkv.v_bias, sd[f"{pre}blocks.1.attn.v_bias"])
    torch.testing.assert_close(vit.fc_norm.weight, sd[f"{final_norm}.weight"])

    video = tiny_video()
    with torch.no_grad():
        tokens = vit.embed(video)
        mean, std = vit.mean, vit.std
        patches = F.conv3d((video.float() / 255 - mean) / std, sd[f"{pre}patch_embed.proj.weight"],
                           sd[f"{pre}patch_embed.proj.bias"], stride=(2, 16, 16)).flatten(2).transpose(1, 2)
        torch.testing.assert_close(tokens[:, 1:] - vit.pos_embed[:, 1:], patches, atol=1e-5, rtol=1e-5)
        ref = reference_blocks(sd, pre, tokens, qv_bias=True)[:, 0]
        ref = F.layer_norm(ref, (D,), sd[f"{final_norm}.weight"], sd[f"{final_norm}.bias"], 1e-6)
        torch.testing.assert_close(vit(video), ref, atol=1e-5, rtol=1e-5)


def test_load_ast_cuts_positions_and_matches_reference(tmp_path):
    sd = ast_state()
    grid = torch.arange(12)[:, None] * 1000 + torch.arange(101)[None]  # (f, t) -> f * 1000 + t
    sd["module.v.pos_embed"] = torch.cat([torch.full((2, D), -1.0), grid.reshape(-1, 1).float().expand(-1, D)])[None]
    sd["module.v.pos_embed"][0, 1] = -2.0
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(sd, path)
    ast = AST(AUDIO).eval()
    report = load_ast(path, ast)

    assert report["pos_grid"] == ((12, 101), (12, 9))
    assert set(report["ignored"]) == {k for k in sd if ".head" in k or "mlp_head" in k}
    pos = ast.pos_embed[0, :, 0]
    assert pos[0] == -1 and pos[1] == -2
    want = torch.tensor([f * 1000 + 46 + j for f in range(12) for j in range(9)], dtype=torch.float)
    torch.testing.assert_close(pos[2:], want)

    cut = sd["module.v.pos_embed"][:, [0, 1] + [2 + f * 101 + 46 + j for f in range(12) for j in range(9)]]
    fbank = torch.randn(2, 100, 128)
    with torch.no_grad():
        patches = F.conv2d(fbank.transpose(1, 2)[:, None], sd["module.v.patch_embed.proj.weight"],
                           sd["module.v.patch_embed.proj.bias"], stride=10).flatten(2).transpose(1, 2)
        lead = torch.cat([sd["module.v.cls_token"], sd["module.v.dist_token"]], 1).expand(2, -1, -1)
        x = reference_blocks(sd, "module.v.", torch.cat([lead, patches], 1) + cut, qv_bias=False)
        x = F.layer_norm(x, (D,), sd["module.v.norm.weight"], sd["module.v.norm.bias"], 1e-6)
        torch.testing.assert_close(ast(fbank), x[:, :2].mean(1), atol=1e-5, rtol=1e-5)


def test_cut_ast_pos_embed_interpolates_a_longer_grid():
    pos = torch.cat([torch.tensor([[[5.0], [6.0]]]), torch.full((1, 2 * 3, 1), 7.0)], dim=1)  # (1, 2 + 2 x 3, 1)
    out = cut_ast_pos_embed(pos, (2, 3), (1, 5))
    assert out.shape == (1, 2 + 5, 1)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([5.0, 6.0, 7, 7, 7, 7, 7]))


def mbt_expected(videomae_sd, ast_sd):
    """MBT state key -> file tensor, for every MBT entry a published file provides."""
    out = {}
    for k, t in videomae_sd.items():
        if k.startswith("encoder."):
            name = k[len("encoder."):]
            name = name.replace("attn.q_bias", "attn.qkv.q_bias").replace("attn.v_bias", "attn.qkv.v_bias")
            if name.startswith("norm."):
                name = "fc_" + name
            out["video." + name] = t
    for k, t in ast_sd.items():
        if k.startswith("module.v.") and ".head" not in k:
            out["audio." + k[len("module.v."):]] = t
    return out


def test_mbt_load_pretrained_fills_both_branches(tmp_path):
    vsd, asd = videomae_state(pretraining=True), ast_state()
    torch.save({"model": vsd}, tmp_path / "v.pth")
    torch.save(asd, tmp_path / "a.pth")
    model = MBT(5, VIDEO, AUDIO, n_bottleneck=4, fusion_layer=1)
    report = model.load_pretrained(videomae_path=tmp_path / "v.pth", ast_path=tmp_path / "a.pth")
    assert set(report) == {"video", "audio"}

    expected = mbt_expected(vsd, asd)
    state = model.state_dict()
    kept = set(state) - set(expected)
    assert kept == {"video.cls_token", "video.mask_token", "bottleneck", "head_v.weight", "head_v.bias",
                    "head_a.weight", "head_a.bias"}
    central = [0, 1] + [2 + f * 101 + 46 + j for f in range(12) for j in range(9)]
    expected["audio.pos_embed"] = expected["audio.pos_embed"][:, central]
    for k, t in expected.items():
        torch.testing.assert_close(state[k], t, msg=k)
    assert not model.load_pretrained()


def test_wrong_files_raise_checkpoint_error_naming_keys_and_file(tmp_path):
    vit = VideoViT(VIDEO)
    cases = {}
    sd = videomae_state(pretraining=True)
    del sd["encoder.blocks.1.mlp.fc2.bias"]
    cases["missing"] = ({"model": sd}, "blocks.1.mlp.fc2.bias")
    sd = videomae_state(pretraining=False)
    sd["blocks.0.attn.rel_pos_bias"] = rand(4)
    cases["unexpected"] = ({"module": sd}, "blocks.0.attn.rel_pos_bias")
    cases["shape"] = ({"model": videomae_state(pretraining=False, dim=48)}, "shape")
    sd = videomae_state(pretraining=False)
    sd.update({"norm.weight": rand(D), "norm.bias": rand(D)})
    cases["both norms"] = (sd, "norm.weight")
    cases["container"] = ({"weights": videomae_state(pretraining=False)}, "no state dict")
    for name, (obj, needle) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.pth"
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match=needle) as err:
            load_videomae(path, vit)
        assert str(path) in str(err.value), name

    with pytest.raises(CheckpointError, match="does not exist"):
        load_videomae(tmp_path / "absent.pth", vit)
    bad = tmp_path / "ast_bad.pth"
    torch.save(ast_state(n_pos=2 + 12 * 50), bad)
    with pytest.raises(CheckpointError, match="pos_embed"):
        load_ast(bad, AST(AUDIO))
    bad_block = ast_state()
    del bad_block["module.v.blocks.0.attn.qkv.bias"]
    torch.save(bad_block, bad)
    with pytest.raises(CheckpointError, match="blocks.0.attn.qkv.bias"):
        load_ast(bad, AST(AUDIO))
    with pytest.raises(CheckpointError, match="ast_bad.pth"):  # a VideoMAE file is not an AST file
        torch.save({"model": videomae_state(pretraining=True)}, bad)
        load_ast(bad, AST(AUDIO))
