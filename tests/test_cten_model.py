import pytest
import torch

import opts
from core import methods
from models.cten import CTEN

B, T, C = 2, 4, 8


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (B, T, 3, 2, 16, 16), dtype=torch.uint8, generator=g)  # (B, T, 3, L, S, S)
    audio = torch.randn(B, T, 16, 16, generator=g)  # (B, T, F, mel)
    return video, audio


def tiny(**kw):
    torch.manual_seed(0)
    return CTEN(C, T, visual_depth=10, **kw)


@pytest.fixture(scope="module")
def model():
    return tiny()


def test_audio_visual_forward_contract(model):
    model.train()
    video, audio = inputs()
    fv, fa = model.visual_features(video), model.audio_features(audio)
    assert fv.shape == fa.shape == (B, T, 512) and model.feature_dim == 512
    out = model(video, audio)
    assert set(out) == {"logits", "att_v", "att_a", "seg_logits", "seg_scores"} and out["seg_logits"].shape == (B, T, C)
    assert out["logits"].shape == (B, C) and out["att_v"].shape == out["att_a"].shape == (B, T)
    assert (out["att_v"] >= 0).all() and (out["att_a"] >= 0).all()
    assert model.classifier.in_features == 1024
    model.eval()
    fv, fa = model.visual_features(video), model.audio_features(audio)
    torch.testing.assert_close(model(video, audio)["logits"], model.head(fv, fa)["logits"])


def test_visual_chunks_give_the_same_features(model):
    video, _ = inputs()
    whole = model.visual_features(video)
    model.visual_chunk = 3
    try:
        torch.testing.assert_close(model.visual_features(video), whole)
    finally:
        model.visual_chunk = 0


@pytest.mark.parametrize("modality,key", [("v", "att_v"), ("a", "att_a")])
def test_single_modality_returns_only_its_attention(modality, key):
    model = tiny(modalities=modality, inter=False)
    video, audio = inputs()
    out = model(video if modality == "v" else None, audio if modality == "a" else None)
    assert set(out) == {"logits", key, "seg_logits", "seg_scores"}
    assert model.classifier.in_features == (512 if modality == "v" else 2048)
    assert (model.visual is None) == (modality == "a") and (model.audio is None) == (modality == "v")


def test_joint_attention_is_shared_and_reads_both_streams():
    model = tiny(temporal_attention="joint", nonlocal_init="official")
    out = model(*inputs())
    assert torch.equal(out["att_v"], out["att_a"])
    assert model.attention.w2.in_features == 1024 and model.attention.bn is not None


@pytest.mark.parametrize("form", ["paper", "joint"])
def test_attention_w1_init_reaches_every_attention(form):
    args = opts.parse_args(["--method", "cten", "--preset", "cten_demo", "--root", "R", "--temporal-attention", form,
                            "--attention-w1-init", "identity"])
    arch = methods.get("cten").arch_of(args)
    assert arch.attention_w1_init == "identity"
    def w1s(model):
        return [a.w1 for a in (model.attention.values() if form == "paper" else [model.attention])]

    identity = w1s(tiny(temporal_attention=form, attention_w1_init=arch.attention_w1_init))
    assert len(identity) == (2 if form == "paper" else 1)
    for w1 in identity:
        torch.testing.assert_close(w1.weight, torch.eye(T))
        assert (w1.bias == 0).all()
    assert not torch.allclose(w1s(tiny(temporal_attention=form))[0].weight, torch.eye(T))


def test_ablation_switches_remove_modules_and_change_outputs():
    video, audio = inputs()
    plain = tiny(intra=False, inter=False).eval()
    assert plain.intra is None and plain.inter is None
    full = tiny().eval()
    full.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        fv, fa = full.visual_features(video), full.audio_features(audio)
        out_plain, out_full = plain.head(fv, fa), full.head(fv, fa)
    # the non-local blocks start as the identity, so only the inter-modal relation changes the attention input
    assert not torch.allclose(out_plain["att_v"], out_full["att_v"])
    no_inter = tiny(inter=False).eval()
    no_inter.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(no_inter.head(fv, fa)["logits"], out_plain["logits"])


