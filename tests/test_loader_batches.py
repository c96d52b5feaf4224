"""Every training video is trained each epoch: the last, partial batch is not dropped (issue 19: 9 videos with batch 8
trained on 8)."""
import torch

import opts
from core import methods
from core.data import build_datasets, make_loader
from core.distributed import DistInfo
from core.engine import TrainContext, train_one_epoch
from core.log import RunLogger
from core.methods.base import StageContext
from fixtures_data import make_video_root


def test_a_partial_last_batch_is_trained(tmp_path):
    ann = make_video_root(tmp_path / "data", classes=("Anger", "Fear", "Joy"), train_per_class=3, test_per_class=1,
                          n_frames=8, seconds=1.0)
    args = opts.parse_args(["--preset", "cten_demo", "--root", str(tmp_path / "data"), "--annotation", str(ann),
                            "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16", "--batch-size", "8",
                            "--workers", "0", "--val-fraction", "0", "--select", "last", "--no-progress"])
    recipe = methods.get("cten")
    data = build_datasets(args, recipe)
    loader = make_loader(data["train"], args, DistInfo(), train=True, epoch=0)
    assert [len(b["video_id"]) for b in loader] == [8, 1]
    assert sorted(v for b in loader for v in b["video_id"]) == sorted(data["train"].video_ids)

    model = recipe.build_model(recipe.arch_of(args), 3)
    step = recipe.stages(args)[-1].method(args, StageContext(torch.tensor([-1, -1, 1]), data["train"]))
    seen = []

    class Counting:  # the CTEN step, recording each batch's size
        curve_names = step.curve_names

        def train_step(self, m, batch, epoch):
            seen.append(len(batch["video_id"]))
            return step.train_step(m, batch, epoch)

    ctx = TrainContext(device=torch.device("cpu"), logger=RunLogger(tmp_path / "run", enabled=False), progress=False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    stats = train_one_epoch(model, Counting(), loader, optimizer, ctx, epoch=0)
    assert seen == [8, 1] and ctx.global_step == 2 and torch.isfinite(torch.tensor(stats["loss"]))
