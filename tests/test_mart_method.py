"""MART stage 1 end to end on a tiny random MBT, a tiny random BERT and a tiny batch."""
import pytest
import torch

from core.ema import ModelEMA
from core.losses import classification_loss
from core.methods.mart import MARTMethod
from datasets.lexicon import EmotionLexicon
from models.ast import ASTConfig
from models.pretrained import CheckpointError
from models.mart import MART, ComplementaryLearning, DecoderConfig, MaskedDecoder, build_mart, mbt_state_from_mart
from models.mbt import MBT
from models.text import TextEncoder, bundled_text_model_path
from models.video_vit import VideoViTConfig

VE8 = ["Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust"]
POLARITY = torch.tensor([-1, 1, -1, -1, 1, -1, 1, 1])
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "love", "this", "happy", "day", "war", "is", "terrible",
         "abandoned", "fear", "joy", "the"]
VIDEO = VideoViTConfig(img_size=32, num_frames=4, dim=32, depth=2, num_heads=4)  # 2 x 2 x 2 = 8 tokens
AUDIO = ASTConfig(n_mels=32, n_frames=26, dim=32, depth=2, num_heads=4)
TINY_DECODER = DecoderConfig(width=16, depth=1, num_heads=2)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer
    folder = tmp_path_factory.mktemp("tiny_bert")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lexicon():
    return EmotionLexicon(VE8)


def tiny_mart(bert_dir, text_trainable=False, seed=0) -> MART:
    torch.manual_seed(seed)
    mbt = MBT(len(VE8), video=VIDEO, audio=AUDIO, n_bottleneck=2, fusion_layer=1)
    return build_mart(mbt, len(VE8), TextEncoder(bert_dir, VIDEO.dim, trainable=text_trainable), TINY_DECODER)


TEXTS = [["i love this happy day", "", "the day"], ["war is terrible", "abandoned in fear", ""],
         ["the joy", "fear", "this war"]]


def tiny_batch(seed=0, B=3, T=2):
    """B != T by default, so that a (batch, segment) transposition cannot pass."""
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.randint(0, 256, (B, T, 3, VIDEO.num_frames, 32, 32), dtype=torch.uint8, generator=g),
            "audio": torch.randn(B, T, AUDIO.n_frames, AUDIO.n_mels, generator=g),
            "label": torch.tensor([4, 3, 0])[:B],
            "texts": [v[:T] for v in TEXTS[:B]]}


def make_method(lexicon, epochs=10, **kw):
    return MARTMethod(classification_loss("pcce", POLARITY), POLARITY, lexicon, epochs, **kw)


def test_parts_must_match_the_backbone(bert_dir):
    model = tiny_mart(bert_dir)
    with pytest.raises(ValueError, match="decoder"):
        MART(model.mbt, MaskedDecoder(32, 9, 2 * 16 * 16 * 3, 8, TINY_DECODER), model.comp, model.text)
    with pytest.raises(ValueError, match="width"):
        MART(model.mbt, model.decoder, ComplementaryLearning(16, 8, 8), model.text)


def test_forward_without_text_is_the_mbt(bert_dir):
    model = tiny_mart(bert_dir).eval()
    batch = tiny_batch()
    with torch.no_grad():
        a = model(video=batch["video"], audio=batch["audio"])
        b = model.mbt(batch["video"], batch["audio"])
    assert torch.equal(a["logits"], b["logits"]) and "recon" not in a


