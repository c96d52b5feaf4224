"""CTEN's three-view step (core/methods/cten.py) checked on what it feeds the network: a stub network records every
input, so the tests see which frames and which audio segments make x_k and x_l, and how the three losses combine.
Also: the joint temporal attention reads both streams, and model selection never sees the test split."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import core.run
import core.train
from core.methods.cten import CTENMethod
from fixtures_data import make_video_root

B, T, L, N_FRAMES, C = 2, 6, 4, 60, 3
KEYFRAMES = ({1, 2}, {4})  # per video, what the stub's attention makes the erasing rule pick


class RecordingNet(nn.Module):
    """Stands in for CTEN: visual 'features' are the frame indices of each snippet (B, T, L), audio passes through;
    the attention is fixed, the logits a linear map of the inputs (so every view has its own loss)."""
    modalities = "av"

    def __init__(self, att: torch.Tensor):
        super().__init__()
        self.att = att
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, C))
        self.calls = []

    def visual_features(self, video):  # uint8 (B, T, 3, L, 1, 1) holding frame indices -> (B, T, L)
        return video[:, :, 0, :, 0, 0].float()

    def forward(self, visual_feats=None, audio=None):
        self.calls.append({"visual": visual_feats.detach().clone(), "audio": audio.detach().clone()})
        score = visual_feats.mean(dim=(1, 2)) / N_FRAMES + audio.mean(dim=(1, 2, 3)) / 100  # (B,)
        logits = score[:, None] * self.w[None, :] * 4  # (B, C)
        n = visual_feats.shape[0] // self.att.shape[0]
        return {"logits": logits, "att_v": self.att.repeat(n, 1), "att_a": self.att.repeat(n, 1)}


def frames_as_video(frame_indices: torch.Tensor) -> torch.Tensor:
    """(..., T, L) frame indices -> uint8 (..., T, 3, L, 1, 1) the stub decodes back."""
    return frame_indices[..., None, :, None, None].expand(*frame_indices.shape[:-1], 3, L, 1, 1).to(torch.uint8)


def make_batch():
    bounds = torch.stack([torch.arange(T) * 10, torch.arange(T) * 10 + 10], dim=1)  # (T, 2) segments of 10 frames
    fi = bounds[:, :1] + 3 + torch.arange(L)  # (T, L) the original snippets
    audio = torch.arange(B * T, dtype=torch.float32).view(B, T, 1, 1).expand(B, T, 2, 5).clone()  # id per segment
    return {"video": frames_as_video(fi.expand(B, T, L)), "audio": audio, "label": torch.tensor([0, 2]),
            "n_frames": torch.full((B,), N_FRAMES), "seg_bounds": bounds.expand(B, T, 2).clone(),
            "frame_indices": fi.expand(B, T, L).clone(), "index": torch.arange(B), "aug": torch.zeros(B, 8)}


def attention():
    att = torch.zeros(B, T)
    for b, keys in enumerate(KEYFRAMES):
        att[b, sorted(keys)] = 1.0
    return att


def step(views="resample", rule="joint", reduction="sum", erase_audio=True):
    net = RecordingNet(attention())
    method = CTENMethod(F.cross_entropy, rule=rule, views=views, reduction=reduction, erase_audio=erase_audio,
                        read_frames=lambda index, fi, aug: frames_as_video(fi))
    loss, logs = method.train_step(net, make_batch(), epoch=0)
    assert len(net.calls) == 2  # x_o, then x_k and x_l as one batch of 2B
    views_in = net.calls[1]
    return net, loss, logs, {"k": {m: x[:B] for m, x in views_in.items()}, "l": {m: x[B:] for m, x in views_in.items()}}


def segment_of(frames: torch.Tensor) -> torch.Tensor:
    return frames.long() // 10  # the demo bounds: segment s holds frames [10 s, 10 s + 10)


@pytest.mark.parametrize("views", ["resample", "reuse"])
def test_keyframe_view_holds_only_keyframes_and_context_view_only_context(views):
    _, _, logs, x = step(views)
    for b, keys in enumerate(KEYFRAMES):
        context = set(range(T)) - keys
        seen_k = set(segment_of(x["k"]["visual"][b]).flatten().tolist())
        seen_l = set(segment_of(x["l"]["visual"][b]).flatten().tolist())
        assert seen_k == keys, (b, seen_k)  # only keyframes, and every keyframe
        assert seen_l == context, (b, seen_l)
    assert logs["empty_key_views"] == 0 and logs["empty_context_views"] == 0
    assert logs["keyframe_fraction"] == pytest.approx(3 / (B * T))


@pytest.mark.parametrize("views", ["resample", "reuse"])
def test_audio_follows_the_segments_of_the_visual_snippets(views):
    _, _, _, x = step(views)
    for name in ("k", "l"):
        audio_seg = x[name]["audio"][:, :, 0, 0].long() % T  # (B, T) the original segment each view segment heard
        visual_seg = segment_of(x[name]["visual"][:, :, L // 2])  # (B, T) the segment of each snippet's centre
        assert torch.equal(audio_seg, visual_seg), name
        assert torch.equal(x[name]["audio"][:, :, 0, 0].long() // T, torch.arange(B)[:, None].expand(B, T))


def test_no_erase_audio_keeps_audio_whole():
    _, _, _, x = step(erase_audio=False)
    original = make_batch()["audio"]
    assert torch.equal(x["k"]["audio"], original) and torch.equal(x["l"]["audio"], original)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_combines_the_three_views_as_configured(reduction):
    net, loss, logs, _ = step(reduction=reduction)
    labels = make_batch()["label"]
    per_view = []
    for call, part in ((net.calls[0], slice(None)), (net.calls[1], slice(0, B)), (net.calls[1], slice(B, 2 * B))):
        visual, audio = call["visual"][part], call["audio"][part]
        score = visual.mean(dim=(1, 2)) / N_FRAMES + audio.mean(dim=(1, 2, 3)) / 100
        per_view.append(F.cross_entropy(score[:, None] * net.w[None, :] * 4, labels))
    assert len({round(v.item(), 6) for v in per_view}) == 3  # three different views, three different losses
    total = sum(per_view) / (3 if reduction == "mean" else 1)
    assert loss.item() == pytest.approx(total.item(), rel=1e-6)
    assert [logs[k] for k in ("loss_o", "loss_k", "loss_l")] == pytest.approx([v.item() for v in per_view])
    expected, = torch.autograd.grad(total, net.w)
    loss.backward()  # every view's loss reaches the weights, none is detached
    torch.testing.assert_close(net.w.grad, expected)


def test_without_erasing_only_the_original_view_trains():
    net = RecordingNet(attention())
    method = CTENMethod(F.cross_entropy, erase=False, read_frames=lambda index, fi, aug: frames_as_video(fi))
    loss, logs = method.train_step(net, make_batch(), epoch=0)
    assert len(net.calls) == 1 and loss.item() == pytest.approx(logs["loss_o"]) and "loss_k" not in logs


def test_joint_attention_reads_both_streams():
    from models.cten import CTEN
    torch.manual_seed(0)
    model = CTEN(4, T, temporal_attention="joint", intra=False, inter=False, visual_depth=10).eval()
    feats = {"v": torch.randn(2, T, 512), "a": torch.randn(2, T, 512)}
    out = model.head(feats["v"], feats["a"])
    att = model.attention
    joint = torch.cat([feats[m] for m in model.streams], dim=-1)  # (B, T, 1024) [v, a], the model's order
    scores = torch.tanh(att.bn(att.w2(joint).transpose(1, 2))).squeeze(1)  # (B, T)
    torch.testing.assert_close(out["att_v"], torch.relu(att.w1(scores)))
    assert torch.equal(out["att_v"], out["att_a"])
    for i, moved in enumerate(model.streams):  # each stream alone moves the shared attention
        other = dict(feats)
        other[moved] = feats[moved].clone()
        other[moved][:, 3] += 5 * torch.sign(att.w2.weight[0, 512 * i:512 * (i + 1)])
        assert not torch.allclose(model.head(other["v"], other["a"])["att_v"], out["att_v"]), moved
    pooled = (joint * out["att_v"][..., None]).mean(dim=1)  # one attention pools both streams
    torch.testing.assert_close(out["logits"], model.classifier(pooled))


def test_model_selection_never_sees_the_test_split(tmp_path, monkeypatch):
    root = tmp_path / "data"
    ann = make_video_root(root, classes=("Anger", "Joy"), train_per_class=4, test_per_class=2, n_frames=8, seconds=1.0)
    seen = []
    real = core.run.predict_all

    def spy(model, method, loader, ctx, desc="eval"):
        records = real(model, method, loader, ctx, desc)
        seen.append((desc, {r["video_id"] for r in records}))
        return records

    monkeypatch.setattr(core.run, "predict_all", spy)  # the test evaluation
    monkeypatch.setattr(core.train, "predict_all", spy)  # the validation during training
    argv = ["--preset", "cten_demo", "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16",
            "--batch-size", "2", "--workers", "0", "--val-fraction", "0.25", "--select", "val", "--no-progress", "--epochs", "2",
            "--positive-classes", "Joy", "--vis-videos", "0", "--root", str(root), "--annotation", str(ann),
            "--output", str(tmp_path / "runs"), "--name", "sel"]
    assert core.run.main(argv) == 0
    test_ids = {"anger_4", "anger_5", "joy_4", "joy_5"}
    assert [d for d, _ in seen] == ["val", "val", "test"]  # the test split once, after selection
    assert seen[-1][1] == test_ids
    for _, ids in seen[:-1]:
        assert ids and not ids & test_ids


def test_cten_eval_seq_len_other_than_seq_len_stops_with_a_message(capsys):
    import opts
    with pytest.raises(SystemExit):
        opts.parse_args(["--preset", "cten_demo", "--eval-seq-len", "8"])
    assert "--eval-seq-len 8 must equal --seq-len 6" in capsys.readouterr().err
    assert opts.parse_args(["--preset", "mbt_demo", "--eval-seq-len", "8"]).eval_seq_len == 8  # MBT has no W1
