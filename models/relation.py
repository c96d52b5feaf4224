"""CTEN's temporal relation modules over T segment features (paper Sec. 3.2-3.3, Eqs. 1-7).

- `NonLocalBlock`: intra-modal relation, Eqs. 1-4.
- `CrossModalAttention` / `InterModalRelation`: inter-modal relation, Eqs. 5-6, the official code's direction or the
  paper's symbols' (`direction`).
- `TemporalAttention`: per-segment attention weights, Eq. 7 (paper) or the official joint form.
- `attention_pool`: the attention-weighted temporal pooling that feeds the classifier.
"""
import torch
import torch.nn.functional as F
from torch import nn


class NonLocalBlock(nn.Module):
    """(B, T, D) -> (B, T, D): every segment attends to all T segments of the same modality.

    Q, K, V = theta(F), phi(F), g(F) (Eq. 1, inner width `inner`), S = softmax(Q K^T / sqrt(inner)) row-wise (Eq. 2),
    Z = S V (Eq. 3), W_z = Linear(inner, D) followed by BatchNorm1d over the B*T rows.
    `init='identity'` (paper, default): F' = F + W_z Z (Eq. 4), with W_z's BatchNorm scale and shift zero at start,
    so the block is exactly the identity at initialisation.
    `init='official'`: F' = W_z Z + alpha * F with a learnt scalar alpha = 0 at start (the release; no identity
    path at initialisation).
    """

    def __init__(self, dim: int, inner: int = 256, init: str = "identity"):
        super().__init__()
        if init not in ("identity", "official"):
            raise ValueError(f"non-local init {init!r} is not 'identity' or 'official'")
        self.init = init
        self.theta = nn.Linear(dim, inner)
        self.phi = nn.Linear(dim, inner)
        self.g = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)
        self.bn = nn.BatchNorm1d(dim)
        if init == "identity":
            nn.init.zeros_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)
        else:
            self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b, t, d = f.shape
        q, k, v = self.theta(f), self.phi(f), self.g(f)  # (B, T, inner)  Eq. 1
        s = torch.softmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, dim=-1)  # (B, T, T)  Eq. 2
        z = s @ v  # (B, T, inner)  Eq. 3
        wz = self.bn(self.out(z).reshape(b * t, d)).view(b, t, d)
        if self.init == "identity":
            return f + wz  # Eq. 4
        return wz + self.alpha * f


INTER_DIRECTIONS = ("official", "paper")


class CrossModalAttention(nn.Module):
    """Multi-head attention with ReLU after the q, k, v and output projections (the official form).

    query (B, Tq, D), context (B, Tk, D) -> (B, Tq, D); keys and values both come from `context`.
    """

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        if dim % heads:
            raise ValueError(f"feature width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, H, T, D/H)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.split_heads(F.relu(self.q(query)))
        k = self.split_heads(F.relu(self.k(context)))
        v = self.split_heads(F.relu(self.v(context)))
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, Tq, D/H), softmax(q k^T / sqrt(D/H)) v
        y = y.transpose(1, 2).reshape(query.shape)
        return F.relu(self.o(y))


class InterModalRelation(nn.Module):
    """(F'_v, F'_a) (B, T, D) each -> (F''_v, F''_a), Eqs. 5-6, in one of two readings of which stream queries.

    `direction='official'` (default, the release and the spec): F''_v = F'_v + MHA(query = F'_a, key = value = F'_v),
    F''_a = F'_a + MHA(query = F'_v, key = value = F'_a): the other modality's segments decide how each stream's own
    segments are mixed (the paper's words: audio "guides the calculation of visual temporal correlation").
    `direction='paper'` (Eq. 5's symbols, U_v = S(Q_v, K_a) V_a): F''_v = F'_v + MHA(query = F'_v, key = value = F'_a),
    F''_a = F'_a + MHA(query = F'_a, key = value = F'_v): each stream's segments gather the other modality's features.
    """

    def __init__(self, dim: int, heads: int = 8, direction: str = "official"):
        super().__init__()
        if direction not in INTER_DIRECTIONS:
            raise ValueError(f"inter-modal direction {direction!r} is not one of {INTER_DIRECTIONS}")
        self.direction = direction
        self.to_visual = CrossModalAttention(dim, heads)
        self.to_audio = CrossModalAttention(dim, heads)

    def forward(self, fv: torch.Tensor, fa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.direction == "paper":
            return fv + self.to_visual(fv, fa), fa + self.to_audio(fa, fv)  # Eqs. 5-6, U_v = S(Q_v, K_a) V_a
        return fv + self.to_visual(fa, fv), fa + self.to_audio(fv, fa)  # Eq. 6, the release's reading


class TemporalAttention(nn.Module):
    """(B, T, D) -> (B, T) non-negative segment weights.

    `squash=False` (paper, Eq. 7): A = ReLU(W1 (W2 X^T)^T), W2: D -> 1 per segment (no bias), W1: T -> T.
    `squash=True` (official, used on the concatenated 2D features): W2 -> BatchNorm1d(1) over all B x T scores
    -> Tanh -> W1 -> ReLU.
    `w1_init`: 'default' (PyTorch's Linear init: W1 mixes segment positions from the start, as in both releases) or
    'identity' (W1 = I, b1 = 0: at initialisation A_t reads segment t's own score only, so the attention starts
    content-driven and permutation-equivariant over T; training may still learn a mix) [ours].
    """

    def __init__(self, dim: int, seq_len: int, squash: bool = False, w1_init: str = "default"):
        super().__init__()
        if w1_init not in ("default", "identity"):
            raise ValueError(f"W1 init {w1_init!r} is not 'default' or 'identity'")
        self.w2 = nn.Linear(dim, 1, bias=False)
        self.bn = nn.BatchNorm1d(1) if squash else None
        self.w1 = nn.Linear(seq_len, seq_len)
        if w1_init == "identity":
            with torch.no_grad():
                self.w1.weight.copy_(torch.eye(seq_len))
                self.w1.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.w1.in_features:
            raise ValueError(f"the temporal attention (Eq. 7, W1: T x T) was built for T = {self.w1.in_features} "
                             f"segments and got {x.shape[1]}; CTEN evaluates with the training T (--eval-seq-len "
                             f"must equal --seq-len)")
        h = self.w2(x).transpose(1, 2)  # (B, 1, T)
        if self.bn is not None:
            h = torch.tanh(self.bn(h))
        return F.relu(self.w1(h.squeeze(1)))  # (B, T)  Eq. 7


def attention_pool(f: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D): mean over T of A_t f_t, as the release does (A is not renormalised)."""
    return (f * att.unsqueeze(-1)).mean(dim=1)
