"""tools/convert_release.py: release state_dicts (key names and shapes as the releases' model classes save them,
written out here as data) map every tensor onto the right one of the project's `_official` models, CTEN's head
computes what the release's does, bad files are refused with the keys named, and the written file evaluates."""
import json

import pytest
import torch
import torch.nn.functional as F

from core import methods
from core.restore import load_trained, read_trained
from core.run import main as run_main
from fixtures_data import make_video_root
from models.pretrained import CheckpointError
from tools import convert_release as cr

VE8 = ["Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust"]


# ---------------------------------------------------------------------------------------------- the releases' keys

def bn(prefix: str, c: int) -> dict:
    """A BatchNorm's state_dict entries as PyTorch >= 0.4.1 saves them."""
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def resnet_keys(prefix: str, kernel_dims: int, in_channels: int, conv1_kernel: tuple, block: str, counts) -> dict:
    """A ResNet held as nn.Sequential(conv1, bn1, relu, maxpool, layer1..4, avgpool): the CTEN release's `resnet`
    (Hara et al.'s 3D ResNet, shortcut B, without its fc) and `a_resnet` (torchvision's, conv1 replaced)."""
    k = lambda size: (size,) * kernel_dims  # noqa: E731
    expansion = 4 if block == "bottleneck" else 1
    keys = {f"{prefix}.0.weight": (64, in_channels, *conv1_kernel), **bn(f"{prefix}.1", 64)}
    c_in = 64
    for stage, n in enumerate(counts):
        planes = 64 * 2 ** stage
        for b in range(n):
            p = f"{prefix}.{stage + 4}.{b}"
            if block == "bottleneck":
                keys.update({f"{p}.conv1.weight": (planes, c_in, *k(1)), **bn(f"{p}.bn1", planes),
                             f"{p}.conv2.weight": (planes, planes, *k(3)), **bn(f"{p}.bn2", planes),
                             f"{p}.conv3.weight": (planes * 4, planes, *k(1)), **bn(f"{p}.bn3", planes * 4)})
            else:
                keys.update({f"{p}.conv1.weight": (planes, c_in, *k(3)), **bn(f"{p}.bn1", planes),
                             f"{p}.conv2.weight": (planes, planes, *k(3)), **bn(f"{p}.bn2", planes)})
            if b == 0 and (stage > 0 or c_in != planes * expansion):
                keys.update({f"{p}.downsample.0.weight": (planes * expansion, c_in, *k(1)),
                             **bn(f"{p}.downsample.1", planes * expansion)})
            c_in = planes * expansion
    return keys


def cten_release_keys(n_classes=8, seq_len=16, visual=("bottleneck", (3, 4, 23, 3)), audio=("basic", (2, 2, 2, 2)),
                      dim=2048, audio_width=512, inner=256) -> dict:
    """CTEN release, models/vaanet_erase.py `VAANetErase` (defaults: the release's, T = 16, 8 classes)."""
    keys = {**resnet_keys("resnet", 3, 3, (7, 7, 7), *visual), **resnet_keys("a_resnet", 2, 1, (7, 1), *audio),
            "a_fc.0.weight": (dim, audio_width), "a_fc.0.bias": (dim,), **bn("a_fc.1", dim)}
    for nl in ("nl.0", "nl_a.0"):
        keys[f"{nl}.alpha"] = (1,)
        for name in ("theta", "phi", "g"):
            keys.update({f"{nl}.{name}.weight": (inner, dim), f"{nl}.{name}.bias": (inner,)})
        keys.update({f"{nl}.out.weight": (dim, inner), f"{nl}.out.bias": (dim,), **bn(f"{nl}.bn", dim)})
    for mha in ("v2a_attn", "a2v_attn"):
        for name in "qkvo":
            keys.update({f"{mha}.linear_{name}.weight": (dim, dim), f"{mha}.linear_{name}.bias": (dim,)})
    keys.update({"ta_net.conv.0.weight": (1, 2 * dim, 1), **bn("ta_net.conv.1", 1),
                 "ta_net.fc.weight": (seq_len, seq_len), "ta_net.fc.bias": (seq_len,),
                 "fc.weight": (n_classes, 2 * dim), "fc.bias": (n_classes,)})
    return keys


