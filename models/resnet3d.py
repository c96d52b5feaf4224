"""3D ResNets of Hara et al. ("Can spatiotemporal 3D CNNs retrace the history of 2D CNNs and ImageNet?", CVPR 2018),
as a feature extractor: uint8 clips in, one pooled feature vector per clip out.

Module names and shapes follow the layout of kenshohara/3D-ResNets-PyTorch (shortcut type B, a 1x1x1 conv + BN on
every projection shortcut, `conv1` 7x7x7 with stride (1, 2, 2), max pool, `layer1`..`layer4`), so that both published
Kinetics checkpoints load with no missing or unexpected keys (models/pretrained.py `load_resnet3d`):

| preset | file | keys | trained on pixels |
| --- | --- | --- | --- |
| `kinetics400` | `resnet-101-kinetics.pth` (CVPR 2018 release) | prefixed `module.`, fc 2048 -> 400 | 0-255 minus (114.7748, 107.7354, 99.4750) |
| `kinetics_moments` | `r3d101_KM_200ep.pth` (2020 release) | no prefix, fc 2048 -> 1039 | 0-1, mean (0.4345, 0.4051, 0.3775), std (0.2768, 0.2713, 0.2737) |

Both releases use the same conv1 (temporal kernel 7, temporal stride 1, padding 3) and the same key names; the old
file has no BatchNorm `num_batches_tracked` entries. The classifier `fc` is not part of this module (features only).
The input scaling of the chosen preset is held as (non-persistent) buffers, in 0-255 pixel units.
"""
import torch
from torch import nn

# preset -> (mean, std) in 0-255 pixel units: x_normalised = (x_uint8 - mean) / std
INPUT_PRESETS = {
    "kinetics400": ((114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0)),
    "kinetics_moments": (tuple(255.0 * m for m in (0.4345, 0.4051, 0.3775)),
                         tuple(255.0 * s for s in (0.2768, 0.2713, 0.2737))),
    # x/255 - 100/255: what the CTEN/MART releases feed, whatever the checkpoint (no checkpoint was trained so;
    # the releases' BatchNorm in training mode absorbs it: `bn_train`)
    "official": ((100.0, 100.0, 100.0), (255.0, 255.0, 255.0)),
}

# depth -> (block, blocks per stage)
DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


def conv3x3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1x1(c_in, planes)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = conv1x1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet3D(nn.Module):
    """Clip encoder: uint8 (N, 3, L, H, W) RGB 0-255 -> (N, feature_dim), averaged over time and space.

    `input_preset` names the pixel scaling the weights were trained with (see INPUT_PRESETS). With `frozen=True`
    every parameter has requires_grad False and the module stays in eval mode (BatchNorm uses its running
    statistics) even when a parent module is put in train mode; `bn_train` (the releases' behaviour) lets the
    frozen network's BatchNorm layers follow the parent's mode instead (batch statistics in training, running
    statistics updated by them), the weights still frozen.
    """

    def __init__(self, depth: int = 101, input_preset: str = "kinetics400", frozen: bool = True,
                 bn_train: bool = False):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"3D ResNet depth {depth} is not one of {sorted(DEPTHS)}")
        if input_preset not in INPUT_PRESETS:
            raise ValueError(f"input preset {input_preset!r} is not one of {sorted(INPUT_PRESETS)}")
        kind, blocks = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.input_preset = input_preset
        self.feature_dim = 512 * block.expansion
        mean, std = INPUT_PRESETS[input_preset]
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)

        self.conv1 = nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        c_in = 64
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            stride = 1 if stage == 0 else 2
            layers = []
            for i in range(n):
                downsample = None
                if i == 0 and (stride != 1 or c_in != planes * block.expansion):
                    downsample = nn.Sequential(conv1x1x1(c_in, planes * block.expansion, stride),
                                               nn.BatchNorm3d(planes * block.expansion))
                layers.append(block(c_in, planes, stride if i == 0 else 1, downsample))
                c_in = planes * block.expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layers))

        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.frozen = frozen
        self.bn_train = bn_train
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True):
        super().train(mode and not self.frozen)
        if self.frozen and self.bn_train:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm3d):
                    m.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x / std - mean / std, not (x - mean) / std: with the `official` preset this is the releases' x/255 - 100/255
        # bit for bit (the random R3D-101 of tools/check_release.py turns the 6e-8 rounding apart into 4e-3 in logits)
        x = x.float() / self.pixel_std - self.pixel_mean / self.pixel_std  # (N, 3, L, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))  # (N, feature_dim)
