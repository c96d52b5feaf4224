"""The end-of-run summary: counts, then every failure (file, why, fix) and every warning."""
import json
from pathlib import Path

from .pipeline import Result

CONSOLE_WARNINGS = 20


def changed_text(changed: dict) -> str:
    """{setting: [saved, now]} -> 'asr pocketsphinx -> none, short_side 240 -> 128'."""
    return ", ".join(f"{k} {a} -> {b}" for k, (a, b) in sorted(changed.items()))


def summary_lines(results: list[Result], dataset_notes: list[str]) -> list[str]:
    """Human-readable summary; all failures are listed, warnings up to CONSOLE_WARNINGS. Clips without speech are
    counted apart from warnings (nothing is wrong with them), and finished videos redone or kept although made with
    other settings are said, with the settings that differ."""
    count = {s: sum(r.status == s for r in results) for s in ("processed", "skipped", "failed")}
    warned = [r for r in results if r.warnings]
    silent = [r for r in results if r.no_speech]
    lines = [f"preprocess: videos: {len(results)}: {count['processed']} processed, "
             f"{count['skipped']} skipped (already finished), {count['failed']} failed; "
             f"{len(warned)} with warnings; {len(silent)} without speech (no transcript)"]
    for status, what in (("processed", "redone: they were made with other settings"),
                         ("skipped", "kept although made with other transcript settings (they apply to new videos; "
                                     "--force redoes every video)")):
        groups: dict = {}
        for r in results:
            if r.status == status and r.changed:
                groups.setdefault(changed_text(r.changed), []).append(r)
        lines += [f"{len(rs)} finished videos {what}: {text}" for text, rs in groups.items()]
    failed = [r for r in results if r.status == "failed"]
    if failed:
        lines.append(f"FAILED ({len(failed)}):")
        for r in failed:
            lines += [f"  {r.video.src}", f"    file: {r.failed_file}", f"    why:  {r.why}", f"    fix:  {r.fix}"]
    if silent:
        lines.append(f"WITHOUT SPEECH ({len(silent)}), no transcript written:")
        lines += [f"  {r.video.src}: {r.no_speech}" for r in silent[:CONSOLE_WARNINGS]]
        if len(silent) > CONSOLE_WARNINGS:
            lines.append(f"  ... and {len(silent) - CONSOLE_WARNINGS} more in the report file")
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
                    "status": r.status, "warnings": r.warnings, "no_speech": r.no_speech, "changed": r.changed,
                    "failed_file": r.failed_file, "why": r.why, "fix": r.fix} for r in results],
        "notes": dataset_notes}, indent=1))
