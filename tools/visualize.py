"""Draw the timelines and the confusion matrix of a finished run from its saved predictions.

    python tools/visualize.py --run runs/cten_demo [--gt data/demo/key_spans.json] [--n 8] [--out DIR]
    python tools/visualize.py --run runs/mart_ve8_official --root /data/VE8 --videos 1234_abcd 5678_efgh

Reads RUN/predictions.json (per test video: probabilities, attention curves, detected segments) and
RUN/results.json (confusion matrix, class names), both written by main.py. A MART run keeps them in RUN/stage2/,
which is used when RUN itself has none. The thumbnails are the test videos' frames as the run's evaluation loader
reads them: datasets.video_emotion.VideoEmotionDataset built from the run's config.json (RUN/config.json, or the
one beside RUN for a stage-2 folder, or --config; an --eval-only run writes none, so pass its training run's).
--root moves the dataset (the annotation file of the same name under it is used unless --annotation is given).

Writes OUT/timelines/<video_id>.png for the chosen videos (--videos, else the first --n of predictions.json) and
OUT/confusion.png, with core/run.py `draw_figures`: the same figures main.py draws at the end of a run. OUT is
--out, else a new folder beside the run's results (figures/, figures_2/, ...): the figures main.py drew are never
overwritten. Ground-truth
segments come from --gt, else from the run's --gt-segments file when it is still there. Exit status 0, or 2 with
a message naming the file and the fix.
"""
import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.log import RunLogger  # noqa: E402
from datasets.errors import DataError  # noqa: E402
from datasets.video_emotion import VideoEmotionDataset  # noqa: E402
from core import methods  # noqa: E402
from core.data import dataset_kwargs  # noqa: E402
from core.restore import restore_args  # noqa: E402
from core.run import draw_figures  # noqa: E402


class Chosen:
    """The videos `indices` of a dataset, in that order: draw_figures draws the first items of the dataset it is
    given and reads more of their frames by position in it."""

    def __init__(self, dataset, indices: list):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[self.indices[i]]

    def read_frames(self, i: int, frame_indices, aug):
        return self.dataset.read_frames(self.indices[i], frame_indices, aug)


def read_json(path: Path, what: str, fix: str):
    if not path.is_file():
        raise DataError(path, f"{what} not found", fix)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"{what} is not valid JSON ({e})", fix) from None


def results_dir(run: Path) -> Path:
    """The folder holding predictions.json: RUN, or RUN/stage2 for a MART run."""
    if not run.is_dir():
        raise DataError(run, "run directory not found", "pass --run the folder main.py wrote (--output/--name)")
    for folder in (run, run / "stage2"):
        if (folder / "predictions.json").is_file():
            return folder
    raise DataError(run / "predictions.json", "no predictions.json in the run (nor in its stage2/)",
                    "let main.py finish the run (it writes predictions.json after the test evaluation)")


def run_args(folder: Path, config: Path | None, root: str | None, annotation: str | None) -> argparse.Namespace:
    """The run's configuration (core/restore.py `restore_args` over its config.json), then --root / --annotation."""
    if config is None:
        config = next((c for c in (folder / "config.json", folder.parent / "config.json") if c.is_file()),
                      folder / "config.json")
    fix = "pass --config with the config.json of the training run (an --eval-only run writes none)"
    args = restore_args(read_json(config, "run configuration", fix))
    if root is not None:
        args.root = root
        if annotation is None:
            annotation = str(Path(root) / Path(args.annotation or args.annotation_name).name)
    if annotation is not None:
        args.annotation = annotation
    return args


