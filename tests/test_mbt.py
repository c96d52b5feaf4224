import pytest
import torch

from models.ast import ASTConfig
from models.mbt import MBT
from models.video_vit import VideoViTConfig

VIDEO = VideoViTConfig(img_size=32, num_frames=4, dim=32, depth=3, num_heads=4)
AUDIO = ASTConfig(dim=32, depth=3, num_heads=4)
B, T, C, NB = 2, 3, 5, 4
NV, NA = 8, 108  # patch tokens per segment


def tiny_mbt(**kw):
    torch.manual_seed(0)
    kw.setdefault("fusion_layer", 1)
    return MBT(C, VIDEO, AUDIO, n_bottleneck=NB, **kw).eval()


def inputs(b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (b, T, 3, 4, 32, 32), generator=g, dtype=torch.uint8)
    audio = torch.randn(b, T, 100, 128, generator=g)
    return video, audio


def test_full_size_shapes_tokens_and_parameter_count():
    with torch.device("meta"):
        model = MBT(8)
        seen = {}
        for i in (7, 8):
            model.video.blocks[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(("v", i), a[0].shape))
            model.audio.blocks[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(("a", i), a[0].shape))
        out = model(torch.zeros(1, 2, 3, 16, 112, 112, dtype=torch.uint8), torch.zeros(1, 2, 100, 128),
                    return_tokens=True)
    assert seen[("v", 7)] == (2, 393, 768) and seen[("a", 7)] == (2, 110, 768)
    assert seen[("v", 8)] == (2, 393 + 32, 768) and seen[("a", 8)] == (2, 110 + 32, 768)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "logits": (1, 8), "logits_v": (1, 8), "logits_a": (1, 8), "seg_logits_v": (1, 2, 8),
        "seg_logits_a": (1, 2, 8), "tokens_v": (1, 2, 392, 768), "tokens_a": (1, 2, 108, 768),
        "cls_attn": (1, 2, 392)}
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model.video) == 86_228_736
    assert count(model.audio) == 85_339_392
    assert count(model) == 171_605_008
    assert model.bottleneck.shape == (1, 32, 768)


def test_outputs_and_their_relations():
    model = tiny_mbt()
    out = model(*inputs(), return_tokens=True)
    assert out["seg_logits_v"].shape == (B, T, C) and out["tokens_v"].shape == (B, T, NV, 32)
    assert out["tokens_a"].shape == (B, T, NA, 32) and out["cls_attn"].shape == (B, T, NV)
    torch.testing.assert_close(out["logits_v"], out["seg_logits_v"].mean(1))
    torch.testing.assert_close(out["logits_a"], out["seg_logits_a"].mean(1))
    torch.testing.assert_close(out["logits"], out["logits_v"] + out["logits_a"])
    assert (out["cls_attn"] > 0).all() and (out["cls_attn"].sum(-1) < 1).all()


def test_bottleneck_exchange_with_hooks():
    model = tiny_mbt(fusion_layer=1)
    ins, outs = {}, {}

    def record(key):
        def hook(module, args, output):
            ins[key], outs[key] = args[0], output
        return hook

    for name, blocks in (("v", model.video.blocks), ("a", model.audio.blocks)):
        for i, blk in enumerate(blocks):
            blk.register_forward_hook(record((name, i)))
    with torch.no_grad():
        model(*inputs())
    nv, na = NV + 1, NA + 2
    assert ins[("v", 0)].shape[1] == nv and ins[("a", 0)].shape[1] == na  # unfused layer: no bottleneck
    z_v, z_a = ins[("v", 1)][:, nv:], ins[("a", 1)][:, na:]
    torch.testing.assert_close(z_v, model.bottleneck.expand(B * T, -1, -1))
    torch.testing.assert_close(z_a, z_v)
    z_v, z_a = ins[("v", 2)][:, nv:], ins[("a", 2)][:, na:]  # layer 1 -> layer 2
    torch.testing.assert_close(z_v, z_a)  # both modalities see the same bottleneck
    assert not torch.allclose(outs[("v", 1)][:, nv:], outs[("a", 1)][:, na:])
    torch.testing.assert_close(z_v, (outs[("v", 1)][:, nv:] + outs[("a", 1)][:, na:]) / 2)
    torch.testing.assert_close(ins[("v", 2)][:, :nv], outs[("v", 1)][:, :nv])
    torch.testing.assert_close(ins[("a", 2)][:, :na], outs[("a", 1)][:, :na])


