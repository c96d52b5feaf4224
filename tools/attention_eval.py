"""Where CTEN's temporal attention points: detection read from each score source, attention liveness, and the
accuracy of the erased views, for one or more trained runs (docs/cten_attention.md).

    python tools/attention_eval.py RUN [RUN ...] [--gt-segments data/demo/key_spans.json] [--out table.json]

RUN: a run folder or checkpoint written by main.py (best.pth, else last.pth). The test split, annotation and
--gt-segments come from each checkpoint's configuration unless given here (--root takes ROOT/<annotation-name>).
Per run, on the test split:
  detection   class-agnostic mAP (core/evaluate.py `detection_by_source`) from the temporal attention (the paper's
              source), from tcam and from cas, each by both proposal methods (oic, threshold; the other --det-*
              options as the run was trained), and the three trivial baselines of the same detections;
  liveness    the share of segments where each modality's attention (ReLU output) is above 0;
  views       the accuracy of the original clip and of the keyframe / context views made by the run's erasing
              rule (CTENMethod.predict_views).
With several runs the table gives the mean and sample standard deviation over them.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opts  # noqa: E402
from core import methods  # noqa: E402
from core.data import dataset_kwargs, feature_cache, make_loader  # noqa: E402
from core.distributed import DistInfo  # noqa: E402
from core.engine import TrainContext, predict_all, to_device  # noqa: E402
from core.evaluate import attention_liveness, detection_by_source, view_accuracy  # noqa: E402
from core.restore import checkpoint_file, load_trained  # noqa: E402
from datasets.video_emotion import VideoEmotionDataset  # noqa: E402

SHOWN_TIOUS = (0.3, 0.4, 0.5)
BASELINE_NAMES = ("whole_clip", "random_span", "centre_span")


def evaluate_run(path, root=None, gt_segments=None) -> dict:
    """One trained run -> {'acc', 'views', 'liveness', 'detection' (detection_by_source), 'config' (the attention
    form and erasing rule)}."""
    overrides = {"workers": 0}
    if root:
        overrides["root"] = root
    model, method, args, labels, _ = load_trained(checkpoint_file(path), torch.device("cpu"), overrides=overrides)
    if root:
        args.annotation = str(Path(root) / args.annotation_name)
    gt_file = gt_segments or args.gt_segments
    if not gt_file or not Path(gt_file).is_file():
        raise SystemExit(f"{path}: no ground-truth segments ({gt_file!r}); pass --gt-segments FILE")
    recipe = methods.get(args.method)
    test = VideoEmotionDataset(**dataset_kwargs(args, recipe, "test", cache=feature_cache(args, recipe)))
    method.read_frames = test.read_frames
    ctx = TrainContext(device=torch.device("cpu"), logger=None, progress=False)
    polarity = torch.tensor([0] * len(labels))  # polarity accuracy is not reported here
    with torch.no_grad():
        records = predict_all(model, method, make_loader(test, args, DistInfo(), train=False), ctx)
        views = []
        for batch in make_loader(test, args, DistInfo(), train=False):
            out = method.predict_views(model, to_device(batch, ctx.device))
            views += [{k: v[b].numpy() for k, v in out.items()} for b in range(len(batch["video_id"]))]
    y = [r["label"] for r in records]
    det = detection_by_source(records, labels, polarity, json.loads(Path(gt_file).read_text()),
                              opts.detection_rule(args), curves=method.curve_names)
    acc = float(np.mean(np.array([int(r["probs"].argmax()) for r in records]) == np.array(y)))
    return {"run": str(path), "acc": acc, "views": {"original": acc, **view_accuracy(views, y)},
            "liveness": attention_liveness(records), "detection": det,
            "config": {k: getattr(args, k) for k in ("temporal_attention", "erase_rule", "seed")}}


def mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if v.size > 1 else "")


def table(results: list) -> list[str]:
    """Rows: per score source and proposal method, the model's mAP and the best baseline's at SHOWN_TIOUS (mean over
    runs), and in how many runs the model beats all three baselines at every shown tIoU; then accuracy, view
    accuracy and liveness."""
    keys = [f"mAP@{t:.1f}" for t in SHOWN_TIOUS]
    lines = [f"{len(results)} run(s): " + ", ".join(f"{r['config']}" for r in results),
             f"{'source rule':<20} " + " ".join(f"{k:>15}" for k in keys) + "   best baseline @0.3/0.4/0.5   wins"]
    for row in results[0]["detection"]:
        model = [[r["detection"][row]["model"][k] for r in results] for k in keys]
        best = [[max(r["detection"][row][b][k] for b in BASELINE_NAMES) for r in results] for k in keys]
        wins = sum(all(r["detection"][row]["model"][k] > max(r["detection"][row][b][k] for b in BASELINE_NAMES)
                       for k in keys) for r in results)
        lines.append(f"{row:<20} " + " ".join(f"{mean_std(m):>15}" for m in model) + "   "
                     + "/".join(f"{np.mean(b):.3f}" for b in best) + f"   {wins}/{len(results)}")
    for view in results[0]["views"]:
        lines.append(f"accuracy {view:<11} {mean_std([r['views'][view] for r in results])}")
    for name in results[0]["liveness"]:
        lines.append(f"{name} above 0 in {mean_std([r['liveness'][name] for r in results])} of segments")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders or checkpoints written by main.py")
    p.add_argument("--root", default=None, help="data root (default: each checkpoint's)")
    p.add_argument("--gt-segments", default=None, help="key-span JSON (default: each checkpoint's --gt-segments)")
    p.add_argument("--out", default=None, help="write every run's numbers to this JSON file")
    a = p.parse_args(argv)
    results = [evaluate_run(r, a.root, a.gt_segments) for r in a.runs]
    print("\n".join(table(results)))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