def choose(predictions: list, dataset, videos: list | None, n: int) -> tuple:
    """(indices into the dataset, the predictions reordered to match) for --videos or the first n."""
    by_id = {p["video_id"]: p for p in predictions}
    wanted = videos if videos else [p["video_id"] for p in predictions[:n]]
    unknown = [v for v in wanted if v not in by_id]
    if unknown:
        raise DataError(unknown[0], f"{len(unknown)} video id(s) not in predictions.json: {', '.join(unknown[:5])}",
                        f"choose among the run's test videos, e.g. {', '.join(list(by_id)[:3])}")
    where = {v: i for i, v in enumerate(dataset.video_ids)}
    absent = [v for v in wanted if v not in where]
    if absent:
        raise DataError(dataset.root, f"{len(absent)} predicted video(s) are not in the test subset of "
                        f"{dataset.root}: {', '.join(absent[:5])}", "pass --root / --annotation of the run's data")
    return [where[v] for v in wanted], [by_id[v] for v in wanted]


def new_folder(folder: Path, name: str = "figures") -> Path:
    """folder/name, or name_2, name_3, ... : the first that does not exist."""
    out, k = folder / name, 1
    while out.exists():
        k += 1
        out = folder / f"{name}_{k}"
    return out


def visualize(run: Path, root: str | None = None, annotation: str | None = None, config: Path | None = None,
              gt_path: Path | None = None, videos: list | None = None, n: int = 8, out: Path | None = None) -> list:
    """Draws the figures (module docstring) into `out` (default: a new folder, `new_folder`); returns the paths
    written."""
    folder = results_dir(run)
    fix = "let main.py finish the run, or run it again with --eval-only --checkpoint"
    predictions = read_json(folder / "predictions.json", "predictions", fix)
    results = read_json(folder / "results.json", "results", fix)
    if not (isinstance(results, dict) and {"confusion", "labels"} <= results.keys()):
        raise DataError(folder / "results.json", "holds no 'confusion' and 'labels'", fix)
    args = run_args(folder, config, root, annotation)
    if gt_path is None and args.gt_segments and Path(args.gt_segments).is_file():
        gt_path = Path(args.gt_segments)
    gt = read_json(gt_path, "ground-truth segments", "pass --gt the key-span JSON ({video_id: [[start, end]]})") \
        if gt_path is not None else None
    test = VideoEmotionDataset(**dataset_kwargs(args, methods.get(args.method), "test"))
    indices, chosen = choose(predictions, test, videos, n)
    args.vis_videos = len(indices)
    # results.json names the per-segment curves; one written before it did: the attention and degree curves
    curves = results.get("curves") or [k for k in chosen[0] if k.startswith(("att_", "degree_"))]
    out = out if out is not None else new_folder(folder)
    draw_figures(args, {"confusion": results["confusion"], "per_video": chosen, "curves": curves},
                 Chosen(test, indices), results["labels"], gt, RunLogger(out, enabled=False))
    return [out / "confusion.png"] + [out / "timelines" / f"{p['video_id']}.png" for p in chosen]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tools/visualize.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run directory written by main.py")
    p.add_argument("--root", default=None, help="dataset root (default: the run's)")
    p.add_argument("--annotation", default=None, help="annotation JSON (default: the run's, moved with --root)")
    p.add_argument("--config", type=Path, default=None, help="config.json (default: the run's)")
    p.add_argument("--gt", type=Path, default=None, help="ground-truth segments JSON, e.g. the demo's key_spans.json")
    p.add_argument("--videos", nargs="+", default=None, metavar="ID", help="video ids to draw (default: the first --n)")
    p.add_argument("--n", type=int, default=8, help="videos to draw without --videos (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for confusion.png and timelines/ (default: a new figures/, figures_2/, ... beside the "
                        "run's results; the run's own figures are never overwritten)")
    return p


def main(argv=None) -> int:
    cli = build_parser().parse_args(argv)
    try:
        if cli.n < 0:
            raise ValueError(f"--n must be >= 0, got {cli.n}")
        paths = visualize(cli.run, cli.root, cli.annotation, cli.config, cli.gt, cli.videos, cli.n, cli.out)
    except (ValueError, OSError) as e:  # DataError and missing files name the file and the fix
        if os.environ.get("VEA_DEBUG"):
            raise
        print(f"error: {e}\n(set VEA_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    print(f"wrote {paths[0]} and {len(paths) - 1} timeline(s) in {paths[0].parent / 'timelines'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
