"""The papers' multi-split protocol: train and test main.py on N train:test splits, report mean and std.

    python tools/run_splits.py --annotation DATA/VE8/ve8.json --n 10 --out runs/ve8_10splits \\
        -- --preset cten_ve8_official --root DATA/VE8 --visual-weights r3d101_KM_200ep.pth --audio-weights resnet18-f37072fd.pth
    python tools/run_splits.py --annotation DATA/EK6/ek6.json --n 10 --out runs/ek6_10splits \\
        -- --preset cten_ek6_official --root DATA/EK6

Everything after `--` goes to main.py unchanged; this tool adds `--annotation <split file> --output OUT/runs
--name splitNN` per split (so those three may not be passed through). Split 1 is the given annotation (the released
split); splits 2..N are new stratified draws of all its videos from datasets/annotations.py `make_splits` (the
generator behind tools/make_splits.py) with the train:test ratio of the protocol (VE-8 2:1, Ekman-6 1:1, inferred
from the class names; --ratio otherwise) and seed --seed + k for the k-th draw, written to OUT/splits/splitNN.json
with their seed in "split_info". The paper's VE-8 splits 2-10 were never published, so these are not those splits:
results over them must say so (the summary does).

Each split runs as its own process, logging to OUT/runs/splitNN.log. A split whose results.json exists is reused
(--rerun runs it again), so an interrupted protocol continues where it stopped; main.py's own --resume (passed by
default) continues a split killed mid-training. The summary, OUT/summary.json and a printed table, holds each run
and the mean and sample standard deviation (n - 1) over the finished splits of test accuracy, mean class accuracy,
sentiment-polarity accuracy and each class's accuracy.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.metrics import mean_std  # noqa: E402
from datasets.annotations import (EK6_CLASSES, VE8_CLASSES, dump_annotation, load_annotation, make_splits, parse_ratio)  # noqa: E402
from datasets.errors import DataError  # noqa: E402
from datasets.feature_cache import sha256_file  # noqa: E402
import opts  # noqa: E402

MAIN = Path(__file__).resolve().parents[1] / "main.py"
PROTOCOL_RATIOS = {tuple(sorted(VE8_CLASSES)): "2:1", tuple(sorted(EK6_CLASSES)): "1:1"}
SET_PER_SPLIT = ("--annotation", "--output", "--name")
SCALARS = ("acc", "mean_class_acc", "polarity_acc")


def parse_args(argv=None) -> argparse.Namespace:
    own, main_args = opts.split_at_dashes(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotation", required=True, help="the released split's annotation JSON (split 1)")
    p.add_argument("--n", type=int, default=10, help="number of splits, the released one included (default 10)")
    p.add_argument("--ratio", default=None, help="train:test of the generated splits (default: 2:1 for VE-8's "
                                                 "classes, 1:1 for Ekman-6's)")
    p.add_argument("--seed", type=int, default=0,
                   help="the k-th generated split (k = 0..N-2) uses seed + k (default 0)")
    p.add_argument("--released", action=argparse.BooleanOptionalAction, default=True,
                   help="split 1 is the given annotation (default); --no-released generates all N")
    p.add_argument("--out", required=True, help="folder for splits/, runs/ and summary.json")
    p.add_argument("--rerun", action="store_true", help="run splits again even when their results.json exists")
    p.add_argument("--keep-going", action="store_true", help="go on with the next split when one fails")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs main.py (default: this one)")
    args = p.parse_args(own)
    args.main_args = main_args
    clash = [a for a in main_args if a.split("=")[0] in SET_PER_SPLIT]
    if clash:
        p.error(f"{', '.join(clash)} after '--' are set per split by this tool; leave them out")
    if args.n < 1:
        p.error("--n must be >= 1")
    return args


def protocol_ratio(labels) -> str:
    ratio = PROTOCOL_RATIOS.get(tuple(sorted(c.lower() for c in labels)))
    if ratio is None:
        raise ValueError(f"no protocol ratio known for classes {list(labels)}: pass --ratio (e.g. 2:1)")
    return ratio


def prepare_splits(annotation, n: int, ratio, seed: int, folder: Path, released: bool = True) -> list:
    """Write the split files; returns [{'split', 'source', 'seed', 'ratio', 'annotation', 'annotation_sha256'}]."""
    data = load_annotation(annotation)
    ratio = ratio or protocol_ratio(data["labels"])
    parse_ratio(ratio)
    folder.mkdir(parents=True, exist_ok=True)
    splits = []
    if released:
        splits.append({"split": 1, "source": "released", "seed": None, "ratio": None,
                       "annotation": str(Path(annotation).resolve())})
    for drawn in make_splits(data, n=n - len(splits), ratio=ratio, seed=seed, source=Path(annotation).name) \
            if n > len(splits) else []:
        index = len(splits) + 1
        path = folder / f"split{index:02d}.json"
        dump_annotation(drawn, path)
        splits.append({"split": index, "source": "generated", "seed": drawn["split_info"]["seed"],
                       "ratio": drawn["split_info"]["ratio"], "annotation": str(path.resolve())})
    for s in splits:
        s["annotation_sha256"] = sha256_file(s["annotation"])
    return splits


def run_main(main_args: list, runs: Path, name: str, python: str, rerun: bool = False) -> dict:
    """Runs main.py as `--output runs --name name` (unless its results.json exists, or with rerun), logging to
    runs/name.log; returns {'run_dir', 'log', 'status', 'seconds', 'results'} (+ 'command', 'error_tail')."""
    run_dir, log = runs / name, runs / f"{name}.log"
    results_path = run_dir / "results.json"
    record = dict(run_dir=str(run_dir), log=str(log))
    if results_path.is_file() and not rerun:
        return dict(record, status="reused", seconds=None, results=json.loads(results_path.read_text()))
    cmd = [python, str(MAIN), *main_args, "--output", str(runs), "--name", name]
    if not any(a in ("--resume", "--no-resume") for a in main_args):
        cmd.append("--resume")
    if not any(a in ("--progress", "--no-progress") for a in main_args):
        cmd.append("--no-progress")
    runs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = round(time.perf_counter() - start, 1)
    record.update(command=cmd, seconds=seconds)
    if rc != 0 or not results_path.is_file():
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        return dict(record, status=f"failed (exit {rc})", results=None, error_tail=tail)
    return dict(record, status="done", results=json.loads(results_path.read_text()))


def run_split(split: dict, args, runs: Path) -> dict:
    """Runs main.py on one split (unless its results exist); returns the split's record with 'status', 'results'."""
    main_args = [*args.main_args, "--annotation", split["annotation"]]
    return dict(split, **run_main(main_args, runs, f"split{split['split']:02d}", args.python, args.rerun))


