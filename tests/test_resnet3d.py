import pytest
import torch
from torch import nn

from models.resnet3d import ResNet3D


def tiny_clip(n=2, frames=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, frames, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("depth,width", [(10, 512), (18, 512)])
def test_basic_block_depths_give_512_features(depth, width):
    model = ResNet3D(depth)
    assert model.feature_dim == width
    assert model(tiny_clip()).shape == (2, width)


def test_full_size_resnet101():
    torch.set_num_threads(1)
    model = ResNet3D(101)
    # 85,245,120 backbone parameters: Hara et al.'s R3D-101 (86.06 M with its 400-way fc) minus the fc
    assert sum(p.numel() for p in model.parameters()) == 85_245_120
    with torch.no_grad():
        out = model(tiny_clip(n=1, frames=16, size=112))
    assert out.shape == (1, 2048)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("preset,expected", [
    ("kinetics400", lambda x: x - torch.tensor([114.7748, 107.7354, 99.4750]).view(1, 3, 1, 1, 1)),
    ("kinetics_moments", lambda x: (x / 255 - torch.tensor([0.4345, 0.4051, 0.3775]).view(1, 3, 1, 1, 1))
     / torch.tensor([0.2768, 0.2713, 0.2737]).view(1, 3, 1, 1, 1)),
])
def test_input_scaling_matches_checkpoint(preset, expected):
    model = ResNet3D(10, preset)
    seen = []
    model.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = tiny_clip()
    model(x)
    torch.testing.assert_close(seen[0], expected(x.float()), rtol=1e-5, atol=1e-4)


def test_scaling_buffers_are_not_saved():
    assert not any("pixel" in k for k in ResNet3D(10).state_dict())


def test_frozen_backbone_stays_in_eval_and_keeps_running_stats():
    parent = nn.ModuleDict({"backbone": ResNet3D(10, frozen=True), "head": nn.Linear(512, 2)})
    parent.train()
    backbone = parent["backbone"]
    assert not backbone.training and not any(m.training for m in backbone.modules())
    assert parent["head"].training
    assert not any(p.requires_grad for p in backbone.parameters())
    before = backbone.bn1.running_mean.clone()
    backbone(tiny_clip())
    torch.testing.assert_close(backbone.bn1.running_mean, before)


def test_unfrozen_backbone_trains():
    model = ResNet3D(10, frozen=False)
    model.train()
    assert model.training and all(p.requires_grad for p in model.parameters())
    before = model.bn1.running_mean.clone()
    model(tiny_clip())
    assert not torch.equal(model.bn1.running_mean, before)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="depth 42"):
        ResNet3D(42)
    with pytest.raises(ValueError, match="imagenet"):
        ResNet3D(10, "imagenet")