def test_student_and_guide_outputs(bert_dir):
    model = tiny_mart(bert_dir)
    batch = tiny_batch()
    ids, mask = model.text.tokenize([s for v in batch["texts"] for s in v], "cpu")
    with torch.no_grad():
        guide = model.guide(batch["video"], batch["audio"], ids, mask)
        out = model(batch["video"], batch["audio"], ids, mask, video_mask=torch.zeros(3, 2, 8, dtype=torch.bool))
    assert guide["seg_logits"].shape == (3, 2, 8) and guide["cls_attn"].shape == (3, 2, 8)
    assert torch.allclose(guide["text_attn"].sum(-1), torch.ones(3, 2), atol=1e-5)
    assert out["recon"].shape == (3, 2, 8, 2 * 16 * 16 * 3) and out["dec_logits"].shape == (3, 2, 8)
    assert out["aligned_v"].shape == out["remainder_a"].shape == (3, 2, 32)
    assert out["aux_logits_v"].shape == out["aux_logits_a"].shape == (3, 8)


def test_each_segment_keeps_its_own_video_and_text(bert_dir):
    """Changing the video, then the transcript, of segment (b=1, t=0) changes the per-segment outputs of that
    segment only (video 1's segment-averaged logits too), whatever (batch, segment) order is used inside."""
    model = tiny_mart(bert_dir).eval()
    batch = tiny_batch()
    flat = [s for v in batch["texts"] for s in v]
    ids, mask = model.text.tokenize(flat, "cpu")
    with torch.no_grad():
        ref = model(batch["video"], batch["audio"], ids, mask)
        video = batch["video"].clone()
        video[1, 0] = 255 - video[1, 0]
        moved = model(video, batch["audio"], ids, mask)
        flat2 = list(flat)
        flat2[1 * 2 + 0] = "happy joy"
        ids2, mask2 = model.text.tokenize(flat2, "cpu")
        retexted = model(batch["video"], batch["audio"], ids2, mask2)
    changed = (moved["dec_logits"] - ref["dec_logits"]).abs().sum(-1) > 1e-6  # (B, T)
    assert changed.tolist() == [[False, False], [True, False], [False, False]]
    changed = (moved["logits"] - ref["logits"]).abs().sum(-1) > 1e-6  # (B,)
    assert changed.tolist() == [False, True, False]
    changed = (retexted["aligned_v"] - ref["aligned_v"]).abs().sum(-1) > 1e-6
    assert changed.tolist() == [[False, False], [True, False], [False, False]]


