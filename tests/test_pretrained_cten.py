"""Published CTEN weight formats, rebuilt with random tensors: Hara et al.'s 3D ResNets (both releases) and
torchvision ResNets."""
import pytest
import torch
import torchvision

from models.audio_resnet import AudioResNet
from models.pretrained import CheckpointError, load_resnet3d, load_torchvision_resnet
from models.resnet3d import ResNet3D

STAGES = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 50: ("bottleneck", [3, 4, 6, 3]),
          101: ("bottleneck", [3, 4, 23, 3])}


def hara_layout(depth: int, n_classes: int, counters: bool) -> dict[str, tuple]:
    """Key -> shape of kenshohara/3D-ResNets-PyTorch's `resnet.py` (shortcut B), written out independently."""
    def bn(name, c):
        out = {f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,), f"{name}.running_var": (c,)}
        if counters:
            out[f"{name}.num_batches_tracked"] = ()
        return out

    kind, blocks = STAGES[depth]
    layout = {"conv1.weight": (64, 3, 7, 7, 7), **bn("bn1", 64)}
    c_in = 64
    for s, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks), start=1):
        c_out = planes * (4 if kind == "bottleneck" else 1)
        for j in range(n):
            p = f"layer{s}.{j}"
            if kind == "basic":
                layout.update({f"{p}.conv1.weight": (planes, c_in, 3, 3, 3), **bn(f"{p}.bn1", planes),
                               f"{p}.conv2.weight": (planes, planes, 3, 3, 3), **bn(f"{p}.bn2", planes)})
            else:
                layout.update({f"{p}.conv1.weight": (planes, c_in, 1, 1, 1), **bn(f"{p}.bn1", planes),
                               f"{p}.conv2.weight": (planes, planes, 3, 3, 3), **bn(f"{p}.bn2", planes),
                               f"{p}.conv3.weight": (c_out, planes, 1, 1, 1), **bn(f"{p}.bn3", c_out)})
            if j == 0 and (s > 1 or c_in != c_out):
                layout.update({f"{p}.downsample.0.weight": (c_out, c_in, 1, 1, 1), **bn(f"{p}.downsample.1", c_out)})
            c_in = c_out
    layout.update({"fc.weight": (n_classes, c_in), "fc.bias": (n_classes,)})
    return layout


