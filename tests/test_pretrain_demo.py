"""tools/pretrain_demo.py: each pretext-trained backbone, saved in its published layout, loads through the real
recipe loader (the same flag, loader and record as a run) with the trained weights; the cache; the pretext data."""
import argparse

import pytest
import torch

from core import methods
from core.weights import sha256_of
from datasets.audio import log_mel
from tools import pretext_data
from models.resnet3d import ResNet3D
from tools.pretrain_demo import (LAYOUTS, PLANS, Plan, build_pretext, flat_twin, inflate_centre, pretrain,
                                 preset_model, train, twin_features)

# backbone -> (method, the option naming its file, the loaded module of the preset's model, the trained one's)
CASES = {
    "r3d": ("cten", "visual_weights", lambda m: m.visual, lambda n: n.backbone),
    "audio_resnet": ("cten", "audio_weights", lambda m: m.audio.trunk, lambda n: n.backbone.trunk),
    "video_vit": ("mbt", "videomae_weights", lambda m: m.video, lambda n: n.backbone),
    "ast": ("mbt", "ast_weights", lambda m: m.audio, lambda n: n.backbone),
}
NOT_IN_FILE = {"video_vit": ("cls_token", "mask_token")}  # VideoMAE files have neither (the loader keeps the init)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_pretrained_backbone_loads_through_the_runs_loader_with_the_trained_weights(tmp_path, name):
    method, dest, loaded_of, trained_of = CASES[name]
    args, model = preset_model(method)
    torch.manual_seed(0)
    net, batches, _ = build_pretext(name, args, model)
    train(net, batches, Plan(PLANS[name].file, steps=1, batch=2, lr=1e-3), seed=0)
    path = tmp_path / PLANS[name].file
    saved = LAYOUTS[name](net)
    torch.save(saved, path)

    records = methods.get(method).load_pretrained(model, argparse.Namespace(**{**vars(args), dest: str(path)}))
    (record,) = records
    assert record["sha256"] == sha256_of(path) and record["flag"] == "--" + dest.replace("_", "-")
    assert record["initialised"] == list(NOT_IN_FILE.get(name, ()))
    loaded, trained = loaded_of(model).state_dict(), trained_of(net).state_dict()
    compared = [k for k in trained if not k.endswith("num_batches_tracked") and k not in NOT_IN_FILE.get(name, ())]
    inner = saved.get("state_dict") or saved.get("model") or saved  # the file's state dict
    counters = sum(k.endswith("num_batches_tracked") for k in inner)  # filled too when the file has them
    assert record["kept"] == len(compared) + counters
    for k in compared:  # conv1 of the audio ResNet: kernel / 3 per RGB channel, summed back by the loader
        torch.testing.assert_close(loaded[k], trained[k], rtol=1e-6, atol=1e-7, msg=k)
    changed = [k for k in compared if loaded[k].is_floating_point()
               and not torch.equal(loaded[k], loaded_of(preset_model(method)[1]).state_dict()[k])]
    assert changed, "the file changed nothing in the preset's module"


def test_the_published_layouts():
    args, model = preset_model("cten")
    hara = LAYOUTS["r3d"](build_pretext("r3d", args, model)[0])
    assert set(hara) == {"state_dict"} and all(k.startswith("module.") for k in hara["state_dict"])
    assert not any(k.endswith("num_batches_tracked") for k in hara["state_dict"])
    assert hara["state_dict"]["module.fc.weight"].shape[0] == sum(pretext_data.VIDEO_FACTORS)
    tv = LAYOUTS["audio_resnet"](build_pretext("audio_resnet", args, model)[0])
    assert tv["conv1.weight"].shape == (64, 3, 7, 7) and "fc.weight" in tv
    args, model = preset_model("mbt")
    mae = LAYOUTS["video_vit"](build_pretext("video_vit", args, model)[0])
    assert set(mae) == {"model"} and "blocks.0.attn.q_bias" in mae["model"] and "head.weight" in mae["model"]
    assert "cls_token" not in mae["model"]
    ast = LAYOUTS["ast"](build_pretext("ast", args, model)[0])
    assert all(k.startswith(("module.v.", "module.mlp_head.")) for k in ast)


def test_a_second_call_with_the_same_configuration_is_cached_and_another_seed_is_not(tmp_path):
    first = pretrain("ast", tmp_path, "mbt", seed=0, steps=1, batch=2)
    again = pretrain("ast", tmp_path, "mbt", seed=0, steps=1, batch=2)
    assert not first["cached"] and again["cached"] and again["sha256"] == first["sha256"]
    other = pretrain("ast", tmp_path, "mbt", seed=1, steps=1, batch=2)
    assert not other["cached"] and other["sha256"] != first["sha256"]
    (tmp_path / PLANS["ast"].file).write_bytes(b"changed")  # a file that no longer matches its manifest entry
    assert not pretrain("ast", tmp_path, "mbt", seed=1, steps=1, batch=2)["cached"]


def test_the_same_seed_gives_the_same_weights(tmp_path):
    a = pretrain("ast", tmp_path / "a", "mbt", seed=3, steps=2, batch=2)
    b = pretrain("ast", tmp_path / "b", "mbt", seed=3, steps=2, batch=2)
    assert a["sha256"] == b["sha256"]


def test_pretext_batches_are_deterministic_and_labelled():
    clips, labels = pretext_data.video_batch(0, 5, 3, 4, 32)
    assert clips.shape == (3, 3, 4, 32, 32) and clips.dtype == torch.uint8 and labels.shape == (3, 3)
    assert torch.equal(clips, pretext_data.video_batch(0, 5, 3, 4, 32)[0])
    assert not torch.equal(clips, pretext_data.video_batch(1, 5, 3, 4, 32)[0])
    windows, labels = pretext_data.audio_batch(0, 0, 24, 100)
    assert windows.shape == (24, 100, 128) and torch.equal(windows, pretext_data.audio_batch(0, 0, 24, 100)[0])
    broadband = torch.tensor([pretext_data.SOUNDS[k] in pretext_data.BROADBAND for k in labels[:, 0]])
    assert (labels[broadband, 1] == pretext_data.IGNORE).all() and (labels[~broadband, 1] >= 0).all()


def test_the_centre_inflated_3d_resnet_computes_its_2d_twin_on_a_still_clip():
    torch.manual_seed(0)
    r3d = ResNet3D(10, "kinetics400", frozen=False)
    twin = flat_twin(r3d)
    for p in twin.parameters():  # the twin moves away from r3d's centre slices (as training does)
        p.data.add_(0.01 * torch.randn_like(p))
    twin.eval()
    inflate_centre(r3d, twin)
    r3d.eval()
    image = torch.randint(0, 256, (2, 3, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(r3d(image.expand(-1, -1, 8, -1, -1)), twin_features(twin, image), rtol=1e-4,
                                   atol=1e-4)
        moving = torch.randint(0, 256, (2, 3, 8, 32, 32), dtype=torch.uint8)
        assert not torch.allclose(r3d(moving), twin_features(twin, moving[:, :, :1]), atol=1e-3)


def test_the_batched_log_mel_equals_log_mel_per_window():
    waves = torch.randn(3, 16240) * torch.tensor([[0.1], [0.5], [1.0]]) + 0.2
    reference = torch.stack([log_mel(w) for w in waves])  # (3, 100, 128)
    torch.testing.assert_close(pretext_data.batched_log_mel(waves, 100), reference, rtol=1e-4, atol=1e-3)
