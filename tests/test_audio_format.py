"""The direct PCM WAV reader gives exactly what PyAV's decoding gives; other WAVs still go through PyAV."""
import numpy as np
import pytest
import torch

import datasets.audio as audio
from datasets.errors import DataError
from tools.preprocess.audio import write_wav


def via_pyav(path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(audio, "read_pcm_wav", lambda p, r: None)
        return audio.decode_audio(path)


@pytest.mark.parametrize("channels", [1, 2])
def test_direct_wav_read_equals_pyav(tmp_path, monkeypatch, channels):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32767, size=(channels, 8000), dtype=np.int16)
    write_wav(pcm, 16000, tmp_path / "a.wav")
    assert audio.read_pcm_wav(tmp_path / "a.wav", 16000) is not None  # the direct path is taken
    direct = audio.decode_audio(tmp_path / "a.wav")
    assert torch.equal(direct, via_pyav(tmp_path / "a.wav", monkeypatch))
    assert torch.equal(direct, torch.from_numpy(pcm[0].astype(np.float32) / 32768))


def test_other_rates_are_resampled_by_pyav(tmp_path):
    write_wav(np.zeros((1, 44100), np.int16), 44100, tmp_path / "b.wav")
    assert audio.read_pcm_wav(tmp_path / "b.wav", 16000) is None
    assert abs(audio.decode_audio(tmp_path / "b.wav").numel() - 16000) < 200


def test_empty_wav_is_a_data_error(tmp_path):
    write_wav(np.zeros((1, 0), np.int16), 16000, tmp_path / "c.wav")
    with pytest.raises(DataError, match="no samples"):
        audio.decode_audio(tmp_path / "c.wav")