def random_state(layout: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.05
    return state


def save_kinetics400(path, state):
    """resnet-101-kinetics.pth (CVPR 2018 release): DataParallel keys, legacy serialisation, with optimiser state."""
    torch.save({"epoch": 200, "arch": "resnet-101", "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}},
               path, _use_new_zipfile_serialization=False)


def save_kinetics_moments(path, state):
    """r3d101_KM_200ep.pth (2020 release): plain keys, zip serialisation."""
    torch.save({"epoch": 200, "arch": "resnet", "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                "scheduler": {"milestones": {}}}, path)


def tiny_clip(n=1, frames=16, size=112):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, frames, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("depth", [10, 18])
def test_resnet3d_keys_match_official_layout(depth):
    ours = {k: tuple(v.shape) for k, v in ResNet3D(depth).state_dict().items()}
    official = hara_layout(depth, 400, counters=True)
    official = {k: v for k, v in official.items() if not k.startswith("fc.")}
    assert ours == official


@pytest.mark.parametrize("save,preset,n_classes,counters", [
    (save_kinetics400, "kinetics400", 400, False),
    (save_kinetics_moments, "kinetics_moments", 1039, True),
])
def test_small_resnet3d_loads_both_formats(tmp_path, save, preset, n_classes, counters):
    state = random_state(hara_layout(10, n_classes, counters))
    save(tmp_path / "w.pth", state)
    model = ResNet3D(10, preset)
    info = load_resnet3d(tmp_path / "w.pth", model)
    assert (info["n_pretrain_classes"], info["input_preset"]) == (n_classes, preset)
    # what the load did: every trunk key from the file, nothing left at its initialisation, the classifier dropped
    assert info["initialised"] == [] and info["ignored"] == ["fc.weight", "fc.bias"]
    assert info["kept"] == sum(not k.endswith("num_batches_tracked") for k in model.state_dict()) + (
        sum(k.endswith("num_batches_tracked") for k in model.state_dict()) if counters else 0)
    loaded = model.state_dict()
    for k, v in state.items():
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded[k], v), k


@pytest.mark.parametrize("save,preset,fc_width,counters", [
    (save_kinetics400, "kinetics400", 400, False),
    (save_kinetics_moments, "kinetics_moments", 1039, True),
])
def test_full_size_resnet101_round_trip(tmp_path, save, preset, fc_width, counters):
    """Random R3D-101 weights saved in a published layout, the model wiped, reloaded: same features as before."""
    torch.set_num_threads(1)
    model = ResNet3D(101, preset)
    weights = {k: v.clone() for k, v in model.state_dict().items() if counters or not k.endswith("num_batches_tracked")}
    layout = hara_layout(101, fc_width, counters)
    backbone_layout = {k: v for k, v in layout.items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in weights.items()} == backbone_layout
    clip = tiny_clip(frames=8, size=64)
    with torch.no_grad():
        reference = model(clip)
    path = tmp_path / "r3d101.pth"
    save(path, {**weights, "fc.weight": torch.randn(fc_width, 2048), "fc.bias": torch.randn(fc_width)})
    for t in model.state_dict().values():
        t.zero_()
    load_resnet3d(path, model)
    path.unlink()
    with torch.no_grad():
        torch.testing.assert_close(model(clip), reference)


def test_wrong_depth_names_the_file_and_keys(tmp_path):
    path = tmp_path / "r3d10.pth"
    save_kinetics_moments(path, random_state(hara_layout(10, 1039, True)))
    with pytest.raises(CheckpointError) as err:
        load_resnet3d(path, ResNet3D(18, "kinetics_moments"))
    msg = str(err.value)
    assert str(path) in msg and "missing keys" in msg and "layer1.1.conv1.weight" in msg


def test_missing_and_misshapen_keys_are_listed(tmp_path):
    state = random_state(hara_layout(10, 1039, True))
    del state["layer2.0.bn1.weight"]
    state["conv1.weight"] = torch.randn(64, 3, 3, 7, 7)
    path = tmp_path / "broken.pth"
    save_kinetics_moments(path, state)
    with pytest.raises(CheckpointError) as err:
        load_resnet3d(path, ResNet3D(10, "kinetics_moments"))
    msg = str(err.value)
    assert "missing keys: layer2.0.bn1.weight" in msg
    assert "conv1.weight: file (64, 3, 3, 7, 7) vs model (64, 3, 7, 7, 7)" in msg


def test_input_scaling_mismatch_is_refused(tmp_path):
    path = tmp_path / "resnet-10-kinetics.pth"
    save_kinetics400(path, random_state(hara_layout(10, 400, False)))
    with pytest.raises(CheckpointError, match="'kinetics400' input scaling"):
        load_resnet3d(path, ResNet3D(10, "kinetics_moments"))
    assert load_resnet3d(path, ResNet3D(10, "kinetics_moments"), check_input=False)["input_preset"] == "kinetics400"


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_resnet3d(tmp_path / "absent.pth", ResNet3D(10))
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_resnet3d(tmp_path / "garbage.pth", ResNet3D(10))
    torch.save({"something": [1, 2]}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_resnet3d(tmp_path / "empty.pth", ResNet3D(10))


def test_pickled_objects_need_trust(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": random_state(hara_layout(10, 400, True)), "args": torch.nn.Identity()}, path)
    with pytest.raises(CheckpointError, match="trusted=True"):
        load_resnet3d(path, ResNet3D(10))
    load_resnet3d(path, ResNet3D(10), trusted=True)


@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "resnet18-random.pth"
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, path)
    return path, state


def test_torchvision_weights_fill_the_audio_trunk_with_summed_first_conv(torchvision_resnet18):
    path, state = torchvision_resnet18
    model = AudioResNet("resnet18", out_dim=32, first_conv="imagenet")
    info = load_torchvision_resnet(path, model)
    assert info["conv1"] == "summed" and info["initialised"] == [] and info["ignored"] == ["fc.weight", "fc.bias"]
    trunk = model.trunk.state_dict()
    torch.testing.assert_close(trunk["conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))
    for k in ("layer4.1.bn2.running_var", "layer1.0.conv1.weight", "bn1.bias"):
        assert torch.equal(trunk[k], state[k])


def test_official_first_conv_keeps_its_random_init(torchvision_resnet18):
    path, state = torchvision_resnet18
    model = AudioResNet("resnet18", out_dim=32, first_conv="official")
    before = model.trunk.conv1.weight.clone()
    info = load_torchvision_resnet(path, model)
    assert info["conv1"] == "random" and info["initialised"] == ["conv1.weight"]
    assert info["ignored"] == ["fc.weight", "fc.bias", "conv1.weight"]
    assert torch.equal(model.trunk.conv1.weight, before)
    assert torch.equal(model.trunk.state_dict()["layer3.0.downsample.0.weight"], state["layer3.0.downsample.0.weight"])


def test_wrong_torchvision_arch_raises(torchvision_resnet18):
    path, _ = torchvision_resnet18
    with pytest.raises(CheckpointError, match="resnet18-random.pth") as err:
        load_torchvision_resnet(path, AudioResNet("resnet50", out_dim=32))
    assert "layer1.0.conv3.weight" in str(err.value)
