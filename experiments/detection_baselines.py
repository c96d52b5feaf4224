"""Reference detection scores on a split: curves that know nothing, scored by the main.py rule (docs/mbt_demo.md).

    python experiments/detection_baselines.py -- --method mbt --preset mbt_demo --gt-segments data/demo/key_spans.json

'whole clip': a constant curve (min-max normalisation makes it all ones, so each video is one detection spanning
its segments); 'random': a uniform random value per segment (seeded). Both with uniform class probabilities, so
the score is the same for every video. The segments are the test split's evaluation segments (T, times) as the
dataset gives them; mAP is core.evaluate.summarise's, at tIoU 0.1-0.5, class-agnostic.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import opts  # noqa: E402
from core import methods  # noqa: E402
from core.data import dataset_kwargs  # noqa: E402
from datasets.video_emotion import VideoEmotionDataset  # noqa: E402
from core.evaluate import summarise  # noqa: E402
from datasets.annotations import run_polarity  # noqa: E402


def main(argv=None) -> int:
    _, rest = opts.split_at_dashes(sys.argv[1:] if argv is None else argv)
    args = opts.parse_args(rest)
    if not args.gt_segments:
        raise SystemExit("pass --gt-segments (the demo's key_spans.json)")
    gt = json.loads(Path(args.gt_segments).read_text())
    test = VideoEmotionDataset(**dataset_kwargs(args, methods.get(args.method), "test"))
    labels = test.labels
    polarity = torch.tensor(run_polarity(labels, args.positive_classes, args.polarity_file))
    rng = np.random.default_rng(0)
    base = []
    for i in range(len(test)):
        s = test[i]
        base.append({"video_id": s["video_id"], "label": int(s["label"]), "probs": np.full(len(labels), 1 / len(labels)),
                     "seg_times": s["seg_times"].numpy()})
    out = {}
    for name, make in (("whole clip", lambda T: np.ones(T)), ("random", lambda T: rng.random(T))):
        records = [{**r, "curve": make(len(r["seg_times"]))} for r in base]
        det = summarise(records, labels, polarity, gt_segments=gt, curves=("curve",),
                        det_rule=opts.detection_rule(args))["detection"]
        out[name] = {k: round(v, 4) for k, v in det.items()}
        print(name, json.dumps(out[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
