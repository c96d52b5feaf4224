"""--decode-device cuda's path run on the CPU: torchvision.io.decode_jpeg (device='cpu') against the PIL path gives
the same frames within JPEG decoder and interpolation tolerance, and CTEN's erased views read through it hold the
same frames as through read_frames."""
import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.io import decode_jpeg

from core.methods.cten import CTENMethod, gpu_view_reader
from datasets.frames import apply_spatial_aug, decode_views, frame_path, read_frames, read_jpeg_bytes, \
    transform_frames
from datasets.errors import DataError
from datasets.video_emotion import VideoEmotionDataset
from fixtures_data import make_video_root, write_frames

W, H, S, N = 160, 120, 32, 24
AUGS = {"centre": (0, 0, 0, 1), "top-left": (1, 0, 0, 1), "bottom-right flip": (4, 1, 0, 1),
        "rotate": (2, 0, 15.0, 1), "brightness": (3, 0, 0, 0.6)}


def aug_of(name: str) -> torch.Tensor:
    return torch.tensor([*AUGS[name], 0, 0, 0, 0], dtype=torch.float32)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two videos of N frames at W x H (large enough for PIL's draft to halve them at S = 32)."""
    root = tmp_path_factory.mktemp("decode")
    make_video_root(root, train_per_class=1, test_per_class=1, n_frames=N, audio=False, srt=False)
    for d in (root / "imgs").glob("*/*"):
        write_frames(d, N, width=W, height=H)
    return root


def a_frame_dir(root):
    return sorted((root / "imgs").glob("*/*"))[0]


def test_decode_jpeg_and_pil_decode_a_frame_alike(root):
    path = frame_path(a_frame_dir(root), 5)
    ours = decode_jpeg(read_jpeg_bytes(path), device="cpu").permute(1, 2, 0).numpy().astype(int)  # (H, W, 3)
    with Image.open(path) as im:
        pil = np.asarray(im.convert("RGB")).astype(int)
    assert ours.shape == pil.shape == (H, W, 3)
    assert np.abs(ours - pil).max() <= 2  # two libjpeg builds: IDCT / upsampling rounding only


@pytest.mark.parametrize("name", sorted(AUGS))
def test_tensor_transform_matches_pil_transform(root, name):
    with Image.open(frame_path(a_frame_dir(root), 3)) as im:
        img = im.convert("RGB")
    pil = np.asarray(apply_spatial_aug(img, aug_of(name), S)).astype(float)  # (S, S, 3)
    frames = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]  # (1, 3, H, W)
    ours = transform_frames(frames, aug_of(name), S)[0].permute(1, 2, 0).numpy().astype(float)
    assert ours.shape == (S, S, 3)
    diff = np.abs(ours - pil)
    if name == "rotate":
        assert (diff.max(axis=-1) > 8).mean() < 0.15  # the edge against the black fill can land a pixel apart
        diff = diff[6:-6, 6:-6]
    assert diff.mean() < 1.0, diff.mean()
    assert np.percentile(diff, 99) <= 8


@pytest.mark.parametrize("name", sorted(AUGS))
def test_batched_decode_gives_the_same_views_as_read_frames(root, name):
    dirs = sorted((root / "imgs").glob("*/*"))
    fis = [torch.tensor([[0, 1, 2], [7, 8, 9]]), torch.tensor([[20, 21, 22], [3, 3, 4]])]  # (T, L), a repeat
    augs = [aug_of(name), aug_of("centre")]
    ours = decode_views(list(zip(dirs, fis, augs)), S, "cpu")  # (B, T, 3, L, S, S)
    pil = torch.stack([read_frames(d, fi, a, S, threads=1) for d, fi, a in zip(dirs, fis, augs)])
    assert ours.shape == pil.shape == (2, 2, 3, 3, S, S) and ours.dtype == torch.uint8
    assert (ours.float() - pil.float()).abs().mean() < 3.0  # PIL decodes at half size (draft), we at full size
    centre = ours[:, :, 0, :, S // 4:-S // 4, S // 4:-S // 4].float().mean((-1, -2))  # (B, T, L) red level
    bright = torch.stack(augs)[:, 3].view(2, 1, 1)
    expected = 8.0 * torch.stack(fis) * bright  # fixtures_data's frame i has red 8 * (i % 32)
    assert torch.allclose(centre, expected, atol=3.0)  # every frame is the one asked for


def test_batched_decode_names_a_missing_frame(root):
    with pytest.raises(DataError, match="000099.jpg"):
        decode_views([(a_frame_dir(root), torch.tensor([[98]]), aug_of("centre"))], S, "cpu")


class FrameIdNet(nn.Module):
    """A CTEN stand-in whose visual 'features' are each snippet frame's red level (fixtures_data encodes the frame
    index there), so the erased views' frames can be read back."""
    modalities = "v"

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))
        self.views = []

    def visual_features(self, video):  # uint8 (B, T, 3, L, S, S) -> (B, T, L)
        return video[:, :, 0].float().mean(dim=(-1, -2))

    def forward(self, visual_feats=None, audio=None):
        self.views.append(visual_feats.detach().clone())
        B, T = visual_feats.shape[:2]
        att = torch.zeros(B, T)
        att[:, :2] = 1.0  # the first two segments are the keyframes
        return {"logits": visual_feats.mean(dim=(1, 2))[:, None] * self.w, "att_v": att}


def erased_views(ds, use_views: bool):
    idx = [0, 1]
    samples = [ds[i] for i in idx]
    batch = {k: torch.stack([s[k] for s in samples]) for k in ("video", "frame_indices", "seg_bounds", "aug",
                                                                "n_frames", "index", "label")}
    net = FrameIdNet()
    method = CTENMethod(F.cross_entropy, rule="joint", read_frames=ds.read_frames,
                        read_views=ds.read_views if use_views else None)
    torch.manual_seed(3)  # the erased views' TSN offsets come from the global RNG
    method.train_step(net, batch, epoch=0)
    return net.views[1]  # (2B, T, L): x_k then x_l


def test_cten_erased_views_through_decode_jpeg_match_the_pil_path(root):
    torch.manual_seed(0)
    ds = VideoEmotionDataset(root, root / "ann.json", "train", with_audio=False, val_fraction=0.0, seq_len=4,
                             snippet_duration=2, sample_size=S, decode_threads=2)
    pil, ours = erased_views(ds, False), erased_views(ds, True)
    assert pil.shape == ours.shape == (4, 4, 2)
    assert torch.allclose(ours, pil, atol=3.0)  # the same frames (8 red levels apart), decoded alike


def test_decode_device_cuda_falls_back_to_the_cpu_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the GPU reader is used")
    args = argparse.Namespace(decode_device="cuda")
    assert gpu_view_reader(args, train_data=object()) is None
    assert "decoded on the CPU" in capsys.readouterr().out
    assert gpu_view_reader(argparse.Namespace(decode_device="cpu"), train_data=object()) is None
