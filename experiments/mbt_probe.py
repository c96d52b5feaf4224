"""Fast MBT experiments on a small set: training-set fit, per-head losses, test accuracy (docs/mbt_demo.md).

    python experiments/mbt_probe.py --cache /tmp/i11/demo_cache.pt --views 8 --epochs 40 -- --method mbt --preset mbt_demo
    python experiments/mbt_probe.py --cache ... --epochs 40 --ema 0.99 -- --method mbt --preset mbt_demo --lr 1e-3

The first call decodes `--views` augmented training views of every training video and the evaluation view of
every training, validation and test video into `--cache` (reused by later calls with the same data flags); each
epoch then draws one cached view per training video, so a run measures the optimisation, not the decoding.
The model, loss and optimiser come from the main.py flags after `--` (the method's recipe, core/losses.py), with an
optional linear warm-up (--warmup steps) and cosine decay. Printed per epoch: mean per-head training loss, the
accuracy of the training batches, and every --eval-every epochs the accuracy of the (EMA) model on the
evaluation view of the training set and of the test split; one final JSON line sums the run up.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import opts  # noqa: E402
from core import methods  # noqa: E402
from core.data import build_datasets  # noqa: E402
from core.ema import ModelEMA  # noqa: E402
from core.engine import TrainContext, predict_all  # noqa: E402
from core.evaluate import summarise  # noqa: E402
from models.mart import mbt_state_from_mart  # noqa: E402
from datasets.annotations import run_polarity  # noqa: E402
from core.methods.base import StageContext  # noqa: E402
from core.train import build_optimizer  # noqa: E402
from datasets.video_emotion import collate_samples  # noqa: E402

KEEP = ("video", "audio", "label", "texts", "seg_times", "video_id")


def stack(samples) -> dict:
    batch = collate_samples(samples)
    return {k: batch[k] for k in KEEP if k in batch}


def take(data: dict, idx) -> dict:
    """Rows idx (a tensor of indices or a slice) of a stacked dict (tensors and lists)."""
    if isinstance(idx, slice):
        return {k: v[idx] for k, v in data.items()}
    rows = idx.tolist()
    return {k: (v[idx] if torch.is_tensor(v) else [v[i] for i in rows]) for k, v in data.items()}


def build_cache(args, views: int) -> dict:
    """{'train_views': [view][...], 'train': eval view, 'val', 'test', 'labels'} of stacked tensors."""
    torch.manual_seed(0)
    data = build_datasets(args, methods.get(args.method), text=True)  # with transcripts, for both methods
    out = {"labels": data["train"].labels}
    out["train_views"] = [stack([data["train"][i] for i in range(len(data["train"]))]) for _ in range(views)]
    for name in ("train", "val", "test"):
        ds = data[name]
        if ds is None:
            continue
        ds.training_aug = False
        ds.spec_augment = False
        out[name] = stack([ds[i] for i in range(len(ds))])
    return out


@torch.no_grad()
def evaluate(model, data: dict, batch_size: int = 16) -> dict:
    model.eval()
    n = data["label"].shape[0]
    hits = {"acc": 0, "acc_v": 0, "acc_a": 0}
    for s in range(0, n, batch_size):
        out = model(video=data["video"][s:s + batch_size], audio=data["audio"][s:s + batch_size])
        y = data["label"][s:s + batch_size]
        for k, key in (("acc", "logits"), ("acc_v", "logits_v"), ("acc_a", "logits_a")):
            hits[k] += int((out[key].argmax(1) == y).sum())
    return {k: v / n for k, v in hits.items()}


def lr_factor(step: int, total: int, warmup: int, cosine: bool) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def detection(model, method, data: dict, labels, polarity, gt: dict, curves, batch_size: int = 16) -> dict:
    """mAP@tIoU of the detections built from `curves` alone (core.evaluate.summarise, the main.py rule)."""
    ctx = TrainContext(device=torch.device("cpu"), logger=None, progress=False)
    n = data["label"].shape[0]
    loader = [take(data, slice(s, s + batch_size)) for s in range(0, n, batch_size)]
    records = predict_all(model, method, loader, ctx)
    result = summarise(records, labels, polarity, gt_segments=gt, curves=curves)
    return result.get("detection", {})


def train_stage(model, method, args, me, cache, epochs: int, gen, log_prefix: str, t0: float, evaluate_fn=None,
                holder=None):
    """One optimiser (over the trainable parameters) and one EMA (also put in holder['ema'], for a teacher) for
    `epochs`, as main.py's fit; returns the evaluated model (the EMA copy when there is one)."""
    params = [q for q in model.parameters() if q.requires_grad]
    optimizer = build_optimizer(args, params)
    ema = ModelEMA(model, args.ema_decay, args.ema_warmup) if args.ema_decay > 0 else None
    if holder is not None:
        holder["ema"] = ema
    n = cache["train"]["label"].shape[0]
    steps_per_epoch = n // args.batch_size
    total, step = steps_per_epoch * epochs, 0
    for epoch in range(epochs):
        model.train()
        view = cache["train"] if me.fixed_view else cache["train_views"][(epoch + me.seed) % len(cache["train_views"])]
        order = torch.randperm(n, generator=gen)
        sums: dict = {}
        for s in range(steps_per_epoch):
            batch = take(view, order[s * args.batch_size:(s + 1) * args.batch_size])
            for g in optimizer.param_groups:
                g["lr"] = args.lr * lr_factor(step, total, me.warmup, me.cosine or args.lr_schedule == "cosine")
            loss, logs = method.train_step(model, batch, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            step += 1
            for k, v in {"loss": loss.item(), **logs}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        row = {"stage": log_prefix, "epoch": epoch, "time": round(time.time() - t0, 1),
               **{k: round(v / steps_per_epoch, 4) for k, v in sums.items()
                  if k in ("loss", "loss_v", "loss_a", "acc", "loss_rec", "loss_distill", "loss_comp", "loss_cls",
                           "loss_cls_aux", "cues_verified")}}
        if evaluate_fn is not None and ((epoch + 1) % me.eval_every == 0 or epoch + 1 == epochs):
            row.update(evaluate_fn(ema.module if ema is not None else model))
        print(" ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return ema.module if ema is not None else model


def main(argv=None) -> int:
    own, rest = opts.split_at_dashes(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="file of decoded views (written when absent)")
    p.add_argument("--views", type=int, default=8, help="augmented training views per video in the cache")
    p.add_argument("--epochs", type=int, default=None, help="(stage-2) epochs (default: --epochs of the flags)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--cosine", action="store_true", help="cosine decay per step after the warm-up (also with the "
                   "flags' --lr-schedule cosine, which main.py applies per epoch)")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--fixed-view", action="store_true", help="train on the evaluation view (pure fitting test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gt-segments", default="data/demo/key_spans.json")
    me = p.parse_args(own)
    args = opts.parse_args(rest)
    epochs = me.epochs if me.epochs is not None else args.epochs
    torch.set_num_threads(1)

    cache_path = Path(me.cache)
    if cache_path.is_file():
        cache = torch.load(cache_path)
    else:
        t0 = time.time()
        cache = build_cache(args, me.views)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cache, cache_path)
        print(f"cache written in {time.time() - t0:.1f}s: {cache_path}")
    labels = cache["labels"]
    polarity = torch.tensor(run_polarity(labels, args.positive_classes, args.polarity_file))
    gt = json.loads(Path(me.gt_segments).read_text()) if me.gt_segments else None

    def evaluate_fn(net):
        net = net.mbt if hasattr(net, "mbt") else net
        tr, te = evaluate(net, cache["train"]), evaluate(net, cache["test"])
        return {**{f"train_{k}": round(v, 4) for k, v in tr.items()}, **{f"test_{k}": round(v, 4) for k, v in te.items()}}

    torch.manual_seed(me.seed)
    gen = torch.Generator().manual_seed(me.seed)
    recipe = methods.get(args.method)
    model = recipe.build_model(recipe.arch_of(args), len(labels))
    t0 = time.time()
    summary = {"own": vars(me), "main_flags": rest}
    stages = recipe.stages(args)
    if len(stages) == 2:  # MART: stage 1 around the MBT, then the MBT
        stage1 = stages[0].model(model)
        holder: dict = {}
        mart_method = stages[0].method(args, StageContext(polarity, argparse.Namespace(labels=labels), None,
                                                          args.stage1_epochs))
        mart_method.teacher_fn = lambda: holder["ema"].module if holder.get("ema") is not None else None
        evaluated = train_stage(stage1, mart_method, args, me, cache, args.stage1_epochs, gen, "stage1", t0,
                                evaluate_fn, holder)
        if gt is not None:
            summary["stage1_det_degree_dec"] = detection(evaluated, mart_method, cache["test"], labels, polarity, gt,
                                                         ("degree_dec",))
            summary["stage1_det_degree_va"] = detection(evaluated, mart_method, cache["test"], labels, polarity, gt,
                                                        ("degree_v", "degree_a"))
        summary["stage1_seconds"] = round(time.time() - t0, 1)
        model.load_state_dict(mbt_state_from_mart(evaluated.state_dict()))
        summary["stage1_test"] = evaluate(model, cache["test"])
    method = recipe.predictor(args, polarity)
    if epochs > 0:
        final = train_stage(model, method, args, me, cache, epochs, gen, "mbt", t0, evaluate_fn)
    else:
        final = model
    te = evaluate(final, cache["test"])
    summary.update({"seconds": round(time.time() - t0, 1), "train": evaluate(final, cache["train"]), "test": te,
                    "test_acc": te["acc"]})
    if gt is not None:
        summary["det_degree_va"] = detection(final, method, cache["test"], labels, polarity, gt, ("degree_v", "degree_a"))
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
