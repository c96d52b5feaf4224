"""CTEN's frozen audio trunk (--freeze-audio, paper Sec. 4.2), its resized input (--audio-resize) and its features
in the feature cache (tools/extract_features.py --freeze-audio, datasets/feature_cache.py `audio_lookup`)."""
import json
import shutil

import numpy as np
import pytest
import torch

import opts
from core import methods
from core.data import build_datasets, make_loader
from core.distributed import DistInfo
from core.engine import TrainContext, train_one_epoch
from core.log import RunLogger
from core.methods.base import StageContext
from core.train import build_optimizer
from datasets.video_emotion import collate_samples
from datasets.errors import DataError
from datasets.feature_cache import FeatureCache, audio_expectation, cache_expectation
from fixtures_data import make_video_root
from models.audio_resnet import AudioResNet
from models.cten import CTEN
from tools.extract_features import main as extract_main

L, S, F = 2, 16, 20
RUN = ["--preset", "cten_demo", "--seq-len", "3", "--snippet-duration", str(L), "--sample-size", str(S),
       "--batch-size", "2", "--workers", "0", "--val-fraction", "0", "--no-progress", "--optimizer", "sgd", "--lr", "0.1",
       "--audio-first-conv", "imagenet", "--audio-resize", "24", "--audio-features", "fbank", "--audio-frames", str(F),
       "--freeze-audio", "--amp", "none", "--seed", "3"]


@pytest.fixture(scope="module")
def audio_cache(tmp_path_factory):
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("audio_cache")
    ann = make_video_root(base / "root", train_per_class=2, test_per_class=1, n_frames=10, seconds=0.7, srt=False)
    common = [*RUN, "--root", str(base / "root"), "--annotation", str(ann)]
    out = base / "cache"
    assert extract_main([*common, "--out", str(out), "--stride", "4", "--audio-stride", "1", "--crops", "centre",
                         "--chunk", "8"]) == 0
    weights = ["--visual-weights", str(out / "backbone_random_init.pth"),
               "--audio-weights", str(out / "audio_random_init.pth")]
    return base, ann, out, [*common, *weights]


def test_frozen_trunk_stays_fixed_and_in_eval_mode_while_the_projection_trains():
    torch.manual_seed(0)
    net = AudioResNet("resnet10", 8, "imagenet", resize=24, frozen=True).train()
    assert not net.trunk.training and net.proj.training
    assert all(not p.requires_grad for p in net.trunk.parameters())
    assert all(p.requires_grad for p in net.proj.parameters())
    stats = {k: v.clone() for k, v in net.trunk.state_dict().items()}
    seen = []
    net.trunk.conv1.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    net(torch.randn(2, 3, F, 12)).sum().backward()  # (B, T, F, M)
    assert seen == [(24, 24)]  # resized to N x N before the trunk
    for k, v in net.trunk.state_dict().items():  # running statistics untouched by a training-mode forward
        assert torch.equal(v, stats[k]), k
    model = CTEN(3, 3, modalities="a", inter=False, audio_arch="resnet10", audio_first_conv="imagenet",
                 freeze_audio=True)
    trained = {id(p) for p in model.trainable_parameters()}
    assert not trained & {id(p) for p in model.audio.trunk.parameters()}
    assert {id(p) for p in model.audio.proj.parameters()} <= trained
    unfrozen = CTEN(3, 3, modalities="a", inter=False, audio_arch="resnet10", audio_first_conv="imagenet")
    assert {id(p) for p in unfrozen.audio.trunk.parameters()} <= {id(p) for p in unfrozen.trainable_parameters()}


def run_args(audio_cache, *extra):
    return opts.parse_args([*audio_cache[3], *extra])


def build(args):
    recipe = methods.get("cten")
    data = build_datasets(args, recipe)
    torch.manual_seed(args.seed)
    model = recipe.build_model(recipe.arch_of(args), len(data["train"].labels))
    recipe.load_pretrained(model, args)
    method = recipe.stages(args)[-1].method(args, StageContext(torch.tensor([-1, 1]), data["train"]))
    return data, model, method


def test_cached_audio_features_equal_the_trunk_on_the_samples_windows(audio_cache):
    args = run_args(audio_cache)
    plain, model, _ = build(args)
    cached, _, _ = build(run_args(audio_cache, "--feature-cache", str(audio_cache[2])))
    model.eval()
    for subset in ("train", "test"):  # random windows (same draws) and centred ones
        for i in range(len(plain[subset])):
            torch.manual_seed(10 + i)
            a = plain[subset][i]
            torch.manual_seed(10 + i)
            c = cached[subset][i]
            assert "audio" not in c and c["audio_feats"].shape == (3, model.audio.trunk_dim)
            with torch.no_grad():
                want = model.audio_trunk_features(a["audio"][None])[0]  # (T, W)
            torch.testing.assert_close(c["audio_feats"], want, rtol=2e-3, atol=2e-3)  # float16 storage


def one_epoch(args, tmp):
    data, model, method = build(args)
    opt = build_optimizer(args, model.trainable_parameters())
    ctx = TrainContext(device=torch.device("cpu"), logger=RunLogger(tmp, enabled=False), amp="none", progress=False,
                       log_every=10 ** 9)
    logs = train_one_epoch(model, method, make_loader(data["train"], args, DistInfo(), train=True), opt, ctx, 0)
    return model, logs


