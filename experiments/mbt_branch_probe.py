"""One MBT branch alone (the AST or the video ViT) + a linear head on the demo: how fast it fits (docs/mbt_demo.md).

    python experiments/mbt_branch_probe.py --cache /tmp/i11/cache_v2.pt --branch audio --depth 2 --patch-freq 128
    python experiments/mbt_branch_probe.py --cache ... --branch audio --input-mean 0.307 --input-std 0.57

The cache is the one experiments/mbt_probe.py writes (augmented training views + evaluation views). Each step draws 8
training videos from one cached view; the branch encodes every segment, the head reads the pooled segment
feature, logits are averaged over the T segments (as in the MBT) and trained with cross-entropy under Adam
(weight decay 1e-3). Prints the mean loss over steps 25-35, 85-95 and the last 10, and the accuracy on the
evaluation view of the training set and on the test split.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models.ast import AST, ASTConfig, N_EXTRA_TOKENS  # noqa: E402
from models.video_vit import VideoViT, VideoViTConfig  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True)
    p.add_argument("--branch", choices=["audio", "video"], default="audio")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool", choices=["cls", "mean"], default="mean")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--patch-freq", type=int, default=None, help="audio: patch height in mel bins")
    p.add_argument("--input-mean", type=float, default=0.0, help="audio: re-normalisation of the fbank")
    p.add_argument("--input-std", type=float, default=1.0)
    p.add_argument("--patch-size", type=int, default=16, help="video: spatial patch")
    p.add_argument("--tubelet", type=int, default=2, help="video: frames per tubelet")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cache = torch.load(a.cache)
    key = a.branch
    views, train, test = cache["train_views"], cache["train"], cache["test"]
    torch.manual_seed(a.seed)
    if a.branch == "audio":
        enc = AST(ASTConfig(dim=a.width, depth=a.depth, num_heads=4, patch_freq=a.patch_freq,
                            input_mean=a.input_mean, input_std=a.input_std))
        extra, norm = N_EXTRA_TOKENS, enc.norm
    else:
        frames, size = train["video"].shape[3], train["video"].shape[-1]
        enc = VideoViT(VideoViTConfig(img_size=size, num_frames=frames, patch_size=a.patch_size, tubelet_size=a.tubelet,
                                      dim=a.width, depth=a.depth, num_heads=4))
        extra, norm = 1, enc.fc_norm
    head = torch.nn.Linear(a.width, len(cache["labels"]))
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, a.lr, weight_decay=1e-3)

    def forward(x):  # (B, T, ...) -> (B, C)
        tokens = enc.embed(x.flatten(0, 1))
        for blk in enc.blocks:
            tokens = blk(tokens)
        pooled = tokens[:, :extra].mean(1) if a.pool == "cls" else tokens[:, extra:].mean(1)
        return head(norm(pooled)).unflatten(0, x.shape[:2]).mean(1)

    g = torch.Generator().manual_seed(a.seed)
    losses, t0 = [], time.time()
    n = train["label"].shape[0]
    for s in range(a.steps):
        idx = torch.randperm(n, generator=g)[:8]
        view = views[s % len(views)]
        loss = F.cross_entropy(forward(view[key][idx]), view["label"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        acc_train = (forward(train[key]).argmax(1) == train["label"]).float().mean().item()
        acc_test = (forward(test[key]).argmax(1) == test["label"]).float().mean().item()

    def mean(xs):
        return sum(xs) / max(len(xs), 1)
    print(f"{a.branch} depth {a.depth} pool {a.pool} tokens {enc.num_patches} lr {a.lr} seed {a.seed}: "
          f"loss@30 {mean(losses[25:35]):.2f} @90 {mean(losses[85:95]):.2f} last {mean(losses[-10:]):.2f} "
          f"train acc {acc_train:.2f} test acc {acc_test:.2f} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