def test_batch_composition_independence():
    model = tiny_mbt()
    v, a = inputs(b=2)
    with torch.no_grad():
        both = model(v, a, return_tokens=True)
        swapped = model(v.flip(0), a.flip(0), return_tokens=True)
        singles = [model(v[i:i + 1], a[i:i + 1], return_tokens=True) for i in range(2)]
    assert not torch.allclose(singles[0]["logits"], singles[1]["logits"])
    for key, x in both.items():
        for i in range(2):
            torch.testing.assert_close(x[i], singles[i][key][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(swapped[key], x.flip(0), atol=1e-5, rtol=1e-5)


def test_video_mask_replaces_only_the_masked_tokens():
    model = tiny_mbt()
    v, a = inputs()
    none = torch.zeros(B, T, NV, dtype=torch.bool)
    mask = none.clone()
    mask[0, 1, :3] = True
    with torch.no_grad():
        ref = model(v, a, return_tokens=True)
        same = model(v, a, video_mask=none, return_tokens=True)
        masked = model(v, a, video_mask=mask, return_tokens=True)
        v_changed = v.clone()
        v_changed[0, 1, :, :2, :16, :16] = 255 - v_changed[0, 1, :, :2, :16, :16]  # the tubelet of token 0
        masked_changed = model(v_changed, a, video_mask=mask, return_tokens=True)
    torch.testing.assert_close(same["logits"], ref["logits"])
    assert not torch.allclose(masked["seg_logits_v"][0, 1], ref["seg_logits_v"][0, 1])
    torch.testing.assert_close(masked["seg_logits_v"][0, 0], ref["seg_logits_v"][0, 0])
    torch.testing.assert_close(masked["logits"][1], ref["logits"][1])
    torch.testing.assert_close(masked_changed["tokens_v"], masked["tokens_v"])  # content under the mask is unseen


def test_cls_attention_of_last_fused_block():
    model = tiny_mbt(fusion_layer=1)
    captured = {}
    model.video.blocks[2].register_forward_hook(lambda m, a, o: captured.__setitem__("x", a[0]))
    with torch.no_grad():
        out = model(*inputs(), return_tokens=True)
        blk = model.video.blocks[2]
        h = blk.norm1(captured["x"])
        q, k, _ = blk.attn.qkv(h).unflatten(-1, (3, 4, 8)).unbind(2)  # (BT, L, H, d)
        probs = torch.einsum("bhd,blhd->bhl", q[:, 0], k).mul(8 ** -0.5).softmax(-1)  # (BT, H, L)
    want = probs[:, :, 1:NV + 1].mean(1).unflatten(0, (B, T))
    torch.testing.assert_close(out["cls_attn"], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion_layer", [0, 3])
def test_fusion_layer_extremes(fusion_layer):
    model = tiny_mbt(fusion_layer=fusion_layer)
    with torch.no_grad():
        out = model(*inputs(), return_tokens=True)
    assert out["cls_attn"].shape == (B, T, NV) and torch.isfinite(out["logits"]).all()
    if fusion_layer == 3:  # no fused layer: each branch alone
        with torch.no_grad():
            v, a = inputs()
            feat = model.video(v.flatten(0, 1))
        torch.testing.assert_close(out["seg_logits_v"], model.head_v(feat).unflatten(0, (B, T)), atol=1e-5, rtol=1e-5)


def test_grad_checkpointing_gives_same_outputs_and_gradients():
    v, a = inputs()
    results = []
    for ckpt in (False, True):
        model = tiny_mbt(grad_checkpointing=ckpt)
        out = model(v, a)
        out["logits"].sum().backward()
        results.append((out["logits"].detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for n, g in results[0][1].items():
        torch.testing.assert_close(results[1][1][n], g, msg=n)


def test_freeze_audio_early():
    model = tiny_mbt(fusion_layer=2, freeze_audio_early=True).train()
    model(*inputs())["logits"].sum().backward()
    frozen = [model.audio.cls_token, model.audio.pos_embed, model.audio.patch_embed.proj.weight,
              *model.audio.blocks[1].parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert model.audio.blocks[2].attn.qkv.weight.grad is not None
    assert model.video.blocks[0].attn.qkv.weight.grad is not None


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="width and depth"):
        MBT(C, VIDEO, ASTConfig(dim=64, depth=3, num_heads=4))
    with pytest.raises(ValueError, match="fusion_layer"):
        MBT(C, VIDEO, AUDIO, fusion_layer=4)
    v, a = inputs()
    with pytest.raises(ValueError, match="audio"):
        tiny_mbt()(v, a[:, :2])


def test_mean_pooling_heads_read_the_normalised_mean_of_patch_tokens():
    model = tiny_mbt(pool="mean", fusion_layer=3)  # no fusion: each branch is its own encoder
    video, audio = inputs()
    with torch.no_grad():
        out = model(video, audio)
        xv = model.video.embed(video.flatten(0, 1))
        for blk in model.video.blocks:
            xv = blk(xv)
        xa = model.audio.embed(audio.flatten(0, 1))
        for blk in model.audio.blocks:
            xa = blk(xa)
    want_v = model.head_v(model.video.fc_norm(xv[:, 1:].mean(1))).unflatten(0, (B, T))
    want_a = model.head_a(model.audio.norm(xa[:, 2:].mean(1))).unflatten(0, (B, T))
    torch.testing.assert_close(out["seg_logits_v"], want_v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["seg_logits_a"], want_a, atol=1e-5, rtol=1e-5)
    cls = tiny_mbt(fusion_layer=3)
    with torch.no_grad():
        assert not torch.allclose(cls(video, audio)["seg_logits_v"], out["seg_logits_v"])
        # each branch's own forward pools the same way (tools/pretrain_demo.py trains the branches through it)
        for mbt, pool in ((model, "mean"), (cls, "cls")):
            got = mbt(video, audio)
            own_v = mbt.head_v(mbt.video(video.flatten(0, 1), pool=pool)).unflatten(0, (B, T))
            own_a = mbt.head_a(mbt.audio(audio.flatten(0, 1), pool=pool)).unflatten(0, (B, T))
            torch.testing.assert_close(got["seg_logits_v"], own_v, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got["seg_logits_a"], own_a, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pool"):
        model.video(video.flatten(0, 1), pool="max")
    with pytest.raises(ValueError, match="pool"):
        MBT(C, VIDEO, AUDIO, pool="max")


def test_head_init_scale():
    model = tiny_mbt(head_init_scale=1e-3)
    assert model.head_v.weight.abs().max() < 1e-4 and model.head_a.bias.abs().sum() == 0  # 0.02 x 1e-3 std
    assert tiny_mbt().head_v.weight.abs().max() > 1e-2  # nn.Linear's default otherwise


def test_stage2_loss_is_both_heads_cross_entropy_and_trains_both_heads():
    """MBT's supervised step: CE(logits_v) + CE(logits_a), each weight 1; one backward reaches both heads with the
    gradient of its own term (a dropped or re-weighted audio term fails here, in one process)."""
    from core.losses import classification_loss
    from core.methods.mbt import MBTMethod

    model = tiny_mbt()
    video, audio = inputs()
    labels = torch.tensor([1, 3])
    loss, logs = MBTMethod(classification_loss("ce", torch.ones(C))).train_step(
        model, {"video": video, "audio": audio, "label": labels}, 0)
    out = model(video, audio)  # eval mode: the same forward
    ce_v = torch.nn.functional.cross_entropy(out["logits_v"], labels)
    ce_a = torch.nn.functional.cross_entropy(out["logits_a"], labels)
    assert loss.item() == pytest.approx((ce_v + ce_a).item(), rel=1e-5)
    assert logs["loss_v"] == pytest.approx(ce_v.item(), rel=1e-5)
    assert logs["loss_a"] == pytest.approx(ce_a.item(), rel=1e-5)
    loss.backward()
    for head, term in ((model.head_v, ce_v), (model.head_a, ce_a)):
        own, = torch.autograd.grad(term, head.weight, retain_graph=True)
        assert own.abs().sum() > 0
        torch.testing.assert_close(head.weight.grad, own)
