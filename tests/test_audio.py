import numpy as np
import pytest
import torch
from torchaudio.compliance import kaldi

from datasets.errors import DataError
from datasets.audio import (decode_audio, log_mel, normalise_fbank, num_frames, segment_features, spec_augment,
                            window_frames, window_starts)
from fixtures_data import tone, write_audio, write_video_only


def test_decode_first_channel_and_resample(tmp_path):
    left = write_audio(tmp_path / "left.wav", np.stack([tone(1.0, 8000), np.zeros(8000, np.float32)]), 8000)
    right = write_audio(tmp_path / "right.wav", np.stack([np.zeros(8000, np.float32), tone(1.0, 8000)]), 8000)
    wave = decode_audio(left)
    assert wave.dtype == torch.float32 and abs(wave.numel() - 16000) <= 32  # 8 kHz -> 16 kHz
    assert 0.45 < wave.abs().max() < 0.55
    assert decode_audio(right).abs().max() < 1e-3  # first channel only, no downmix
    mp3 = decode_audio(write_audio(tmp_path / "a.mp3", tone(1.0, 22050), 22050))
    assert abs(mp3.numel() - 16000) < 1000 and mp3.abs().max() > 0.3


def test_decode_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"absent.mp3: audio file not found.*missing_audio='zeros'"):
        decode_audio(tmp_path / "absent.mp3")
    (tmp_path / "bad.mp3").write_bytes(b"\x00garbage" * 64)
    with pytest.raises(DataError, match=r"bad.mp3: cannot decode audio"):
        decode_audio(tmp_path / "bad.mp3")
    with pytest.raises(DataError, match=r"video.avi: file has no audio stream"):
        decode_audio(write_video_only(tmp_path / "video.avi"))


def test_fbank_matches_kaldi_and_normalisation():
    wave = torch.from_numpy(tone(1.0, 16000, 700.0)) + 0.1  # a DC offset, removed before the fbank
    feats = log_mel(wave)
    assert feats.shape == (98, 128)  # 1 + (16000 - 400) // 160 frames
    ref = kaldi.fbank((wave - wave.mean())[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                      window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25)
    assert torch.allclose(feats, ref)
    assert torch.allclose(normalise_fbank(feats), (ref + 6.6268077) / (2 * 5.358466))
    peak_bin = int(feats.mean(0).argmax())
    assert 20 < peak_bin < 60  # 700 Hz sits low on the 128-bin mel scale up to 8 kHz


def test_silent_audio_gives_finite_features():
    x = segment_features(torch.zeros(16000), torch.tensor([[0.0, 0.5], [0.5, 1.0]]), spec_aug=True,
                         training=True, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 100, 128) and torch.isfinite(x).all()
    tiny = segment_features(torch.zeros(10), torch.tensor([[0.0, 1.0]]))  # shorter than one 25 ms window
    assert tiny.shape == (1, 100, 128) and torch.isfinite(tiny).all()


def test_window_starts_alignment():
    seg = torch.tensor([[0.0, 2.0], [2.0, 4.0], [4.0, 6.0]])
    assert window_starts(seg, period=600).tolist() == [50, 250, 450]  # centred in each 2-s span
    g = torch.Generator().manual_seed(0)
    starts = torch.stack([window_starts(seg, 600, training=True, generator=g) for _ in range(200)])
    lo = torch.tensor([0, 200, 400])
    assert ((starts >= lo) & (starts <= lo + 100)).all() and len(set(starts[:, 1].tolist())) > 20
    short = torch.tensor([[0.0, 0.25], [0.25, 0.5], [3.0, 3.25]])  # segments shorter than the 1-s window
    assert window_starts(short, 325).tolist() == [0, 0, 225]  # centred on the span, kept inside the audio
    assert window_starts(short, 325, training=True, generator=g).tolist() == [0, 0, 225]


def test_short_audio_is_looped():
    starts = window_starts(torch.tensor([[0.0, 1.0], [1.0, 2.0]]), period=30)  # 0.3 s of audio
    idx = window_frames(starts, 100, period=30, n_feat=28)
    assert idx.shape == (2, 100)
    assert idx[0].tolist() == [min(i % 30, 27) for i in range(100)]
    assert idx[1].tolist() == [min((100 + i) % 30, 27) for i in range(100)]  # the loop continues in time


def test_fbank_of_selected_frames_equals_full():
    wave = torch.from_numpy(tone(3.0, 16000, 523.0)) * torch.linspace(0.1, 1.0, 48000)
    full = log_mel(wave)
    assert full.shape[0] == num_frames(48000) == 298
    frames = torch.tensor([0, 1, 2, 50, 51, 200, 297])
    assert torch.allclose(log_mel(wave, frames=frames), full[frames], atol=1e-4)


def test_spec_augment_one_band_each():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x = spec_augment(torch.ones(3, 100, 128), 24, 192, generator=g).reshape(300, 128)
        freq_zero = (x == 0).all(0)
        time_zero = (x == 0).all(1)
        assert freq_zero.sum() <= 24 and time_zero.sum() <= 192
        for band in (freq_zero, time_zero):
            where = band.nonzero().flatten()
            assert len(where) == 0 or where[-1] - where[0] + 1 == len(where)  # one contiguous band
        assert ((x == 0) == (freq_zero[None, :] | time_zero[:, None])).all()
    short = spec_augment(torch.ones(1, 50, 8), 24, 192, generator=g)  # masks clipped to the input
    assert short.shape == (1, 50, 8)


def test_segment_features_values():
    wave = torch.from_numpy(tone(2.0, 16000, 440.0))
    x = segment_features(wave, torch.tensor([[0.0, 1.0], [1.0, 2.0]]))
    ref = normalise_fbank(log_mel(wave))
    assert ref.shape[0] == 198  # the last partial window is dropped
    assert x.dtype == torch.float32 and torch.allclose(x[0], ref[:100])
    assert torch.allclose(x[1, :98], ref[100:]) and torch.allclose(x[1, 98:], ref[[197, 197]])


def test_mfcc_option():
    x = segment_features(torch.from_numpy(tone(1.0)), torch.tensor([[0.0, 1.0]]), kind="mfcc", n_mfcc=20)
    assert x.shape == (1, 100, 20) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="fbank' or 'mfcc"):
        segment_features(torch.zeros(100), torch.tensor([[0.0, 1.0]]), kind="mel")
