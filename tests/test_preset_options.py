"""The options the presets name: --view-passes (the release's separate passes vs one stacked batch),
--mart-stage2-start (the release's student start vs the EMA teacher), --ast-early-fp16 (a no-op on CPU)."""
import copy

import pytest
import torch
import torch.nn.functional as F

import core.run
import core.train
from core.methods.cten import CTENMethod
from core.methods.mart import stage2_optimizer_state
from fixtures_data import make_video_root
from test_mart_stages import TINY

B, T = 4, 4


def tiny_cten():
    from models.cten import CTEN
    torch.manual_seed(0)
    # BatchNorms in the non-local block (release init) and in the joint attention; no dropout
    return CTEN(3, T, modalities="v", inter=False, temporal_attention="joint", nonlocal_init="official",
                visual_depth=10, dropout=0.0)


def view_step(model, passes: str) -> tuple:
    torch.manual_seed(1)
    batch = {"visual_feats": torch.randn(B, T, 512) * 3 + 1, "label": torch.tensor([0, 1, 2, 0])}
    method = CTENMethod(F.cross_entropy, views="reuse", rule="official", view_passes=passes)
    _, logs = method.train_step(model, batch, epoch=0)
    return logs, {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}


def test_separate_view_passes_differ_from_stacked_in_training_and_agree_in_eval():
    base = tiny_cten()
    train_s, run_s = view_step(copy.deepcopy(base).train(), "stacked")
    train_p, run_p = view_step(copy.deepcopy(base).train(), "separate")
    assert train_s["loss_o"] == pytest.approx(train_p["loss_o"])  # x_o is the same pass in both
    assert train_s["loss_k"] != pytest.approx(train_p["loss_k"], rel=1e-4)  # per-view batch statistics
    assert any(not torch.allclose(run_s[k], run_p[k]) for k in run_s)  # running statistics see other batches
    eval_s, _ = view_step(copy.deepcopy(base).eval(), "stacked")
    eval_p, _ = view_step(copy.deepcopy(base).eval(), "separate")
    for key in ("loss_o", "loss_k", "loss_l"):
        assert eval_s[key] == pytest.approx(eval_p[key], rel=1e-5)
    with pytest.raises(ValueError, match="view passes 'both'"):
        CTENMethod(F.cross_entropy, view_passes="both")


def test_ast_early_fp16_changes_nothing_on_cpu():
    from test_mbt import inputs, tiny_mbt
    video, audio = inputs()
    plain = tiny_mbt(fusion_layer=2)
    fp16 = tiny_mbt(fusion_layer=2, ast_early_fp16=True)
    torch.testing.assert_close(fp16(video, audio)["logits"], plain(video, audio)["logits"], rtol=0, atol=0)


def test_stage2_optimizer_state_keeps_the_backbone_entries():
    state = {"mbt.head_v.weight": {"step": torch.tensor(3.0)}, "decoder.x": {"step": torch.tensor(3.0)}}
    assert list(stage2_optimizer_state(state)) == ["head_v.weight"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_start")
    ann = make_video_root(root, classes=("Anger", "Joy"), train_per_class=4, test_per_class=1, n_frames=8, seconds=1.0)
    return root, ann


def test_student_start_goes_on_with_stage1_adam_and_no_stage1_ema(tiny_root, tmp_path, monkeypatch):
    root, ann = tiny_root
    emas, starts = [], []
    prepare, train_one_epoch = core.train.prepare, core.train.train_one_epoch

    def spy_prepare(args, model, ctx, epochs, ema=True):
        out = prepare(args, model, ctx, epochs, ema=ema)
        emas.append(ctx.ema is not None)
        return out

    def spy_epoch(model, method, loader, optimizer, ctx, epoch, *rest):
        starts.append({n: {k: v.clone() for k, v in optimizer.state[p].items()}
                       for n, p in model.named_parameters() if p in optimizer.state})
        return train_one_epoch(model, method, loader, optimizer, ctx, epoch, *rest)

    monkeypatch.setattr(core.train, "prepare", spy_prepare)
    monkeypatch.setattr(core.train, "train_one_epoch", spy_epoch)
    argv = [*TINY, "--root", str(root), "--annotation", str(ann), "--output", str(tmp_path), "--name", "s",
            "--mart-stage2-start", "student", "--ema-decay", "0.99"]
    assert core.run.main(argv) == 0
    assert emas == [False, True]  # no EMA in stage 1; stage 2 keeps one (evaluated, as the release)
    assert starts[0] == {}  # stage 1: a fresh Adam
    stage1 = torch.load(tmp_path / "s" / "stage1" / "last.pth", weights_only=False)
    carried = stage2_optimizer_state(stage1["optimizer_by_name"])
    assert set(starts[1]) == set(carried) - {"video.mask_token"}  # every backbone parameter stage 2 trains
    for name, state in starts[1].items():  # stage 2's first step continues stage 1's Adam moments and step count
        for k, v in state.items():
            torch.testing.assert_close(v, carried[name][k].to(v.device))
    # and starts from the student (stage 1's best.pth holds the student when no EMA is kept)
    best1 = torch.load(tmp_path / "s" / "stage1" / "best.pth", weights_only=False)["model"]
    last1 = stage1["model"]
    assert all(torch.equal(best1[k], last1[k]) for k in best1)
