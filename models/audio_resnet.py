"""The audio branch of CTEN: a 2D ResNet over each segment's log-mel spectrogram, projected to the visual width.

Per segment the spectrogram (F time frames x 128 mel bins) is one single-channel image with time as height and
mel as width (the official orientation). The torchvision ResNet's first conv is replaced for one input channel:

| `first_conv` | kernel / stride / padding | ImageNet init (models/pretrained.py) |
| --- | --- | --- |
| `official` (default) | (7, 1) / (2, 1) / (3, 0), the CTEN and VAANet release | none: the shapes differ, it starts random |
| `imagenet` | 7x7 / 2 / 3, torchvision's own | the sum of the three RGB kernels |

The papers say ResNet-50 (`arch='resnet50'`); the official code uses ResNet-18 (`arch='resnet18'`, default);
`resnet10` (one BasicBlock per stage, no published weights) is a small variant for the demo and tests. After
global average pooling (the official fixed AvgPool2d([4, 8]) equals it for 100 x 128 inputs), the torchvision
classifier is replaced by Linear -> BatchNorm1d -> Tanh to `out_dim`.
"""
import torch
import torchvision
from torch import nn

def resnet10(weights=None) -> torchvision.models.ResNet:
    return torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])


ARCHS = {"resnet10": resnet10, "resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50}
FIRST_CONVS = {
    "official": dict(kernel_size=(7, 1), stride=(2, 1), padding=(3, 0)),
    "imagenet": dict(kernel_size=7, stride=2, padding=3),
}


class AudioResNet(nn.Module):
    """(B, T, F, M) fbank segments -> (B, T, out_dim) features. `trunk` holds torchvision's key names (no `fc`)."""

    def __init__(self, arch: str = "resnet18", out_dim: int = 2048, first_conv: str = "official"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"audio arch {arch!r} is not one of {sorted(ARCHS)}")
        if first_conv not in FIRST_CONVS:
            raise ValueError(f"audio first conv {first_conv!r} is not one of {sorted(FIRST_CONVS)}")
        self.arch = arch
        self.first_conv = first_conv
        self.trunk = ARCHS[arch](weights=None)
        width = self.trunk.fc.in_features
        self.trunk.conv1 = nn.Conv2d(1, 64, bias=False, **FIRST_CONVS[first_conv])
        nn.init.kaiming_normal_(self.trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.trunk.fc = nn.Identity()
        self.proj = nn.Sequential(nn.Linear(width, out_dim), nn.BatchNorm1d(out_dim), nn.Tanh())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        x = x.reshape(b * t, 1, *x.shape[2:])  # (B*T, 1, F, M)
        x = self.proj(self.trunk(x))  # (B*T, out_dim)
        return x.view(b, t, -1)
