"""Classification losses shared by CTEN and MART."""
import torch
import torch.nn.functional as F


def pcce(logits: torch.Tensor, labels: torch.Tensor, polarity: torch.Tensor, lambda0: float = 0.5) -> torch.Tensor:
    """Polarity-consistent cross-entropy (CTEN Eq. 12 option, MART's classification loss).

    Per-sample CE is multiplied by (1 + lambda0) when the predicted class's polarity is opposite to the label's.
    logits (B, C), labels (B,), polarity (C,) of +1/-1, or 0 for a neutral class (no polarity: a neutral label or
    prediction is never a polarity flip). Returns the batch mean.
    """
    ce = F.cross_entropy(logits.float(), labels, reduction="none")  # (B,)
    pred = logits.argmax(dim=1)
    flipped = (polarity[pred] * polarity[labels] < 0).float()  # opposite signs, both polar
    return (ce * (1.0 + lambda0 * flipped)).mean()


def classification_loss(kind: str, polarity: torch.Tensor, lambda0: float = 0.5):
    """'ce' or 'pcce' as a callable (logits, labels) -> scalar."""
    if kind == "ce":
        return lambda logits, labels: F.cross_entropy(logits.float(), labels)
    if kind == "pcce":
        return lambda logits, labels: pcce(logits, labels, polarity, lambda0)
    raise ValueError(f"unknown loss {kind!r}: choose 'ce' or 'pcce'")
