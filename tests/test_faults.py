"""Faults met by a new user (issue 12): each case here fails without its fix. tools/fault_injection.py runs
the same cases end to end through the command lines and prints a table."""
import pickle

import pytest
import torch

from datasets.annotations import DataError
from datasets.video_emotion import VideoEmotionDataset, collate_samples
from tests.fixtures_data import make_video_root


def first_error(dataset, workers: int) -> DataError:
    """The DataError iterating a DataLoader with `workers` processes raises (its workers shut down cleanly)."""
    batches = iter(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers,
                                               collate_fn=collate_samples))
    try:
        for _ in batches:
            pass
    except DataError as e:
        e.__traceback__ = None  # drops the frames holding the iterator, so `del` below stops its workers
        error = e
    else:
        pytest.fail("no DataError")
    del batches
    return error


def test_a_bad_jpeg_read_in_a_loader_worker_is_the_same_data_error(tmp_path):
    ann = make_video_root(tmp_path, train_per_class=1, test_per_class=0, n_frames=8)
    (tmp_path / "imgs" / "Anger" / "anger_0" / "000003.jpg").write_bytes(b"")  # zero bytes
    ds = VideoEmotionDataset(tmp_path, ann, "train", seq_len=2, snippet_duration=4, sample_size=16,
                             with_audio=False, val_fraction=0.0, decode_threads=1)
    alone, workers = first_error(ds, 0), first_error(ds, 2)
    assert "000003.jpg" in alone.path and "cannot decode JPEG" in alone.why
    assert (str(workers), workers.path, workers.why, workers.fix) == (str(alone), alone.path, alone.why, alone.fix)


def test_data_error_survives_pickling_and_parses_a_bare_message():
    e = DataError("/d/imgs/Joy/a: b", "n_frames says 3 (of 4)", "run preprocess again (see --force)")
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.why, back.fix) == (e.path, e.why, e.fix)
    again = DataError(str(e))
    assert str(again) == str(e) and again.fix == e.fix
