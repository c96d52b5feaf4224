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
classifier is replaced by Linear -> BatchNorm1d -> Tanh to `out_dim` (the release's projection; the paper has none).

`resize` N > 0 resizes each segment's input to N x N (bilinear) before the trunk, as the CTEN paper does for its
ImageNet ResNet-50 (224); 0 feeds it as is. `frozen` fixes the trunk (paper Sec. 4.2, "We fixed the feature
extractor"): no gradients, and eval mode (BatchNorm running statistics) whatever the parent's mode; the projection
still trains. `trunk_features` + `project` split the forward so a frozen trunk's output can be computed once or read
from a feature cache.
"""
import torch
import torchvision
from torch import nn
from torch.nn import functional as nnf

def resnet10(weights=None) -> torchvision.models.ResNet:
    return torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])


ARCHS = {"resnet10": resnet10, "resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50}
FIRST_CONVS = {
    "official": dict(kernel_size=(7, 1), stride=(2, 1), padding=(3, 0)),
    "imagenet": dict(kernel_size=7, stride=2, padding=3),
}


class AudioResNet(nn.Module):
    """(B, T, F, M) fbank segments -> (B, T, out_dim) features. `trunk` holds torchvision's key names (no `fc`)."""

    def __init__(self, arch: str = "resnet18", out_dim: int = 2048, first_conv: str = "official", resize: int = 0,
                 frozen: bool = False):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"audio arch {arch!r} is not one of {sorted(ARCHS)}")
        if first_conv not in FIRST_CONVS:
            raise ValueError(f"audio first conv {first_conv!r} is not one of {sorted(FIRST_CONVS)}")
        if resize < 0:
            raise ValueError(f"audio resize {resize} must be 0 (off) or a side length > 0")
        self.arch = arch
        self.first_conv = first_conv
        self.trunk = ARCHS[arch](weights=None)
        width = self.trunk.fc.in_features
        self.trunk.conv1 = nn.Conv2d(1, 64, bias=False, **FIRST_CONVS[first_conv])
        nn.init.kaiming_normal_(self.trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.trunk.fc = nn.Identity()
        self.proj = nn.Sequential(nn.Linear(width, out_dim), nn.BatchNorm1d(out_dim), nn.Tanh())
        self.out_dim = out_dim
        self.trunk_dim = width
        self.resize = resize
        self.frozen = frozen
        if frozen:
            self.trunk.requires_grad_(False)
            self.trunk.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.trunk.eval()  # BatchNorm keeps the checkpoint's running statistics
        return self

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F, M) segments -> (B, T, trunk_dim), before the projection."""
        b, t = x.shape[:2]
        x = x.reshape(b * t, 1, *x.shape[2:])  # (B*T, 1, F, M)
        if self.resize:
            x = nnf.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return self.trunk(x).view(b, t, -1)

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """Trunk features (B, T, trunk_dim) -> (B, T, out_dim)."""
        b, t = feats.shape[:2]
        return self.proj(feats.reshape(b * t, -1)).view(b, t, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.trunk_features(x))
