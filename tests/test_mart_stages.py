"""main.py's MART run (core/run.py): what each stage's optimiser covers, and where stage 2 starts."""
import pytest
import torch

import core.run
import core.train
from fixtures_data import make_video_root

TINY = ["--preset", "mart_demo", "--method", "mart", "--seq-len", "3", "--snippet-duration", "2", "--sample-size", "16",
        "--batch-size", "2", "--workers", "0", "--val-fraction", "0", "--select", "last", "--no-progress", "--positive-classes", "Joy",
        "--mbt-depth", "2", "--mbt-width", "16", "--mbt-heads", "2", "--n-bottleneck", "4", "--fusion-layer", "1",
        "--decoder-width", "16", "--decoder-depth", "1", "--decoder-heads", "2", "--comp-heads", "2",
        "--stage1-epochs", "1", "--epochs", "1", "--vis-videos", "0"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_mart")
    ann = make_video_root(root, classes=("Anger", "Joy"), train_per_class=4, test_per_class=1, n_frames=8, seconds=1.0)
    return root, ann


def test_each_stage_optimises_exactly_its_trainable_parameters_and_stage2_starts_from_stage1(
        tiny_root, tmp_path, monkeypatch):
    root, ann = tiny_root
    fits, optimisers = [], []
    fit, build_optimizer = core.run.fit, core.train.build_optimizer

    def spy_fit(args, model, *a, **kw):
        fits.append((kw["record"]["stage"], model, {k: v.detach().clone() for k, v in model.state_dict().items()},
                     {id(p) for p in model.parameters() if p.requires_grad}))  # the stage's trainable set
        return fit(args, model, *a, **kw)

    def spy_optimizer(args, params):
        optimisers.append(list(params))
        return build_optimizer(args, optimisers[-1])

    monkeypatch.setattr(core.run, "fit", spy_fit)
    monkeypatch.setattr(core.train, "build_optimizer", spy_optimizer)
    argv = [*TINY, "--root", str(root), "--annotation", str(ann), "--output", str(tmp_path), "--name", "m",
            "--freeze-audio-early"]
    assert core.run.main(argv) == 0
    assert [k for k, *_ in fits] == ["stage1", "stage2"] and len(optimisers) == 2
    for (kind, model, _, want), params in zip(fits, optimisers):
        assert len(params) == len(want) and {id(p) for p in params} == want, kind
    # the video mask token trains in stage 1 (masked modelling) only: stage 2 never uses it (DDP)
    assert id(fits[0][1].mbt.video.mask_token) in fits[0][3]
    assert id(fits[1][1].video.mask_token) not in fits[1][3]
    stage1, stage2 = fits[0][1], fits[1][1]
    names1 = {n for n, p in stage1.named_parameters() if p.requires_grad}
    assert any(n.startswith("decoder.") for n in names1) and any(n.startswith("comp.") for n in names1)
    assert "text.proj.weight" in names1 and not any(n.startswith("text.encoder.") for n in names1)
    assert not any(n.startswith("audio.blocks.0.") for n, p in stage2.named_parameters() if p.requires_grad)
    # stage 2 starts from the weights stage 1 selected (its best.pth: the EMA copy of the preset), not from init
    selected = torch.load(tmp_path / "m" / "stage1" / "best.pth", weights_only=False)["model"]
    start2, init = fits[1][2], {k[len("mbt."):]: v for k, v in fits[0][2].items() if k.startswith("mbt.")}
    assert start2.keys() == init.keys()
    for k, v in start2.items():
        torch.testing.assert_close(v, selected["mbt." + k])
    assert any(not torch.equal(start2[k], init[k]) for k in start2 if start2[k].is_floating_point())
