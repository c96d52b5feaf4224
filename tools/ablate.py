"""An ablation over seeds: main.py once per (variant, seed), then accuracy and detection mAP as mean +- std.

    python tools/ablate.py --out runs/ablation_demo --seeds 0 1 2 \\
        --variant full= --variant no_erase=--no-erase --variant no_inter=--no-inter --variant visual="--modalities v" \\
        -- --method cten --preset cten_demo --gt-segments data/demo/key_spans.json

A variant is NAME=FLAGS: FLAGS (split like a shell line; empty for the unchanged configuration) are appended to the
arguments after `--`, which every run shares; this tool adds `--seed S --output OUT/runs --name NAME_seedS` (so those
three may not be passed through). Runs go one at a time, each logging to OUT/runs/NAME_seedS.log; a run whose
results.json exists is reused (--rerun runs it again) and a killed one continues from its last checkpoint (main.py
--resume), so an interrupted ablation picks up where it stopped.

The summary, OUT/summary.json and a printed Markdown table, gives per variant the mean and sample standard deviation
(n - 1) over seeds of test accuracy, mean class accuracy and class-agnostic detection mAP at the --tious, the share of
videos without a keyframe (or without context) in the last training epoch, and the detection baselines of the first
variant's runs (whole clip, random span, centre span; core/detection.py), scored by the same mAP code.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.detection import BASELINES  # noqa: E402
from core.metrics import mean_std  # noqa: E402
from tools.run_splits import run_main  # noqa: E402
import opts  # noqa: E402

SET_PER_RUN = ("--seed", "--output", "--name")


def parse_variant(text: str) -> tuple[str, list]:
    name, sep, flags = text.partition("=")
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME=FLAGS with a name of letters, digits, "
                                         "'_' or '-' (e.g. full= or no_erase=--no-erase)")
    return name, shlex.split(flags)


def parse_args(argv=None) -> argparse.Namespace:
    own, main_args = opts.split_at_dashes(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for runs/ and summary.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="main.py --seed of each run (default 0 1 2)")
    p.add_argument("--variant", type=parse_variant, action="append", required=True,
                   help="NAME=FLAGS, repeated; the first is the reference whose baselines are reported")
    p.add_argument("--tious", type=float, nargs="+", default=[0.3, 0.5], help="detection columns (default 0.3 0.5)")
    p.add_argument("--rerun", action="store_true", help="run again even when a run's results.json exists")
    p.add_argument("--keep-going", action="store_true", help="go on with the next run when one fails")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs main.py (default: this one)")
    args = p.parse_args(own)
    args.main_args = main_args
    clash = [a for a in main_args + [f for _, flags in args.variant for f in flags] if a.split("=")[0] in SET_PER_RUN]
    if clash:
        p.error(f"{', '.join(clash)} are set per run by this tool; leave them out")
    names = [n for n, _ in args.variant]
    if len(set(names)) != len(names):
        p.error(f"variant names must differ: {names}")
    return args


def run_metrics(results: dict, tious) -> dict:
    """The scalars of one run's results.json that the table reports (None where the run has no such figure)."""
    det = results.get("detection") or {}
    last = (results.get("train_history") or [{}])[-1]
    row = {"acc": results.get("acc"), "mean_class_acc": results.get("mean_class_acc"),
           "empty_key_views": last.get("empty_key_views"), "empty_context_views": last.get("empty_context_views")}
    row.update({f"mAP@{t:g}": det.get(f"mAP@{t:g}") for t in tious})
    for b in BASELINES:
        row.update({f"{b}@{t:g}": ((results.get("detection_baselines") or {}).get(b) or {}).get(f"mAP@{t:g}")
                    for t in tious})
    return row


def summarise(runs: list, tious) -> dict:
    """{variant: {metric: {'mean', 'std', 'n'}}} over the finished runs of each variant."""
    summary = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r["metrics"] for r in runs if r["variant"] == variant and r["metrics"]]
        keys = list(rows[0]) if rows else []
        summary[variant] = {k: dict(zip(("mean", "std"), mean_std([row[k] for row in rows])), n=len(rows))
                            for k in keys}
        summary[variant]["n_runs"] = len(rows)
    return summary


def _ms(stat: dict | None, pct: bool = True) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    scale = 100 if pct else 1
    return f"{scale * stat['mean']:.1f}" + ("" if stat["std"] is None else f" ± {scale * stat['std']:.1f}")


def format_table(variants: list, summary: dict, tious) -> str:
    cols = ["accuracy %", *[f"mAP@{t:g} %" for t in tious], "no-keyframe videos, last epoch %"]
    lines = ["| variant | flags | runs | " + " | ".join(cols) + " |", "|" + "---|" * (3 + len(cols))]
    for name, flags in variants:
        s = summary.get(name, {})
        cells = [_ms(s.get("acc")), *[_ms(s.get(f"mAP@{t:g}")) for t in tious], _ms(s.get("empty_key_views"))]
        lines.append(f"| {name} | `{' '.join(flags) or '(as given)'}` | {s.get('n_runs', 0)} | " + " | ".join(cells)
                     + " |")
    ref = summary.get(variants[0][0], {})
    if any(ref.get(f"{b}@{tious[0]:g}") for b in BASELINES):
        lines.append("")
        lines.append(f"Baselines on the {variants[0][0]} runs' test videos (mAP %, " + " / ".join(f"@{t:g}" for t in tious)
                     + "): " + ", ".join(f"{b.replace('_', ' ')} " + " / ".join(_ms(ref.get(f"{b}@{t:g}")) for t in tious)
                                         for b in BASELINES))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    runs, failed = [], False
    for name, flags in args.variant:
        for seed in args.seeds:
            run_name = f"{name}_seed{seed}"
            print(f"{run_name}: {' '.join(args.main_args + flags)} --seed {seed}", flush=True)
            record = run_main([*args.main_args, *flags, "--seed", str(seed)], out / "runs", run_name, args.python,
                              args.rerun)
            results = record.pop("results")
            record.update(variant=name, seed=seed, metrics=run_metrics(results, args.tious) if results else None)
            runs.append(record)
            print(f"  {record['status']}" + (f", test accuracy {results['acc']:.4f}" if results else "")
                  + (f" in {record['seconds']} s" if record.get("seconds") is not None else "")
                  + f"; log {record['log']}", flush=True)
            if results is None:
                print(record["error_tail"], file=sys.stderr)
                failed = True
                if not args.keep_going:
                    break
        if failed and not args.keep_going:
            break
    summary = summarise(runs, args.tious)
    out.mkdir(parents=True, exist_ok=True)
    report = {"main_args": args.main_args, "seeds": args.seeds, "variants": {n: f for n, f in args.variant},
              "summary": summary, "runs": runs}
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    print(format_table(args.variant, summary, args.tious))
    print(f"summary: {out / 'summary.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
