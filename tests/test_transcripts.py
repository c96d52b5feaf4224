import pytest
import torch

from datasets.transcripts import Cue, parse_srt, read_srt, segment_texts


def test_parse_tolerant_formats():
    text = ("\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\nHello <i>there</i>\r\nfriend\r\n\r\n"
            "00:00:03.2 --> 00:00:04,000 X1:10 X2:20\r\nno index line\r\n"
            "3\r\n00:00:05,000 --> 00:00:06,000\r\nno blank line before me\r\n\r\n\r\n")
    t = parse_srt(text)
    assert t.garbage == 0
    assert t.cues == [Cue(1.0, 2.5, "Hello there friend"), Cue(3.2, 4.0, "no index line"),
                      Cue(5.0, 6.0, "no blank line before me")]


def test_garbage_blocks_skipped_and_counted():
    text = ("1\n00:00:01,000 --> 00:00:02,000\nkept\n\n"
            "just some words\n\n"
            "2\n00:00:09,000 --> 00:00:03,000\nends before it starts\n\n"
            "3\n00:00:04,000 --> 00:00:05,000\nConversion failed\n\n"
            "4\n0:0:6,5 --> 0:0:7,25\nshort fields\n")
    t = parse_srt(text)
    assert t.garbage == 2 and not t.unusable
    assert t.cues == [Cue(1.0, 2.0, "kept"), Cue(6.5, 7.25, "short fields")]


def test_entirely_garbage_file_warns(tmp_path):
    p = tmp_path / "v.srt"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary junk\xff\xfe\n\nmore junk\n")
    with pytest.warns(UserWarning, match=r"v.srt: no valid subtitle cue in 2 block"):
        t = read_srt(p)
    assert t.unusable and t.cues == [] and t.garbage == 2
    empty = tmp_path / "empty.srt"
    empty.write_text("")
    assert read_srt(empty).cues == [] and not read_srt(empty).unusable


def test_segment_texts_overlap_and_clipping():
    seg = torch.tensor([[0.0, 2.0], [2.0, 4.0], [4.0, 6.0]])
    cues = [Cue(1.5, 2.5, "across"), Cue(4.5, 5.0, "late"), Cue(0.0, 1.0, "early"), Cue(5.5, 60.0, "past end"),
            Cue(30.0, 40.0, "after the video")]
    assert segment_texts(cues, seg, duration=6.0) == ["across early", "across", "late past end"]
    assert segment_texts([], seg, duration=6.0) == ["", "", ""]
    assert segment_texts([Cue(6.0, 6.0, "zero")], seg) == ["", "", ""]


def test_segment_texts_looped_video():
    seg = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]])  # a 2-s video loop-padded to 4 s
    assert segment_texts([Cue(0.2, 0.4, "a")], seg, duration=2.0) == ["a", "", "a", ""]
    assert segment_texts([Cue(0.2, 0.4, "a")], seg) == ["a", "", "", ""]