def test_training_from_cached_audio_matches_training_from_windows(audio_cache, tmp_path):
    """Audio alone (--modalities a --no-inter): every input of the step is the same with and without the cache, up to
    the cache's float16 storage (with the visual stream, the cache's stored crops stand in for the frames' random
    rotation and brightness, so only this setting is exactly comparable)."""
    extra = ["--modalities", "a", "--no-inter"]
    plain, logs_p = one_epoch(run_args(audio_cache, *extra), tmp_path)
    cached, logs_c = one_epoch(run_args(audio_cache, *extra, "--feature-cache", str(audio_cache[2])), tmp_path)
    for (name, p), q in zip(plain.state_dict().items(), cached.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=5e-3, atol=5e-3, msg=name)
    for key in ("loss_o", "loss_k", "loss_l", "keyframe_fraction"):
        assert logs_c[key] == pytest.approx(logs_p[key], rel=5e-3, abs=1e-4), key


def test_a_run_without_the_frozen_trunk_reads_raw_audio_from_the_same_cache(audio_cache):
    data, _, _ = build(run_args(audio_cache, "--no-freeze-audio", "--feature-cache", str(audio_cache[2])))
    sample = data["test"][0]
    assert "audio" in sample and "audio_feats" not in sample


def test_stale_or_missing_audio_features_are_refused(audio_cache, tmp_path):
    base, ann, out, _ = audio_cache
    weights = out / "audio_random_init.pth"
    audio = audio_expectation("resnet10", "imagenet", 24, "fbank", F, weights)
    expect = cache_expectation(ann, 10, "kinetics400", L, S, out / "backbone_random_init.pth", audio=audio)
    FeatureCache(out, expect=expect)
    for field, value in (("audio_resize", 224), ("audio_arch", "resnet50"), ("audio_features", "mfcc"),
                         ("audio_frames", 100)):
        with pytest.raises(DataError, match=rf"stale feature cache: {field} is .* in the cache but this run expects "
                                            rf"{value!r}"):
            FeatureCache(out, expect=dict(expect, **{field: value}))
    with pytest.raises(DataError, match="stale feature cache: audio_sha256 is '[0-9a-f]+' in the cache but this run "
                                        "expects 'random-init'.*--audio-weights .*audio_random_init.pth"):
        FeatureCache(out, expect=dict(expect, audio_sha256="random-init"))
    cache = FeatureCache(out, expect=expect)
    with pytest.raises(DataError, match="'anger_0' had .* audio frames when cached, 5 now"):
        cache.audio_lookup("anger_0", torch.tensor([0]), 5)
    # a cache extracted without --freeze-audio
    manifest = json.loads((out / "manifest.json").read_text())
    visual_only = tmp_path / "visual_only"
    shutil.copytree(out, visual_only)
    (visual_only / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items()
                                                           if not k.startswith("audio_")}))
    with pytest.raises(DataError, match="holds no audio features.*--freeze-audio"):
        FeatureCache(visual_only, expect=expect)
    # a damaged audio file
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    np.save(damaged / "audio" / "anger_0.npy", np.zeros((3, 4), np.float16))
    with pytest.raises(DataError, match=r"anger_0\.npy.*cached features are float16 \(3, 4\)"):
        FeatureCache(damaged, expect=expect).audio_lookup("anger_0", torch.tensor([0]),
                                                          manifest["videos"]["anger_0"]["audio_period"])


@pytest.mark.parametrize("extra,match", [
    (["--feature-cache", "C", "--spec-augment"], "--spec-augment masks the input"),
    (["--feature-cache", "C", "--audio-first-conv", "official"], "--audio-first-conv official starts its first conv"),
    (["--audio-resize", "-1"], "--audio-resize -1"),
])
def test_settings_no_run_can_use_are_refused_at_parse_time(audio_cache, extra, match, capsys):
    with pytest.raises(SystemExit):
        run_args(audio_cache, *extra)
    assert match in capsys.readouterr().err


def test_features_past_float16_are_refused_at_extraction(tmp_path):
    from tools.extract_features import to_float16

    assert to_float16(np.ones((2, 3), np.float32), tmp_path / "x.npy", "3D ResNet").dtype == np.float16
    with pytest.raises(DataError, match=r"x\.npy.*3D ResNet's features reach 7e\+05, past float16's range"):
        to_float16(np.full((2, 3), 7e5, np.float32), tmp_path / "x.npy", "3D ResNet")


def test_both_flags_on_the_paper_preset_train_only_the_heads_and_projection(audio_cache):
    """cten_ve8_paper's audio (ResNet-50 on MFCC, the ImageNet first conv) with --freeze-audio --audio-resize 224: one
    training step leaves the audio trunk and its BatchNorm statistics as they were, and the trunk sees 224 x 224."""
    base, ann = audio_cache[:2]
    args = opts.parse_args(["--preset", "cten_ve8_paper", "--root", str(base / "root"), "--annotation", str(ann),
                            "--visual-depth", "10", "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16",
                            "--batch-size", "2", "--workers", "0", "--freeze-audio", "--audio-resize", "224",
                            "--amp", "none", "--modalities", "a", "--no-inter"])
    assert (args.audio_arch, args.audio_features, args.audio_first_conv, args.visual_input) == (
        "resnet50", "mfcc", "imagenet", "kinetics400")
    data, model, method = build(args)
    trunk = {k: v.clone() for k, v in model.audio.trunk.state_dict().items()}
    seen = []
    model.audio.trunk.conv1.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    batch = collate_samples([data["train"][i] for i in range(2)])
    model.train()
    loss, _ = method.train_step(model, batch, 0)
    loss.backward()
    assert seen == [(224, 224)]  # the trunk ran once (x_o), its features gathered for x_k and x_l
    assert all(p.grad is None for p in model.audio.trunk.parameters())
    assert model.audio.proj[0].weight.grad is not None and model.classifier.weight.grad is not None
    for k, v in model.audio.trunk.state_dict().items():
        assert torch.equal(v, trunk[k]), k
