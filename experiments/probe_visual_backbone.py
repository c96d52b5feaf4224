"""Linear probe of a frozen 3D ResNet on a demo-style set: how much of the class its features carry on their own.

    python experiments/probe_visual_backbone.py [--weights FILE ...] [--root data/demo/data]

Per weight file (or 'random'), the cten_demo preset's 3D ResNet reads every training and test video with the
evaluation sampling (T centred snippets, centre crop); each video is the mean and the max over its T segment
features; a linear classifier (Adam 1e-2, 300 full-batch steps, three weight decays) is fitted on the training
videos and scored on the test videos. Quoted in the README (the demo from pretrained backbones).
"""
import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opts  # noqa: E402
from core import methods  # noqa: E402
from core.data import dataset_kwargs  # noqa: E402
from datasets.video_emotion import VideoEmotionDataset  # noqa: E402
from models.pretrained import load_resnet3d  # noqa: E402
from models.resnet3d import ResNet3D  # noqa: E402


def videos(args, subset: str) -> tuple:
    """uint8 (N, T, 3, L, S, S), labels (N,) of a subset, evaluation sampling."""
    kw = dict(dataset_kwargs(args, methods.get("cten"), subset), training_aug=False, with_audio=False)
    ds = VideoEmotionDataset(**kw)
    samples = [ds[i] for i in range(len(ds))]
    return torch.stack([s["video"] for s in samples]), torch.tensor([int(s["label"]) for s in samples])


def pooled(net: ResNet3D, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        f = net(video.flatten(0, 1)).unflatten(0, video.shape[:2])  # (N, T, D)
    return torch.cat([f.mean(1), f.amax(1)], dim=1)  # (N, 2D)


def probe(train: tuple, test: tuple, weight_decay: float) -> tuple:
    (x, y), (xt, yt) = train, test
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=weight_decay)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(lin(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (lin(x).argmax(1) == y).float().mean().item(), (lin(xt).argmax(1) == yt).float().mean().item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", default=["random"], help="3D ResNet files, or 'random'")
    p.add_argument("--root", default="data/demo/data")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    args = opts.parse_args(["--method", "cten", "--preset", "cten_demo", "--root", a.root])
    data = {s: videos(args, s) for s in ("train", "test")}
    for w in a.weights:
        net = ResNet3D(args.visual_depth, args.visual_input)
        if w != "random":
            load_resnet3d(w, net)
        feats = {s: (pooled(net, v), y) for s, (v, y) in data.items()}
        scores = {wd: probe(feats["train"], feats["test"], wd) for wd in (1e-3, 1e-2, 1e-1)}
        print(w, "  ".join(f"wd {wd}: train {tr:.3f} test {te:.3f}" for wd, (tr, te) in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