def vit_block(p: str, dim: int, qv_bias: bool) -> dict:
    """A ViT block: timm's (AST, fused qkv bias) or VideoMAE's (q and v biases, none on k)."""
    bias = ({f"{p}.attn.q_bias": (dim,), f"{p}.attn.v_bias": (dim,)} if qv_bias
            else {f"{p}.attn.qkv.bias": (3 * dim,)})
    return {f"{p}.norm1.weight": (dim,), f"{p}.norm1.bias": (dim,), **bias, f"{p}.attn.qkv.weight": (3 * dim, dim),
            f"{p}.attn.proj.weight": (dim, dim), f"{p}.attn.proj.bias": (dim,), f"{p}.norm2.weight": (dim,),
            f"{p}.norm2.bias": (dim,), f"{p}.mlp.fc1.weight": (4 * dim, dim), f"{p}.mlp.fc1.bias": (4 * dim,),
            f"{p}.mlp.fc2.weight": (dim, 4 * dim), f"{p}.mlp.fc2.bias": (dim,)}


def mbt_release_keys(n_classes=8, depth=12, dim=768, n_bottleneck=32, ast_patches=12 * 9) -> dict:
    """MART release, models/mbt/MBT.py `MBT` (its `vid_model`: VanillaViT vit_base_patch16_112 with mean pooling, so
    `norm` is an Identity and `fc_norm` a LayerNorm; its `ast_model.v`: timm's DeiT-base distilled)."""
    a, v = "ast_model.v", "vid_model"
    keys = {"bottleneck": (1, n_bottleneck, dim), f"{a}.cls_token": (1, 1, dim), f"{a}.dist_token": (1, 1, dim),
            f"{a}.pos_embed": (1, 2 + ast_patches, dim), f"{a}.patch_embed.proj.weight": (dim, 1, 16, 16),
            f"{a}.patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        keys.update(vit_block(f"{a}.blocks.{i}", dim, qv_bias=False))
    keys.update({f"{a}.norm.weight": (dim,), f"{a}.norm.bias": (dim,), f"{a}.head.weight": (1000, dim),
                 f"{a}.head.bias": (1000,), f"{a}.head_dist.weight": (1000, dim), f"{a}.head_dist.bias": (1000,),
                 "ast_model.mlp_head.0.weight": (dim,), "ast_model.mlp_head.0.bias": (dim,),
                 "ast_model.mlp_head.1.weight": (527, dim), "ast_model.mlp_head.1.bias": (527,),
                 f"{v}.cls_token": (1, 1, dim), f"{v}.patch_embed.proj.weight": (dim, 3, 2, 16, 16),
                 f"{v}.patch_embed.proj.bias": (dim,)})
    for i in range(depth):
        keys.update(vit_block(f"{v}.blocks.{i}", dim, qv_bias=True))
    keys.update({f"{v}.fc_norm.weight": (dim,), f"{v}.fc_norm.bias": (dim,), f"{v}.head.weight": (1000, dim),
                 f"{v}.head.bias": (1000,)})
    for head, c in (("a_fc", n_classes), ("v_fc", n_classes), ("a_s_fc", 2), ("v_s_fc", 2)):
        keys.update({f"{head}.weight": (c, dim), f"{head}.bias": (c,)})
    return keys


# Where each release module's tensors belong (read from the releases' code; the tests' own statement of it)
CTEN_PLACES = {"resnet.0.": "visual.conv1.", "resnet.1.": "visual.bn1.", "resnet.4.": "visual.layer1.",
               "resnet.5.": "visual.layer2.", "resnet.6.": "visual.layer3.", "resnet.7.": "visual.layer4.",
               "a_resnet.0.": "audio.trunk.conv1.", "a_resnet.1.": "audio.trunk.bn1.",
               "a_resnet.4.": "audio.trunk.layer1.", "a_resnet.5.": "audio.trunk.layer2.",
               "a_resnet.6.": "audio.trunk.layer3.", "a_resnet.7.": "audio.trunk.layer4.",
               "a_fc.0.": "audio.proj.0.", "a_fc.1.": "audio.proj.1.", "nl.0.": "intra.v.", "nl_a.0.": "intra.a.",
               **{f"v2a_attn.linear_{n}.": f"inter.to_visual.{n}." for n in "qkvo"},
               **{f"a2v_attn.linear_{n}.": f"inter.to_audio.{n}." for n in "qkvo"},
               "ta_net.conv.0.": "attention.w2.", "ta_net.conv.1.": "attention.bn.", "ta_net.fc.": "attention.w1.",
               "fc.": "classifier."}
MBT_PLACES = {"vid_model.": "video.", "ast_model.v.": "audio.", "v_fc.": "head_v.", "a_fc.": "head_a.",
              "bottleneck": "bottleneck"}
MBT_IGNORED = ("vid_model.head.", "ast_model.v.head.", "ast_model.v.head_dist.", "ast_model.mlp_head.", "a_s_fc.",
               "v_s_fc.")


def expected_place(key: str, places: dict) -> str:
    (old, new), = [(o, n) for o, n in places.items() if key.startswith(o)]
    out = new + key[len(old):]
    if out.startswith("video.") and out.endswith(("attn.q_bias", "attn.v_bias")):  # VideoMAE's q/v biases
        out = out.replace("attn.", "attn.qkv.")
    return out


def numbered(keys: dict) -> dict:
    """Each tensor filled with its own number (a 0-d value expanded: no memory at full size)."""
    return {k: torch.tensor(float(i)).expand(shape) for i, (k, shape) in enumerate(keys.items())}


def meta_state(preset: str, n_classes: int, *flags) -> dict:
    args = cr.release_args(preset, "unused/classes.json", list(flags))
    recipe = methods.get(args.method)
    with torch.device("meta"):
        return recipe.build_model(recipe.arch_of(args), n_classes).state_dict()


def check_every_tensor_lands(release: dict, converted: dict, report: dict, places: dict) -> None:
    number = {int(v.reshape(-1)[0]): k for k, v in release.items()}
    landed = {}
    for key, value in converted.items():
        if key in report["filled"]:
            assert not value.any(), key
            continue
        source = number[int(value.reshape(-1)[0])]
        assert key == expected_place(source, places), (source, key)
        assert value.numel() == release[source].numel()
        landed[source] = key
    assert len(landed) == len(converted) - len(report["filled"])  # no release tensor used twice
    assert set(landed) | set(report["ignored"]) == set(release) and not set(landed) & set(report["ignored"])


# ---------------------------------------------------------------------------------------------- full key sets

def test_full_cten_release_maps_every_key_onto_cten_official():
    keys = cten_release_keys()
    assert len(keys) == 805  # as VAANetErase(...).state_dict() counts them (the release with T = 16)
    release = numbered(keys)
    own = meta_state("cten_ve8_official", 8)
    converted, report = cr.convert_state(release, own, cr.CTEN_RELEASE, "release.pth")
    assert report == {"ignored": [], "filled": []} and list(converted) == list(own)
    check_every_tensor_lands(release, converted, report, CTEN_PLACES)
    assert converted["attention.w2.weight"].shape == (1, 4096)  # the Conv1d kernel (1, 4096, 1) as a Linear's


def test_full_mart_release_maps_every_key_onto_mbt_official():
    keys = mbt_release_keys()
    assert len(keys) == 331  # as MBT(n_classes=8).state_dict() counts them
    release = numbered(keys)
    own = meta_state("mbt_ve8_official", 8)
    converted, report = cr.convert_state(release, own, cr.MBT_RELEASE, "best.ckpt")
    assert sorted(report["ignored"]) == sorted(k for k in keys if k.startswith(MBT_IGNORED))
    assert len(report["ignored"]) == 14 and report["filled"] == ["video.mask_token"]
    check_every_tensor_lands(release, converted, report, MBT_PLACES)
    q, v = converted["video.blocks.5.attn.qkv.q_bias"], converted["video.blocks.5.attn.qkv.v_bias"]
    assert torch.equal(q, release["vid_model.blocks.5.attn.q_bias"])
    assert torch.equal(v, release["vid_model.blocks.5.attn.v_bias"])


# ---------------------------------------------------------------------------------------------- CTEN's head

TINY_CTEN = ("--visual-depth", "10", "--audio-arch", "resnet10", "--seq-len", "4")


def random_release(keys: dict, seed: int = 0) -> dict:
    """Random tensors with the given shapes (BatchNorm variances positive, counters 0)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith(".weight") and len(shape) == 1:  # norm scales
            out[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[k] = 0.05 * torch.randn(shape, generator=g)
    return out


def release_head(sd: dict, fv: torch.Tensor, fa: torch.Tensor, order: str = "va") -> tuple:
    """The CTEN release's VAANetErase after its two backbones, eval mode, written from its forward with its keys:
    (B, T, D) segment features -> (logits, temporal attention). `order` 'av' gives the [audio, visual] control."""
    def lin(x, p):
        return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])

    def norm(x, p):
        return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])

    def nonlocal_block(x, p):
        b, t, d = x.shape
        s = torch.softmax(lin(x, f"{p}.theta") @ lin(x, f"{p}.phi").transpose(1, 2) / 256 ** 0.5, dim=-1)
        z = norm(lin(s @ lin(x, f"{p}.g"), f"{p}.out").reshape(b * t, d), f"{p}.bn").view(b, t, d)
        return z + sd[f"{p}.alpha"] * x

    def attention(q, kv, p, heads=8):
        q, k, v = (F.relu(lin(x, f"{p}.linear_{n}")).unflatten(-1, (heads, -1)).transpose(1, 2)
                   for x, n in ((q, "q"), (kv, "k"), (kv, "v")))
        y = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v
        return F.relu(lin(y.transpose(1, 2).flatten(2), f"{p}.linear_o"))

    v, a = nonlocal_block(fv, "nl.0"), nonlocal_block(fa, "nl_a.0")
    streams = {"v": v + attention(a, v, "v2a_attn"), "a": a + attention(v, a, "a2v_attn")}
    joint = torch.cat([streams[m] for m in order], dim=-1).transpose(1, 2)  # (B, 2D, T)
    h = torch.tanh(norm(F.conv1d(joint, sd["ta_net.conv.0.weight"]), "ta_net.conv.1")).squeeze(1)  # (B, T)
    att = F.relu(lin(h, "ta_net.fc"))
    return lin((joint * att[:, None]).mean(dim=2), "fc"), att


def relative(x: torch.Tensor, y: torch.Tensor) -> float:
    return ((x - y).norm() / y.norm()).item()


def test_converted_cten_head_computes_the_releases_head():
    keys = cten_release_keys(n_classes=3, seq_len=4, visual=("basic", (1, 1, 1, 1)), audio=("basic", (1, 1, 1, 1)),
                             dim=512)
    release = random_release(keys)
    args = cr.release_args("cten_ve8_official", "unused/classes.json", list(TINY_CTEN))
    recipe = methods.get("cten")
    model = recipe.build_model(recipe.arch_of(args), 3).eval()
    converted, _ = cr.convert_state(release, model.state_dict(), cr.CTEN_RELEASE, "release.pth")
    model.load_state_dict(converted)
    g = torch.Generator().manual_seed(1)
    fv, fa = torch.randn(2, 4, 512, generator=g), torch.randn(2, 4, 512, generator=g)
    with torch.no_grad():
        out = model.head(fv, fa)
    logits, att = release_head(release, fv, fa)
    assert att.min() == 0 < att.max()  # some segments attended, some not: the comparison sees the ReLU
    assert relative(out["logits"], logits) < 1e-5 and relative(out["att_v"], att) < 1e-5
    # the trap: the same weights read as [audio, visual] give another network
    swapped_logits, swapped_att = release_head(release, fv, fa, order="av")
    assert relative(swapped_logits, logits) > 0.1 and relative(swapped_att, att) > 0.1


# ---------------------------------------------------------------------------------------------- refusals

def test_missing_unexpected_and_misshaped_keys_are_refused_with_the_file_named():
    release = numbered(cten_release_keys())
    own = meta_state("cten_ve8_official", 8)
    broken = {k: v for k, v in release.items() if k != "nl_a.0.alpha"}
    broken["extra.weight"] = torch.zeros(3)
    broken["ta_net.fc.weight"] = torch.zeros(12, 12)
    with pytest.raises(CheckpointError) as e:
        cr.convert_state(broken, own, cr.CTEN_RELEASE, "cten_release.pth")
    msg = str(e.value)
    assert "cten_release.pth" in msg and "1 missing keys" in msg and "intra.a.alpha" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "ta_net.fc.weight (12, 12) -> attention.w1.weight (16, 16)" in msg and "--seq-len" in msg


def test_a_file_of_the_other_release_names_the_right_preset():
    with pytest.raises(CheckpointError, match="looks like a MART release"):
        cr.convert_state(numbered(mbt_release_keys()), meta_state("cten_ve8_official", 8), cr.CTEN_RELEASE, "x.pth")
    with pytest.raises(CheckpointError, match="looks like a CTEN release"):
        cr.convert_state(numbered(cten_release_keys()), meta_state("mbt_ve8_official", 8), cr.MBT_RELEASE, "x.pth")


def test_class_count_and_preset_are_checked(tmp_path):
    ann = tmp_path / "two.json"
    ann.write_text(json.dumps({"labels": ["Anger", "Joy"], "database": {}}))
    path = tmp_path / "release.pth"
    torch.save(random_release(cten_release_keys(n_classes=8, seq_len=4, visual=("basic", (1, 1, 1, 1)),
                                                audio=("basic", (1, 1, 1, 1)), dim=512)), path)
    with pytest.raises(CheckpointError, match="8-class classifier, but .*two.json lists 2 classes"):
        cr.convert(path, "cten_ve8_official", ann, tmp_path / "out.pth", TINY_CTEN)
    with pytest.raises(ValueError, match="not one of the release presets"):
        cr.convert(path, "cten_demo", ann, tmp_path / "out.pth", TINY_CTEN)


# ---------------------------------------------------------------------------------------------- the written file

def test_converted_cten_checkpoint_evaluates_with_eval_only(tmp_path):
    root = tmp_path / "data"
    ann = make_video_root(root, classes=("Anger", "Joy"), train_per_class=1, test_per_class=1, n_frames=8,
                          seconds=1.0, srt=False)
    keys = cten_release_keys(n_classes=2, seq_len=2, visual=("basic", (1, 1, 1, 1)), audio=("basic", (1, 1, 1, 1)),
                             dim=512)
    release = random_release(keys)
    path = tmp_path / "release.pth"
    torch.save({"module." + k: v for k, v in release.items()}, path)  # as DataParallel saves it
    out = tmp_path / "converted" / "best.pth"
    flags = ["--visual-depth", "10", "--audio-arch", "resnet10", "--seq-len", "2", "--snippet-duration", "2",
             "--sample-size", "16", "--positive-classes", "Joy"]
    assert cr.main([str(path), "--preset", "cten_ve8_official", "--annotation", str(ann), "--out", str(out),
                    "--", *flags]) == 0
    state = read_trained(out)
    assert state["method"] == "cten" and state["labels"] == ["Anger", "Joy"] and state["stage"] == ""
    assert state["arch"]["temporal_attention"] == "joint" and state["arch"]["seq_len"] == 2
    assert state["converted_from"]["path"] == str(path.resolve()) and len(state["converted_from"]["sha256"]) == 64
    model, *_ = load_trained(out, torch.device("cpu"))
    assert torch.equal(model.classifier.weight, release["fc.weight"])
    assert run_main(["--preset", "cten_ve8_official", "--root", str(root), "--annotation", str(ann), "--eval-only",
                     "--checkpoint", str(out), "--workers", "0", "--no-progress", "--output", str(tmp_path),
                     "--name", "eval", "--vis-videos", "0", "--positive-classes", "Joy"]) == 0
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert result["n_test_videos"] == 2 and result["weights"][0]["flag"] == "--checkpoint"


@pytest.mark.parametrize("preset, method, stage", [("mbt_ve8_official", "mbt", ""),
                                                   ("mart_ve8_official", "mart", "stage2")])
def test_converted_mart_release_loads_as_mbt_and_as_mart_stage2(tmp_path, preset, method, stage):
    ann = tmp_path / "ve8.json"
    ann.write_text(json.dumps({"labels": VE8, "database": {}}))
    release = random_release(mbt_release_keys(n_classes=8, depth=2, dim=32, n_bottleneck=4))
    path = tmp_path / "best.ckpt"
    torch.save(release, path)
    out = tmp_path / "converted.pth"
    flags = ["--mbt-depth", "2", "--mbt-width", "32", "--mbt-heads", "2", "--n-bottleneck", "4", "--fusion-layer", "1",
             "--sample-size", "32", "--snippet-duration", "4"]
    report = cr.convert(path, preset, ann, out, flags)
    assert report["method"] == method and report["stage"] == stage and report["filled"] == ["video.mask_token"]
    model, _, args, labels, state = load_trained(out, torch.device("cpu"))
    assert type(model).__name__ == "MBT" and state["stage"] == stage and labels == VE8
    assert torch.equal(model.head_a.weight, release["a_fc.weight"])
    assert torch.equal(model.video.blocks[1].attn.qkv.v_bias, release["vid_model.blocks.1.attn.v_bias"])
    assert args.video_scaling == "official" and args.freeze_audio_early
