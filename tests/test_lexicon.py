import json

import pytest
import torch

from datasets.errors import DataError
from datasets.lexicon import EmotionLexicon, load_lexicon, nrc_path

VE8 = ["Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust"]
EK6 = ["anger", "disgust", "fear", "joy", "sadness", "surprise"]


@pytest.fixture(scope="module")
def ve8():
    return EmotionLexicon(VE8)


def test_nrc_file_is_the_packaged_lexicon():
    words = load_lexicon(str(nrc_path()))
    assert len(words) == 6468
    assert words["abandoned"] == {"anger", "fear", "negative", "sadness"}
    assert words["happy"] == {"anticipation", "joy", "positive", "trust"}


def test_segment_cue_ve8(ve8):
    cue = ve8.segment("Happy... ABANDONED!")  # case and punctuation ignored
    assert cue.has_cue
    assert cue.sentiment == 0.0  # one positive, one negative word
    expected = dict.fromkeys(["anger", "anticipation", "fear", "joy", "sadness", "trust"], 1 / 6)
    assert cue.emotion == pytest.approx([expected.get(c.lower(), 0.0) for c in VE8])
    assert ve8.segment("happy happy").sentiment == 1.0
    assert ve8.segment("abandoned").sentiment == -1.0


def test_ekman_classes_keep_only_their_emotions():
    ek6 = EmotionLexicon(EK6)
    cue = ek6.segment("so happy")  # anticipation and trust are not Ekman classes
    assert cue.emotion == pytest.approx([0, 0, 0, 1, 0, 0])
    assert cue.sentiment == 1.0


def test_no_cue_word(ve8):
    cue = ve8.segment("qwerty zzz 123")
    assert not cue.has_cue and cue.sentiment == 0.0 and cue.emotion == (0.0,) * 8
    assert not ve8.segment("").has_cue


def test_custom_lexicon_counts_and_sentiment(tmp_path):
    path = tmp_path / "lex.json"
    path.write_text(json.dumps({"good": ["positive", "joy"], "nice": ["positive"], "bad": ["negative", "anger"],
                                "meh": ["positive"]}))
    lex = EmotionLexicon(["anger", "joy"], path=path)
    cue = lex.segment("good nice bad good")  # pos 3, neg 1; joy 2, anger 1
    assert cue.sentiment == pytest.approx(0.5)
    assert cue.emotion == pytest.approx([1 / 3, 2 / 3])
    polar_only = lex.segment("meh")  # a polarity word without an emotion: sentiment but no cue
    assert polar_only.sentiment == 1.0 and not polar_only.has_cue and polar_only.emotion == (0.0, 0.0)
    assert lex.segment("don't").emotion == (0.0, 0.0)


def test_bad_lexicon_file_and_classes(tmp_path):
    with pytest.raises(DataError, match="not found"):
        EmotionLexicon(["joy"], path=tmp_path / "missing.json")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        EmotionLexicon(["joy"], path=corrupt)
    with pytest.raises(ValueError, match="neutral"):
        EmotionLexicon(["joy", "neutral"])


def test_batch_shapes_and_values(ve8):
    out = ve8.batch([["happy day", ""], ["abandoned", "qwerty"]])
    assert out["sentiment"].shape == (2, 2) and out["sentiment"].dtype == torch.float32
    assert out["emotion"].shape == (2, 2, 8)
    assert out["has_cue"].dtype == torch.bool
    assert out["has_cue"].tolist() == [[True, False], [True, False]]
    assert out["sentiment"].tolist() == [[1.0, 0.0], [-1.0, 0.0]]
    assert torch.allclose(out["emotion"].sum(-1), out["has_cue"].float())


def test_batch_rejects_bad_texts(ve8):
    with pytest.raises(ValueError, match="same number"):
        ve8.batch([["a", "b"], ["c"]])
    with pytest.raises(ValueError, match="expected str"):
        ve8.batch([["a", None]])
    with pytest.raises(ValueError, match="is a string"):
        ve8.batch(["ab"])
