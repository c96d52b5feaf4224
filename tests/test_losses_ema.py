import math

import pytest
import torch
from torch import nn

from core.ema import ModelEMA, ema_decay
from core.losses import classification_loss, pcce


def test_pcce_weights_only_polarity_mistakes():
    polarity = torch.tensor([1, 1, -1, -1])
    labels = torch.tensor([0, 0])
    same = torch.tensor([[0.0, 3.0, 0.0, 0.0]])  # wrong class, same polarity
    flip = torch.tensor([[0.0, 0.0, 3.0, 0.0]])  # wrong class, other polarity
    ce = nn.functional.cross_entropy(same, labels[:1])
    assert pcce(same, labels[:1], polarity, 0.5) == pytest.approx(ce.item())
    assert pcce(flip, labels[:1], polarity, 0.5) == pytest.approx(1.5 * ce.item())
    both = torch.cat([same, flip])
    assert pcce(both, labels, polarity, 0.5) == pytest.approx((ce.item() + 1.5 * ce.item()) / 2)


def test_classification_loss_rejects_unknown():
    with pytest.raises(ValueError, match="unknown loss"):
        classification_loss("focal", torch.ones(2))


def test_ema_decay_warmup():
    assert ema_decay(1, 0.999, 2000.0) == pytest.approx(0.999 * (1 - math.exp(-1 / 2000)))
    assert ema_decay(10**6, 0.999, 2000.0) == pytest.approx(0.999)
    assert ema_decay(5, 0.9, 0.0) == 0.9


def test_ema_update_arithmetic():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.5, warmup=0.0)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, 0.5 * before + 0.5 * model[0].weight)
    assert ema.module[1].num_batches_tracked.item() == 7  # integer buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters())
    state = ema.state_dict()
    other = ModelEMA(model, decay=0.5, warmup=0.0)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.module[0].weight, ema.module[0].weight)


def test_ema_update_weights_the_copy_by_the_decay_and_the_model_by_one_minus_it():
    """decay 0.9 (with 0.5, d = 1 - d and swapped weights pass): p_ema <- 0.9 p_ema + 0.1 p, buffers alike."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, warmup=0.0)
    with torch.no_grad():
        model[0].weight.fill_(10.0)
        model[1].running_mean.fill_(-20.0)
    ema_weight, ema_mean = ema.module[0].weight.clone(), ema.module[1].running_mean.clone()
    ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, 0.9 * ema_weight + 0.1 * 10.0)
    torch.testing.assert_close(ema.module[1].running_mean, 0.9 * ema_mean + 0.1 * -20.0)
    ema.update(model)  # a second step moves a tenth of the remaining gap again
    torch.testing.assert_close(ema.module[0].weight, 0.81 * ema_weight + 0.19 * 10.0)