def test_frozen_backbone_and_trainable_parameters(model):
    model.train()
    assert not model.visual.training and model.audio.training and model.intra.training
    trainable = {id(p) for p in model.trainable_parameters()}
    assert not any(id(p) in trainable for p in model.visual.parameters())
    for part in (model.audio, model.intra, model.inter, model.attention, model.classifier):
        assert all(id(p) in trainable for p in part.parameters())
    out = model(*inputs())
    torch.nn.functional.cross_entropy(out["logits"], torch.tensor([1, 5])).backward()
    assert all(p.grad is None for p in model.visual.parameters())
    assert model.audio.trunk.conv1.weight.grad is not None and model.intra["v"].theta.weight.grad is not None


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="inter"):
        tiny(modalities="v")
    with pytest.raises(ValueError, match="modalities"):
        tiny(modalities="va")
    with pytest.raises(ValueError, match="feature_dim=2048"):
        tiny(feature_dim=2048)
    with pytest.raises(ValueError, match="temporal attention"):
        tiny(temporal_attention="both")

def test_missing_inputs_raise(model):
    with pytest.raises(ValueError, match="audio input"):
        model(inputs()[0], None)
    with pytest.raises(ValueError, match=r"\['a'\]"):
        model.head(torch.zeros(B, T, 512), None)


def test_full_size_head_shapes():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = CTEN(8, 16)
    assert model.feature_dim == 2048 and model.classifier.in_features == 4096
    assert sum(p.numel() for p in model.visual.parameters()) == 85_245_120
    assert sum(p.numel() for p in model.trainable_parameters()) == 50_038_632
    model.eval()
    with torch.no_grad():
        out = model.head(torch.randn(2, 16, 2048), torch.randn(2, 16, 2048))
        fa = model.audio_features(torch.randn(1, 2, 100, 128))
    assert out["logits"].shape == (2, 8) and out["att_v"].shape == out["att_a"].shape == (2, 16)
    assert fa.shape == (1, 2, 2048)


def test_audio_branch_variants():
    from models.audio_resnet import AudioResNet
    x = torch.randn(2, 3, 100, 128)
    small = AudioResNet("resnet10", 64, "imagenet")
    official = AudioResNet("resnet18", 64, "official")
    assert small(x).shape == official(x).shape == (2, 3, 64)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(small) < 0.5 * count(official)
    assert small.trunk.conv1.stride == (2, 2) and official.trunk.conv1.stride == (2, 1)
    with pytest.raises(ValueError, match="audio arch"):
        AudioResNet("resnet7")


class TaggedInter(torch.nn.Module):
    """Stands in for the inter-modal attention: records its inputs, returns fixed outputs per side."""

    def forward(self, first, second):
        self.inputs = (first, second)
        return torch.full_like(first, 1.0), torch.full_like(second, -1.0)


def test_the_inter_modal_step_takes_visual_then_audio_and_returns_them_in_that_order():
    """Eqs. 5-6: inter(F'_v, F'_a) -> (F''_v, F''_a); swapping the streams at the call or on return changes which
    stream each attention reads (attention 'paper': A_m = attention_m(F'_m + F''_m))."""
    model = tiny(intra=False)  # without the intra-modal step F' = F, so the inputs can be compared directly
    model.inter = TaggedInter()
    g = torch.Generator().manual_seed(3)
    fv, fa = torch.randn(B, T, 512, generator=g), torch.randn(B, T, 512, generator=g) + 5.0
    out = model.head(fv, fa)
    assert model.inter.inputs[0] is fv and model.inter.inputs[1] is fa
    torch.testing.assert_close(out["att_v"], model.attention["v"](fv + 1.0))
    torch.testing.assert_close(out["att_a"], model.attention["a"](fa - 1.0))
