"""tools/visualize.py: timelines and the confusion matrix of a finished tiny run, drawn from its saved predictions."""
import json
import shutil

import pytest
from PIL import Image

from test_predict import demo_run_once
from tools import visualize


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    return demo_run_once(tmp_path_factory)  # the tiny run tests/test_predict.py predicts with (built once)


def pngs(folder):
    return sorted(p.name for p in folder.glob("*.png"))


def test_draws_the_first_n_timelines_and_the_confusion(demo_run, capsys):
    """Into a new folder each time: the run's own confusion.png (main.py's) is never overwritten (issue 19)."""
    run = demo_run["run"]
    before = (run / "confusion.png").read_bytes()
    assert not (run / "timelines").exists()  # main.py drew none (--vis-videos 0)
    assert visualize.main(["--run", str(run), "--gt", str(demo_run["demo"] / "key_spans.json"), "--n", "2"]) == 0
    out = run / "figures"
    assert pngs(out / "timelines") == sorted(f"{v}.png" for v in demo_run["test_ids"][:2])
    with Image.open(out / "confusion.png") as cm, Image.open(out / "timelines" / pngs(out / "timelines")[0]) as tl:
        assert cm.width > 200 and tl.width > 300
    assert "2 timeline(s)" in capsys.readouterr().out
    assert (run / "confusion.png").read_bytes() == before and not (run / "timelines").exists()
    assert visualize.main(["--run", str(run), "--n", "1"]) == 0
    assert len(pngs(run / "figures" / "timelines")) == 2 and len(pngs(run / "figures_2" / "timelines")) == 1


def test_chosen_video_with_and_without_ground_truth(demo_run, tmp_path):
    run, vid = demo_run["run"], demo_run["test_ids"][4]
    assert visualize.main(["--run", str(run), "--videos", vid, "--out", str(tmp_path / "a")]) == 0
    plain = (tmp_path / "a" / "timelines" / f"{vid}.png").read_bytes()
    assert visualize.main(["--run", str(run), "--videos", vid, "--gt", str(demo_run["demo"] / "key_spans.json"),
                           "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "timelines" / f"{vid}.png").read_bytes() != plain  # the key span is drawn


def test_mart_layout_and_moved_data_root(demo_run, tmp_path):
    """A MART run keeps its results in stage2/ and its config beside; --root finds data that moved."""
    run = tmp_path / "mart"
    (run / "stage2").mkdir(parents=True)
    for name in ("predictions.json", "results.json"):
        shutil.copy(demo_run["run"] / name, run / "stage2" / name)
    config = json.loads((demo_run["run"] / "config.json").read_text())
    config.update(root=str(tmp_path / "gone"), annotation=str(tmp_path / "gone" / "ve8.json"))
    (run / "config.json").write_text(json.dumps(config))
    vid = demo_run["test_ids"][3]
    assert visualize.main(["--run", str(run), "--videos", vid]) == 2  # the data is not where the run left it
    assert visualize.main(["--run", str(run), "--videos", vid, "--root", str(demo_run["data"])]) == 0
    out = run / "stage2" / "figures"
    assert pngs(out / "timelines") == [f"{vid}.png"] and (out / "confusion.png").is_file()


def test_bad_input_is_a_clear_error(demo_run, tmp_path, capsys):
    assert visualize.main(["--run", str(demo_run["run"]), "--videos", "no_such_clip"]) == 2
    assert "no_such_clip" in capsys.readouterr().err
    assert visualize.main(["--run", str(tmp_path / "absent")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    evaluated = tmp_path / "eval"  # what --eval-only writes: results, no config.json
    evaluated.mkdir()
    for name in ("predictions.json", "results.json"):
        shutil.copy(demo_run["run"] / name, evaluated / name)
    assert visualize.main(["--run", str(evaluated)]) == 2
    err = capsys.readouterr().err
    assert "--config" in err and "Traceback" not in err
    assert visualize.main(["--run", str(evaluated), "--config", str(demo_run["run"] / "config.json"), "--n", "1"]) == 0
    assert len(pngs(evaluated / "figures" / "timelines")) == 1
