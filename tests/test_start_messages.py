"""Messages a run stops with before it starts point the right way (issue 19, item 7): the annotation file, the
validation fraction, the weight files of each preset, a missing root before the weights."""
from pathlib import Path

import pytest

import opts
from core import methods
from core.run import main as run_main
from core.weights import check_expected_weights
from datasets.errors import DataError
from datasets.video_emotion import VideoEmotionDataset
from fixtures_data import make_video_root


@pytest.fixture(scope="module")
def own_root(tmp_path_factory):
    """A root whose annotation is mine.json (two training videos per class), as tools/preprocess --json mine.json."""
    root = tmp_path_factory.mktemp("own")
    ann = make_video_root(root, classes=("Anger", "Joy"), train_per_class=2, test_per_class=1, n_frames=4, seconds=0.5)
    ann.rename(root / "mine.json")
    return root


def test_a_missing_annotation_names_the_flag_and_the_files_in_root(own_root, tmp_path, capsys):
    argv = ["--preset", "cten_demo", "--root", str(own_root), "--output", str(tmp_path), "--name", "x"]
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert "ve8.json" in err and "--annotation-name" in err and "mine.json" in err
    assert not (tmp_path / "x").exists()


def test_an_empty_validation_subset_says_which_fraction_would_work(own_root):
    kw = dict(with_audio=False, seq_len=2, snippet_duration=2, sample_size=16)
    with pytest.raises(DataError) as e:
        VideoEmotionDataset(own_root, own_root / "mine.json", "val", val_fraction=0.1, **kw)
    text = str(e.value)
    assert "--val-fraction > 0" not in text  # issue 19: said so with val_fraction=0.1
    assert "--val-fraction 0.26 or more" in text and "--val-fraction 0 --select last" in text
    assert len(VideoEmotionDataset(own_root, own_root / "mine.json", "val", val_fraction=0.26, **kw)) == 2
    with pytest.raises(DataError, match="no validation subset: --val-fraction is 0"):
        VideoEmotionDataset(own_root, own_root / "mine.json", "val", val_fraction=0.0, **kw)


@pytest.mark.parametrize("preset,files,not_named", [
    ("cten_ve8_paper", ["--visual-weights FILE  resnet-101-kinetics.pth", "--audio-weights FILE   resnet50-0676ba61.pth"],
     ["r3d101_KM_200ep.pth", "resnet18"]),
    ("cten_ek6_official", ["--visual-weights FILE  r3d101_KM_200ep.pth", "--audio-weights FILE   resnet18-f37072fd.pth"],
     ["resnet-101-kinetics.pth", "resnet50"]),
])
def test_the_weights_message_names_each_presets_files_one_per_line(preset, files, not_named):
    args = opts.parse_args(["--preset", preset, "--root", "/nowhere"])
    with pytest.raises(ValueError) as e:
        check_expected_weights(methods.get(args.method).expected_weights(args), args)
    lines = str(e.value).splitlines()
    assert all(any(line.strip().startswith(f) for line in lines) for f in files), lines
    assert not any(n in str(e.value) for n in not_named)
    assert "docs/weights.md" in str(e.value) and max(len(line) for line in lines) < 200


def test_a_missing_root_is_reported_before_the_weights(tmp_path, capsys):
    assert run_main(["--preset", "cten_ve8_paper", "--root", str(tmp_path / "nope"), "--output", str(tmp_path),
                     "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "dataset root not found" in err and "--visual-weights" not in err
    assert not (tmp_path / "x").exists()


def test_docs_weights_names_every_weight_flag_and_file():
    text = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    flags = {w.flag for r in methods.recipes() for p in r.presets
             for w in r.expected_weights(opts.parse_args(["--preset", p, "--root", "/nowhere"]))}
    assert flags and all(f"`{f}`" in text for f in flags)
    for name in ("resnet-101-kinetics.pth", "r3d101_KM_200ep.pth", "resnet18-f37072fd.pth", "resnet50-0676ba61.pth",
                 "audioset_10_10_0.4593.pth", "videomae_base_patch16_224.pth"):
        assert name in text