def aggregate(records: list) -> dict:
    """Mean and std over the splits with results, of SCALARS and of each class's accuracy."""
    done = [r["results"] for r in records if r.get("results")]
    summary = {"n_finished": len(done), "n_splits": len(records)}
    for key in SCALARS:
        summary[key] = dict(zip(("mean", "std"), mean_std([d.get(key) for d in done])))
    classes = list(done[0].get("per_class_acc", {})) if done else []
    summary["per_class_acc"] = {c: dict(zip(("mean", "std"), mean_std([d["per_class_acc"].get(c) for d in done])))
                                for c in classes}
    return summary


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def format_table(records: list, summary: dict) -> str:
    head = f"{'split':>5} {'source':<9} {'seed':>5} {'acc %':>7} {'mcls %':>7} {'pol %':>7} {'epoch':>5}  status"
    lines = [head, "-" * len(head)]
    for r in records:
        res = r.get("results") or {}
        lines.append(f"{r['split']:>5} {r['source']:<9} {'-' if r['seed'] is None else r['seed']:>5} "
                     + "".join(f"{_pct(res.get(k)):>7} " for k in SCALARS)
                     + f"{'-' if res.get('selected_epoch') is None else res['selected_epoch']:>5}  {r['status']}")
    lines.append("-" * len(head))
    for key, name in zip(SCALARS, ("accuracy", "mean class accuracy", "polarity accuracy")):
        m = summary[key]
        lines.append(f"{name:<22} {_pct(m['mean'])} +- {_pct(m['std'])} %  over {summary['n_finished']} splits")
    if summary["per_class_acc"]:
        lines.append("per class: " + ", ".join(f"{c} {_pct(v['mean'])} +- {_pct(v['std'])}"
                                               for c, v in summary["per_class_acc"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        splits = prepare_splits(args.annotation, args.n, args.ratio, args.seed, out / "splits", args.released)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    records = []
    for split in splits:
        print(f"split {split['split']}/{len(splits)} ({split['source']}): {split['annotation']}", flush=True)
        record = run_split(split, args, out / "runs")
        records.append(record)
        print(f"  {record['status']}" + (f", test accuracy {record['results']['acc']:.4f}" if record["results"] else "")
              + (f" in {record['seconds']} s" if record.get("seconds") is not None else "") + f"; log {record['log']}",
              flush=True)
        if record["results"] is None:
            print(record["error_tail"], file=sys.stderr)
            if not args.keep_going:
                break
    summary = aggregate(records)
    generated = any(r["source"] == "generated" for r in records)
    report = {"protocol": ("split 1 = the released split; " if args.released else "")
              + (f"splits {'2' if args.released else '1'}..{args.n} are new stratified draws (seed recorded per "
                 "split), NOT the paper's unpublished splits" if generated else "the released split only")
              + "; test accuracy on the original video, checkpoint selected on each split's validation subset",
              "annotation": str(Path(args.annotation).resolve()), "n": args.n, "main_args": args.main_args,
              "summary": summary, "runs": [{k: v for k, v in r.items() if k != "results"} |
                                           {"results": {k: r["results"].get(k) for k in (*SCALARS, "per_class_acc",
                                                                                          "selected_epoch")}
                                            if r["results"] else None} for r in records]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    print(format_table(records, summary))
    print(f"{report['protocol']}\nsummary: {out / 'summary.json'}")
    return 0 if summary["n_finished"] == len(splits) else 1


if __name__ == "__main__":
    sys.exit(main())
