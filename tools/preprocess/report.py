"""The end-of-run summary: counts, then every failure (file, why, fix) and every warning."""
import json
from pathlib import Path

from .pipeline import Result

CONSOLE_WARNINGS = 20


def summary_lines(results: list[Result], dataset_notes: list[str]) -> list[str]:
    """Human-readable summary; all failures are listed, warnings up to CONSOLE_WARNINGS."""
    count = {s: sum(r.status == s for r in results) for s in ("processed", "skipped", "failed")}
    warned = [r for r in results if r.warnings]
    lines = [f"preprocess: videos: {len(results)}: {count['processed']} processed, "
             f"{count['skipped']} skipped (already finished), {count['failed']} failed; "
             f"{len(warned)} with warnings"]
    failed = [r for r in results if r.status == "failed"]
    if failed:
        lines.append(f"FAILED ({len(failed)}):")
        for r in failed:
            lines += [f"  {r.video.src}", f"    file: {r.failed_file}", f"    why:  {r.why}", f"    fix:  {r.fix}"]
    warnings = [f"{r.video.src}: {w}" for r in warned for w in r.warnings] + dataset_notes
    if warnings:
        lines.append(f"WARNINGS ({len(warnings)}):")
        lines += [f"  {w}" for w in warnings[:CONSOLE_WARNINGS]]
        if len(warnings) > CONSOLE_WARNINGS:
            lines.append(f"  ... and {len(warnings) - CONSOLE_WARNINGS} more in the report file")
    return lines


def write_report(results: list[Result], dataset_notes: list[str], path: Path) -> None:
    """Every result and note as JSON, for the record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "videos": [{"src": str(r.video.src), "label": r.video.label, "video_id": r.video.video_id,
                    "status": r.status, "warnings": r.warnings, "failed_file": r.failed_file,
                    "why": r.why, "fix": r.fix} for r in results],
        "notes": dataset_notes}, indent=1))
