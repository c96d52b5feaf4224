"""Every preset value has a source (docs/preset_sources.json, tools/preset_table.py --check), docs/presets.md is
generated from it, and run.sh / detect_batch default to what the presets and the command line say."""
import copy
import inspect
import os
import subprocess
from pathlib import Path

import pytest

import opts
from core.detection import detect_batch
from tools import preset_table

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table():
    return preset_table.load_sources()


def test_every_preset_value_has_a_source_and_presets_md_is_current(table):
    presets = preset_table.project_presets()
    assert preset_table.check(presets, table) == []
    assert preset_table.render(presets, table) in (REPO / "docs" / "presets.md").read_text(), \
        "docs/presets.md is stale: python tools/preset_table.py --write"
    assert preset_table.main(["--check"]) == 0


def test_the_check_fails_on_a_value_without_a_source_or_another_value(table):
    presets = copy.deepcopy(preset_table.project_presets())
    presets["cten_ve8_paper"]["theta"] = 0.5  # a value the table does not hold
    presets["cten_ve8_official"]["lr"] = 1e-3  # another value than the release's
    problems = preset_table.check(presets, table)
    assert any("cten_ve8_paper: --theta 0.5 has no source" in p for p in problems)
    assert any("cten_ve8_official: --lr is 0.001" in p for p in problems)
    del presets["cten_ek6_official"]["erase_rule"]  # a table entry no longer held
    assert any("--erase-rule is listed but preset 'cten_ek6_official'" in p for p in preset_table.check(presets, table))


def test_the_check_fails_on_a_bad_entry(table):
    bad = copy.deepcopy(table)
    values = bad["families"]["cten_official"]["values"]
    values["lr"] = {"value": 2e-4, "kind": "paper", "source": "CTEN paper Sec. 4.2"}  # a paper value in _official
    values["seq_len"] = {"value": 16, "kind": "official", "source": "CTEN release opts.py"}  # no line
    values["epochs"] = {"value": 100, "kind": "ours"}  # no reason
    problems = preset_table.check(preset_table.project_presets(), bad)
    assert any("cten_official.lr: kind 'paper'" in p for p in problems)
    assert any("cten_official.seq_len: a release source names file:line" in p for p in problems)
    assert any("cten_official.epochs: an [ours] value needs a reason" in p for p in problems)


def test_a_preset_dropping_or_unsetting_a_sourced_value_is_caught(table):
    presets = copy.deepcopy(preset_table.project_presets())
    presets["cten_ve8_paper"]["freeze_audio"] = False
    assert any("cten_ve8_paper: --freeze-audio is False" in p for p in preset_table.check(presets, table))
    del presets["cten_ve8_paper"]["audio_resize"]
    assert any("--audio-resize is listed but preset 'cten_ve8_paper' does not set it" in p
               for p in preset_table.check(presets, table))


def test_run_sh_with_root_defaults_to_the_official_preset(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text('#!/bin/sh\necho "$@"\n')  # prints what run.sh would run
    fake.chmod(0o755)
    import hashlib
    (venv / ".requirements.sha256").write_text(hashlib.sha256((REPO / "requirements.txt").read_bytes()).hexdigest())
    env = {k: v for k, v in os.environ.items() if k not in ("PRESET", "GPUS", "NNODES")}
    for mode in ("cten", "mbt", "mart"):
        out = subprocess.run(["bash", str(REPO / "run.sh"), mode], env={**env, "VENV": str(venv), "ROOT": "/data/x"},
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert f"--preset {mode}_ve8_official --root /data/x" in out.stdout
        assert f"{mode}_ve8_official" in preset_table.project_presets()


def test_detect_batch_defaults_to_the_command_line_rule():
    default = opts.defaults()
    assert inspect.signature(detect_batch).parameters["method"].default == default.det_method == "oic"
    assert inspect.signature(detect_batch).parameters["source"].default == default.det_source
