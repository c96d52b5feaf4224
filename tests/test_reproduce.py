"""Reproducing the papers: whole presets, weights that cannot be forgotten, the protocol in results.json."""
import hashlib
import json

import pytest
import torch
import torchvision

import opts
from core import methods
from core.data import build_datasets
from core.run import main as run_main
from core.weights import check_expected_weights
from datasets.video_emotion import collate_samples
from fixtures_data import make_video_root
from models.pretrained import CheckpointError
from test_pretrained_cten import hara_layout, random_state, save_kinetics400, save_kinetics_moments

MBT_TINY = ["--snippet-duration", "4", "--sample-size", "32", "--mbt-depth", "2", "--mbt-width", "32", "--mbt-heads",
            "2", "--n-bottleneck", "4", "--fusion-layer", "1", "--seq-len", "2", "--eval-seq-len", "2"]
QUICK = ["--batch-size", "2", "--workers", "0", "--no-progress", "--positive-classes", "Joy", "--epochs", "1",
         "--amp", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    return root, make_video_root(root, classes=("Anger", "Joy"), train_per_class=3, test_per_class=1, n_frames=8,
                                 seconds=1.0)


def parse(*argv):
    return opts.parse_args(["--root", "/nowhere", *argv])


def test_paper_and_official_presets_are_whole_configurations():
    paper = parse("--preset", "cten_ve8_paper")
    assert (paper.optimizer, paper.seq_len, paper.audio_arch, paper.audio_features) == ("sgd", 10, "resnet50", "mfcc")
    assert (paper.temporal_attention, paper.nonlocal_init, paper.erase_rule, paper.erase_audio,
            paper.loss_reduction) == ("paper", "identity", "paper", True, "sum")
    assert (paper.inter_direction, paper.det_source, paper.amp) == ("paper", "attention", "none")  # Eq. 5, Sec. 4.5
    official = parse("--preset", "cten_ek6_official")
    assert (official.optimizer, official.lr, official.seq_len, official.audio_arch, official.audio_features) == (
        "adam", 2e-4, 16, "resnet18", "fbank")
    assert (official.temporal_attention, official.nonlocal_init, official.erase_rule, official.erase_audio,
            official.loss_reduction, official.annotation_name) == ("joint", "official", "official", False, "mean",
                                                                   "ek6.json")
    assert (official.view_passes, official.amp, official.inter_direction) == ("separate", "none", "official")
    for name in ("mbt_ve8_official", "mart_ek6_official"):
        a = parse("--preset", name)
        assert a.batch_size * a.accum_steps == 36 and a.freeze_audio_early and a.video_scaling == "official"
        assert (a.val_fraction, a.select, a.ema_decay, a.seed) == (0.0, "last", 0.999, 3407)
        assert (a.amp, a.ast_early_fp16) == ("none", True)
    assert parse("--preset", "mart_ve8_official").mart_stage2_start == "student"
    # the papers' protocol: the whole training split, the last epoch
    assert all((parse("--preset", n).val_fraction, parse("--preset", n).select) == (0.0, "last")
               for n in ("cten_ve8_paper", "cten_ve8_official"))
    # the earlier hybrids (the release's optimiser with our architecture choices) are gone
    assert not {"cten_ve8", "cten_ek6", "mbt_ve8", "mbt_ek6", "mart_ve8", "mart_ek6"} & set(methods.presets())


def test_a_preset_flag_still_overrides_it():
    assert parse("--preset", "cten_ve8_paper", "--audio-features", "fbank").audio_features == "fbank"


def test_unknown_preset_and_val_fraction_zero_with_select_val_stop(capsys):
    with pytest.raises(SystemExit):
        parse("--preset", "cten_ve8_papr")
    assert "unknown preset 'cten_ve8_papr'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("--val-fraction", "0", "--select", "val")
    assert "--select last" in capsys.readouterr().err
    assert parse("--val-fraction", "0", "--select", "last").select == "last"


@pytest.mark.parametrize("preset,flags", [
    ("cten_ve8_official", ["--visual-weights", "--audio-weights"]),
    ("mbt_ek6_official", ["--videomae-weights", "--ast-weights"]),
    ("mart_ve8_official", ["--videomae-weights", "--ast-weights", "--text-model"]),
])
def test_a_non_demo_preset_names_every_missing_weight(preset, flags):
    args = parse("--preset", preset)
    with pytest.raises(ValueError) as e:
        check_expected_weights(methods.get(args.method).expected_weights(args), args)
    assert all(f in str(e.value) for f in flags) and "--allow-random-init" in str(e.value)
    assert ("--text-model FOLDER" in str(e.value)) == ("--text-model" in flags)
    args.allow_random_init = True
    check_expected_weights(methods.get(args.method).expected_weights(args), args)
    demo = parse("--preset", f"{args.method}_demo")
    check_expected_weights(methods.get(demo.method).expected_weights(demo), demo)


def test_run_refuses_before_writing_anything(tiny_root, tmp_path, capsys):
    root, ann = tiny_root
    argv = ["--preset", "mbt_ve8_official", "--root", str(root), "--annotation", str(ann), "--output", str(tmp_path),
            "--name", "x", *MBT_TINY, *QUICK]
    assert run_main(argv) == 2
    assert "--videomae-weights FILE" in capsys.readouterr().err and not (tmp_path / "x").exists()


def cten_args(tmp_path, *extra):
    return parse("--preset", "cten_demo", "--visual-depth", "10", "--audio-arch", "resnet18", "--audio-first-conv",
                 "imagenet", *extra)


def test_cten_weight_records_and_wrong_files(tmp_path):
    visual, audio = tmp_path / "r3d10.pth", tmp_path / "resnet18.pth"
    save_kinetics400(visual, random_state(hara_layout(10, 400, counters=False)))
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), audio)
    args = cten_args(tmp_path, "--visual-input", "kinetics400", "--visual-weights", str(visual),
                     "--audio-weights", str(audio))
    recipe = methods.get("cten")
    model = recipe.build_model(recipe.arch_of(args), 2)
    records = recipe.load_pretrained(model, args)
    assert [r["flag"] for r in records] == ["--visual-weights", "--audio-weights"]
    for r, path in zip(records, (visual, audio)):
        assert r["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and r["size"] == path.stat().st_size
        assert r["kept"] > 0 and r["initialised"] == [] and r["ignored"] == ["fc.weight", "fc.bias"]
    json.dumps(records)  # goes into config.json / results.json as is
    # a file trained with another input scaling, a file of another architecture: the flag and the fix named
    moments = tmp_path / "km.pth"
    save_kinetics_moments(moments, random_state(hara_layout(10, 1039, counters=True)))
    args.visual_weights = str(moments)
    with pytest.raises(CheckpointError, match="(?s)--visual-weights .*kinetics_moments.*fix: --visual-weights expects"):
        recipe.load_pretrained(recipe.build_model(recipe.arch_of(args), 2), args)
    args.visual_weights, args.audio_arch = str(visual), "resnet10"
    with pytest.raises(CheckpointError, match="(?s)--audio-weights .*does not fit.*fix: .*ImageNet resnet10 state_dict"):
        recipe.load_pretrained(recipe.build_model(recipe.arch_of(args), 2), args)


def test_text_model_that_is_not_bert_family_stops(tmp_path, capsys):
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(SystemExit):
        parse("--preset", "mart_demo", "--method", "mart", "--text-model", str(tmp_path / "gpt"))
    err = capsys.readouterr().err
    assert "--text-model" in err and "'gpt2' is not a BERT-family" in err


def test_cten_paper_audio_branch_reads_mfcc(tiny_root):
    root, ann = tiny_root
    args = opts.parse_args(["--preset", "cten_ve8_paper", "--root", str(root), "--annotation", str(ann),
                            "--visual-depth", "10", "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16",
                            "--workers", "0", "--positive-classes", "Joy"])
    assert (args.audio_features, args.audio_arch) == ("mfcc", "resnet50")
    recipe = methods.get("cten")
    data = build_datasets(args, recipe)
    assert data["val"] is None and len(data["train"]) == 6  # the whole training split
    batch = collate_samples([data["train"][i] for i in range(2)])
    assert batch["audio"].shape == (2, 2, 100, 128)  # (B, T, frames, MFCC coefficients)
    fbank = build_datasets(opts.parse_args([*_argv_of(args), "--audio-features", "fbank"]), recipe)["train"][0]
    assert not torch.allclose(fbank["audio"], data["train"][0]["audio"])  # the flag reaches the loader
    model = recipe.build_model(recipe.arch_of(args), 2)
    out = model(video=batch["video"], audio=batch["audio"])
    assert out["logits"].shape == (2, 2) and torch.isfinite(out["logits"]).all()


def _argv_of(args):
    return ["--preset", "cten_ve8_paper", "--root", args.root, "--annotation", args.annotation, "--visual-depth", "10",
            "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16", "--workers", "0",
            "--positive-classes", "Joy"]


def test_results_and_config_record_weights_and_protocol(tiny_root, tmp_path):
    root, ann = tiny_root
    recipe = methods.get("mbt")
    tiny = parse("--preset", "mbt_ve8_official", *MBT_TINY)
    videomae = tmp_path / "videomae.pth"
    torch.save({"model": recipe.build_model(recipe.arch_of(tiny), 2).video.state_dict()}, videomae)
    argv = ["--preset", "mbt_ve8_official", "--root", str(root), "--annotation", str(ann), "--output", str(tmp_path),
            "--name", "run", *MBT_TINY, *QUICK, "--videomae-weights", str(videomae), "--allow-random-init",
            "--val-fraction", "0", "--select", "last"]
    assert run_main(argv) == 0
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert result["weights"] == config["weights"] and len(result["weights"]) == 1
    w = result["weights"][0]
    assert w["flag"] == "--videomae-weights" and w["sha256"] == hashlib.sha256(videomae.read_bytes()).hexdigest()
    assert w["initialised"] == [] and w["kept"] > 0
    protocol = result["protocol"]
    assert protocol["counts"] == {"train": 6, "val": 0, "test": 2} and protocol["select"] == "last"
    assert "whole training split" in protocol["selection"] and result["preset"] == "mbt_ve8_official"
    assert result["selected_epoch"] == 0
    # --eval-only records the evaluated checkpoint, then the files its run started from
    best = tmp_path / "run" / "best.pth"
    assert run_main([*argv[:-4], "--eval-only", "--checkpoint", str(best), "--name", "eval"]) == 0
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [w["flag"] for w in again["weights"]] == ["--checkpoint", "--videomae-weights"]
    assert again["weights"][0]["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()


def test_official_visual_scaling_runs_the_frozen_batchnorm_in_training_mode(tmp_path):
    from models.resnet3d import ResNet3D
    from models.pretrained import load_resnet3d
    args = parse("--preset", "cten_ve8_official")
    assert (args.visual_input, args.visual_bn) == ("official", "train")
    net = ResNet3D(10, "official", frozen=True, bn_train=True)
    moments = tmp_path / "km.pth"
    save_kinetics_moments(moments, random_state(hara_layout(10, 1039, counters=True)))
    load_resnet3d(moments, net)  # the releases feed their scaling to any checkpoint: accepted
    before = net.bn1.running_mean.clone()
    net.train()
    assert all(not p.requires_grad for p in net.parameters()) and net.bn1.training and not net.training
    with torch.no_grad():
        net(torch.randint(0, 256, (2, 3, 2, 16, 16), dtype=torch.uint8))
    assert not torch.equal(before, net.bn1.running_mean)  # running statistics follow the new input
    net.eval()
    assert not net.bn1.training
    frozen = ResNet3D(10, "kinetics400", frozen=True)
    frozen.train()
    assert not frozen.bn1.training  # the default keeps the checkpoint's statistics
    with pytest.raises(SystemExit):
        parse("--preset", "cten_ve8_official", "--feature-cache", str(tmp_path))
