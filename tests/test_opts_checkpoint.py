import random

import numpy as np
import pytest
import torch
from torch import nn

import opts
from core import checkpoint as ckpt
from core import methods


def test_preset_fills_defaults_and_flags_override():
    args = opts.parse_args(["--preset", "demo", "--lr", "0.5"])
    assert args.preset == "cten_demo" and args.visual_depth == 10 and args.lr == 0.5
    assert args.annotation.endswith("ve8.json") and args.eval_seq_len == args.seq_len
    args = opts.parse_args(["--preset", "cten_ek6_official", "--root", "X"])
    assert args.annotation == "X/ek6.json" and args.optimizer == "adam" and args.seq_len == 16


def test_every_preset_parses():
    for name in methods.presets():
        args = opts.parse_args(["--preset", name, "--root", "R"])
        assert args.method == methods.presets()[name]["method"]


def test_unknown_preset_is_an_error(capsys):
    with pytest.raises(SystemExit):
        opts.parse_args(["--preset", "nope", "--root", "R"])
    assert "unknown preset" in capsys.readouterr().err


def test_rng_state_roundtrip():
    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_checkpoint_atomic_save_and_key_errors(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "c.pth"
    ckpt.save_checkpoint(path, model=model.state_dict(), epoch=3)
    assert not (tmp_path / "c.pth.tmp").exists()
    state = ckpt.load_checkpoint(path)
    ckpt.load_model_state(nn.Linear(3, 2), state["model"], path)
    with pytest.raises(ValueError, match="missing keys: bias"):
        ckpt.load_model_state(nn.Linear(3, 2), {"weight": state["model"]["weight"]}, path)
    with pytest.raises(ValueError, match="shape mismatch"):
        ckpt.load_model_state(nn.Linear(4, 2), state["model"], path)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        ckpt.load_checkpoint(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "none.pth")


def test_official_mbt_options_reach_the_model():
    recipe = methods.get("mbt")
    build_model = lambda args, n: recipe.build_model(recipe.arch_of(args), n)  # noqa: E731
    args = opts.parse_args(["--preset", "mbt_demo", "--video-scaling", "official", "--freeze-audio-early"])
    model = build_model(args, 8)
    assert model.video.cfg.mean == (100 / 255,) * 3 and model.video.cfg.std == (1.0,) * 3
    assert not any(p.requires_grad for p in model.audio.blocks[0].parameters())
    assert all(p.requires_grad for p in model.audio.blocks[-1].parameters())
    default = build_model(opts.parse_args(["--preset", "mbt_demo"]), 8)
    assert default.video.cfg.mean != model.video.cfg.mean
    assert all(p.requires_grad for p in default.audio.parameters())


def test_a_failed_checkpoint_write_leaves_no_temp_file_and_names_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    ckpt.save_checkpoint(path, epoch=1)

    def full_disk(obj, f):
        open(f, "wb").write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file: "
                           "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="could not write checkpoint .*last.pth.*No space left.*--resume"):
        ckpt.save_checkpoint(path, epoch=2)
    assert not (tmp_path / "last.pth.tmp").exists()
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["epoch"] == 1  # the previous checkpoint is intact