def test_every_trainable_part_gets_a_gradient_and_moves(bert_dir, lexicon):
    model = tiny_mart(bert_dir, text_trainable=True)
    method = make_method(lexicon, no_mask_prob=0.0)  # every segment masked, so the mask token is used
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for part in ("decoder.", "comp.", "text.proj.", "text.encoder.", "mbt.video.mask_token", "mbt.head_v."):
        assert any(n.startswith(part) for n in params), part
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    loss, logs = method.train_step(model, tiny_batch(), epoch=5)
    loss.backward()
    assert logs["masked_fraction"] > 0
    no_grad = [n for n, p in params.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
    optimizer.step()
    unchanged = [n for n, p in params.items() if torch.equal(p.detach(), before[n])]
    assert unchanged == []


def test_frozen_text_encoder_stays_frozen(bert_dir, lexicon):
    model = tiny_mart(bert_dir, text_trainable=False).train()
    assert not model.text.encoder.training and model.text.proj.training
    assert not any(p.requires_grad for p in model.text.encoder.parameters())
    loss, _ = make_method(lexicon).train_step(model, tiny_batch(), epoch=0)
    loss.backward()
    assert all(p.grad is None for p in model.text.encoder.parameters())
    assert model.text.proj.weight.grad is not None


def test_logs_and_schedule(bert_dir, lexicon):
    model = tiny_mart(bert_dir)
    _, logs = make_method(lexicon, epochs=10).train_step(model, tiny_batch(), epoch=2)
    assert logs["mask_ratio"] == pytest.approx(0.1 + 0.8 * 0.2)
    for key in ("loss_rec", "loss_distill", "loss_comp", "loss_nce", "loss_push", "loss_cls", "loss_cls_aux", "acc"):
        assert key in logs
    assert logs["cues"] == 5  # "happy", "terrible", "abandoned ... fear", "joy", "fear"; empty texts have none
    assert logs["cues"] == logs["cues_verified"] + logs["cues_rejected_sentiment"] + logs["cues_rejected_emotion"]


def test_stage1_steps_lower_the_loss_with_an_ema_teacher(bert_dir, lexicon):
    torch.set_num_threads(1)
    model = tiny_mart(bert_dir)
    ema = ModelEMA(model, decay=0.9, warmup=0)
    calls = []

    def teacher():
        calls.append(1)
        return ema.module

    method = make_method(lexicon, teacher_fn=teacher)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = tiny_batch()

    def fixed_loss():
        torch.manual_seed(123)
        with torch.no_grad():
            return method.train_step(model, batch, epoch=5)[0].item()

    start = fixed_loss()
    for _ in range(15):
        loss, logs = method.train_step(model, batch, epoch=5)  # ratio 0.5: 4 of 8 tokens per masked segment
        assert round(logs["masked_fraction"] * 12, 6) in range(7)  # whole segments of 4 masked tokens out of 6 x 8
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
    assert calls and fixed_loss() < 0.8 * start


def test_predict_gives_logits_and_degree_curves(bert_dir, lexicon):
    model = tiny_mart(bert_dir).eval()
    out = make_method(lexicon).predict(model, tiny_batch())
    assert out["logits"].shape == (3, 8)
    assert out["degree_v"].shape == out["degree_a"].shape == out["degree_dec"].shape == (3, 2)


def test_bad_texts_are_reported(bert_dir, lexicon):
    model, method = tiny_mart(bert_dir), make_method(lexicon)
    batch = tiny_batch()
    del batch["texts"]
    with pytest.raises(ValueError, match="transcripts"):
        method.train_step(model, batch, 0)
    batch["texts"] = [["a"], ["b"], ["c"]]
    with pytest.raises(ValueError, match="3 lists of 2"):
        method.train_step(model, batch, 0)


def test_text_model_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextEncoder(tmp_path, 32)
    assert (bundled_text_model_path() / "config.json").is_file()


def test_backbone_state_for_stage2(bert_dir):
    model = tiny_mart(bert_dir)
    fresh = MBT(len(VE8), video=VIDEO, audio=AUDIO, n_bottleneck=2, fusion_layer=1)
    fresh.load_state_dict(mbt_state_from_mart(model.state_dict()), strict=True)
    assert torch.equal(fresh.head_v.weight, model.mbt.head_v.weight)
    with pytest.raises(CheckpointError, match="stage-1"):
        mbt_state_from_mart(fresh.state_dict(), "x.pth")


def test_the_teachers_output_changes_the_targets(bert_dir, lexicon, monkeypatch):
    """The distillation target is the teacher's per-segment distribution where no cue is verified: two different
    teachers give two different targets, each equal to its own softmax(seg_logits_v + seg_logits_a) there."""
    import core.methods.mart as mart_method
    seen = []
    original = mart_method.distillation_kl
    monkeypatch.setattr(mart_method, "distillation_kl", lambda target, logits: seen.append(target) or original(target, logits))
    student, batch = tiny_mart(bert_dir, seed=0), tiny_batch()
    batch["texts"] = [["the day", "the"], ["the", ""], ["", "the day"]]  # no cue anywhere
    expected = []
    for seed in (1, 2):
        teacher = tiny_mart(bert_dir, seed=seed).eval()
        method = make_method(lexicon, teacher_fn=lambda t=teacher: t)
        torch.manual_seed(0)
        method.train_step(student, batch, epoch=0)
        ids, mask = teacher.text.tokenize([s for v in batch["texts"] for s in v], "cpu")
        with torch.no_grad():
            expected.append(teacher.guide(batch["video"], batch["audio"], ids, mask)["seg_logits"].softmax(-1))
    assert len(seen) == 2 and not torch.allclose(seen[0], seen[1], atol=1e-4)
    for target, want in zip(seen, expected):
        torch.testing.assert_close(target, want, atol=1e-5, rtol=1e-5)


def test_verified_cues_move_the_targets_towards_the_lexicon(bert_dir, lexicon, monkeypatch):
    import core.methods.mart as mart_method
    seen = []
    original = mart_method.distillation_kl
    monkeypatch.setattr(mart_method, "distillation_kl", lambda target, logits: seen.append(target) or original(target, logits))
    model, batch = tiny_mart(bert_dir), tiny_batch()
    for cues in (True, False):
        torch.manual_seed(0)
        make_method(lexicon, match_threshold=0.0, cues=cues).train_step(model, batch, epoch=0)
    with_cues, without = seen
    # segment (0, 0) "i love this happy day" is a verified Joy cue for a Joy video: more Joy in the target
    assert with_cues[0, 0, 4] > without[0, 0, 4] + 0.1
    # empty transcript (0, 1): the teacher alone either way
    torch.testing.assert_close(with_cues[0, 1], without[0, 1])


def test_random_masking_and_switched_off_parts(bert_dir, lexicon):
    model, batch = tiny_mart(bert_dir), tiny_batch()
    torch.manual_seed(0)
    _, full = make_method(lexicon).train_step(model, batch, epoch=5)
    torch.manual_seed(0)
    loss, logs = make_method(lexicon, masking="random", distill_weight=0.0, comp_weight=0.0,
                             verify=False).train_step(model, batch, epoch=5)
    assert logs["masked_fraction"] <= 0.5 and torch.isfinite(loss)
    # without distillation and complementary learning the loss is the classification + weighted reconstruction
    assert loss.item() == pytest.approx(logs["loss_cls"] + 0.05 * logs["loss_rec"], rel=1e-4)
    with pytest.raises(ValueError, match="masking"):
        make_method(lexicon, masking="nope")


def test_frozen_text_cache_gives_the_encoders_output(bert_dir):
    cached = tiny_mart(bert_dir).text
    plain = TextEncoder(bert_dir, VIDEO.dim, cache_size=0)
    plain.proj.load_state_dict(cached.proj.state_dict())
    texts = ["i love this happy day", "", "war is terrible", "i love this happy day"]
    ids, mask = cached.tokenize(texts, "cpu")
    with torch.no_grad():
        first, again, want = cached(ids, mask), cached(ids, mask), plain(ids, mask)
    assert len(cached._cache) == 3  # three distinct sequences
    valid = mask[..., None]
    torch.testing.assert_close(first * valid, want * valid, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, first)


def test_default_step_composes_every_term_with_its_weight(bert_dir, lexicon):
    """MART stage 1's loss with every part on and weights other than 1: L = w_rec L_rec + w_distill (L_seg +
    w_degree L_degree) + w_comp (L_nce + w_push L_push + L_cls_aux) + L_cls; the degree KL is nonzero here, so a
    distillation without it fails."""
    model, batch = tiny_mart(bert_dir), tiny_batch()
    torch.manual_seed(0)
    loss, logs = make_method(lexicon, degree_weight=0.7, distill_weight=1.3, comp_weight=0.9, push_weight=1.1,
                             push_margin=-1.0).train_step(model, batch, epoch=5)
    assert logs["loss_distill_degree"] > 1e-4 and logs["loss_push"] > 1e-4
    assert logs["loss_distill"] == pytest.approx(logs["loss_distill_seg"] + 0.7 * logs["loss_distill_degree"],
                                                 rel=1e-5)
    assert logs["loss_comp"] == pytest.approx(logs["loss_nce"] + 1.1 * logs["loss_push"], rel=1e-5)
    expected = (0.05 * logs["loss_rec"] + 1.3 * logs["loss_distill"]
                + 0.9 * (logs["loss_comp"] + logs["loss_cls_aux"]) + logs["loss_cls"])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
