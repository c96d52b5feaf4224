"""The one place that reads published weight files into this project's modules.

Shared helpers first (reading a file safely, unwrapping containers, stripping prefixes, checking keys), then one
section per family of published checkpoints. Every loader is strict on the keys of the module it fills: a file that
does not fit raises CheckpointError naming the file and listing the missing, unexpected and mis-shaped keys.
"""
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A weight file that is missing, unreadable, or does not fit the module it is loaded into."""


# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------------

def read_checkpoint(path: str | Path, trusted: bool = False) -> object:
    """torch.load on CPU. Only tensors and plain containers are unpickled unless `trusted` (full pickle, which can
    run code from the file: use it only for files from a source you trust)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file {path} does not exist; pass the path of the downloaded checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as e:
        hint = "" if trusted else (" If the file comes from a source you trust and holds more than tensors, "
                                   "load it with trusted=True.")
        raise CheckpointError(f"could not read weight file {path}: {type(e).__name__}: {e}.{hint}") from e


def unwrap_state_dict(obj: object, path: str | Path, containers: tuple[str, ...] = ("state_dict", "model", "module")
                      ) -> dict[str, torch.Tensor]:
    """Descends through dict containers (`{'state_dict': ...}`, `{'model': ...}`, `{'module': ...}`) to the first
    mapping whose values are all tensors."""
    while isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        inner = next((obj[k] for k in containers if k in obj), None)
        if inner is None:
            break
        obj = inner
    found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"weight file {path} holds no state dict (looked inside {list(containers)}; found {found})")


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Removes `prefix` from every key when all keys carry it (e.g. `module.` from DataParallel)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def is_bn_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def check_keys(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, may_miss=is_bn_counter) -> None:
    """Raises CheckpointError unless `state` has exactly the module's keys with the same shapes; keys for which
    `may_miss(key)` is true may be absent (e.g. BatchNorm counters that files from PyTorch < 0.4.1 lack)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not may_miss(k)]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        lines = [f"weight file {path} does not fit {type(module).__name__}:"]
        for name, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if keys:
                lines.append(f"  {len(keys)} {name}: {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}")
        raise CheckpointError("\n".join(lines))


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, may_miss=is_bn_counter) -> dict:
    """check_keys, then copies the tensors; absent optional keys keep the module's current values.
    Returns {'kept': number of module keys filled from the file, 'initialised': module keys left as initialised
    (BatchNorm counters aside)}."""
    check_keys(module, state, path, may_miss)
    full = module.state_dict()
    kept = sum(k in state for k in full)
    initialised = [k for k in full if k not in state and not is_bn_counter(k)]
    full.update(state)
    module.load_state_dict(full)
    return {"kept": kept, "initialised": initialised}


# ---------------------------------------------------------------------------------------------------------------------
# CTEN: 3D ResNets of Hara et al. (visual) and torchvision ResNets (audio)
# ---------------------------------------------------------------------------------------------------------------------

# classifier width of the published files -> the pixel scaling they were trained with (models/resnet3d.py)
RESNET3D_FC_PRESETS = {400: "kinetics400", 1039: "kinetics_moments"}


def load_resnet3d(path: str | Path, model: nn.Module, check_input: bool = True, trusted: bool = False) -> dict:
    """Fills a models.resnet3d.ResNet3D from a 3D-ResNets-PyTorch checkpoint: `resnet-101-kinetics.pth`
    ({'state_dict'}, keys prefixed `module.`, no BatchNorm counters, fc -> 400) or `r3d101_KM_200ep.pth`
    ({'state_dict'}, no prefix, fc -> 1039), or a bare state dict in either layout. The classifier `fc.*` is dropped.

    With `check_input`, a file whose classifier width says which pixel scaling it was trained with (400 classes:
    `kinetics400`, 1039: `kinetics_moments`) must match the model's `input_preset`, since a wrong scaling fails
    silently (the releases' own scaling, `official`, is accepted with any file). Returns {'n_pretrain_classes', 'input_preset'} of the file (None when not recognisable) and what the
    load did: {'kept', 'initialised', 'ignored'} (load_checked; ignored: file keys dropped).
    """
    state = strip_prefix(unwrap_state_dict(read_checkpoint(path, trusted), path), "module.")
    fc = state.get("fc.weight")
    n_classes = int(fc.shape[0]) if fc is not None else None
    preset = RESNET3D_FC_PRESETS.get(n_classes)
    if check_input and preset is not None and model.input_preset not in (preset, "official"):
        raise CheckpointError(
            f"weight file {path} has a {n_classes}-way classifier, i.e. was trained with the '{preset}' input scaling, "
            f"but the backbone was built with '{model.input_preset}'; build it with input preset '{preset}' "
            f"(or disable this check if you know the file was trained otherwise)")
    report = load_checked(model, {k: v for k, v in state.items() if not k.startswith("fc.")}, path)
    return {"n_pretrain_classes": n_classes, "input_preset": preset, **report,
            "ignored": [k for k in state if k.startswith("fc.")]}


def rgb_to_gray_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, 3, kh, kw) -> (C_out, 1, kh, kw): the sum of the RGB kernels, which responds to a one-channel input x
    as the RGB kernel responds to the grey image (x, x, x)."""
    return weight.sum(dim=1, keepdim=True)


def load_torchvision_resnet(path: str | Path, audio_model: nn.Module, trusted: bool = False) -> dict:
    """Fills a models.audio_resnet.AudioResNet's trunk from a torchvision ResNet state dict (e.g. resnet18-*.pth).

    The classifier `fc.*` is dropped. The first conv: with the model's `first_conv='imagenet'` (7x7, stride 2) it
    gets the sum of the file's RGB kernels; with `first_conv='official'` ((7, 1) kernel) nothing in the file fits
    it and it keeps its random initialisation, as in the release. Returns {'conv1': 'summed' | 'random', 'kept', 'initialised', 'ignored'}.
    """
    state = strip_prefix(unwrap_state_dict(read_checkpoint(path, trusted), path), "module.")
    ignored = [k for k in state if k.startswith("fc.")]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    trunk = audio_model.trunk
    conv1 = state.pop("conv1.weight", None)
    if conv1 is None:
        raise CheckpointError(f"weight file {path} has no conv1.weight; is it a torchvision ResNet state dict?")
    gray = rgb_to_gray_kernel(conv1) if conv1.dim() == 4 and conv1.shape[1] == 3 else conv1
    if audio_model.first_conv == "imagenet":
        state["conv1.weight"] = gray
        return {"conv1": "summed", **load_checked(trunk, state, path), "ignored": ignored}
    report = load_checked(trunk, state, path, may_miss=lambda k: k == "conv1.weight" or is_bn_counter(k))
    return {"conv1": "random", **report, "ignored": ignored + ["conv1.weight"]}


# ---------------------------------------------------------------------------------------------------------------------
# MBT / MART: VideoMAE (visual branch, models/video_vit.py) and AST (audio branch, models/ast.py)
# ---------------------------------------------------------------------------------------------------------------------

# parts of a VideoMAE pre-training file outside its encoder: the MAE decoder and its input projection / mask token
VIDEOMAE_DECODER = ("decoder.", "encoder_to_decoder.", "mask_token")
# parameters of the video ViT that no VideoMAE file has: the CLS token (VideoMAE pools by averaging) and the mask
# token of MART's masked modelling; both keep their initialisation
VIDEO_VIT_NOT_IN_VIDEOMAE = ("cls_token", "mask_token")
# classifier heads of the AudioSet AST file (the DeiT's ImageNet heads and AST's AudioSet head)
AST_HEADS = ("mlp_head.", "v.head.", "v.head_dist.")


def _split(keys, prefixes: tuple[str, ...]) -> tuple[list[str], list[str]]:
    hit = [k for k in keys if k.startswith(prefixes)]
    return hit, [k for k in keys if not k.startswith(prefixes)]


def videomae_to_video_vit(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """Renames a VideoMAE state dict to models.video_vit.VideoViT keys.

    Pre-training files (keys `encoder.*` beside the decoder's) keep the encoder; fine-tuned files are bare. The
    classifier `head.*` of fine-tuned files is dropped (a Kinetics/SSv2 head has nothing to do with our classes).
    `blocks.i.attn.{q,v}_bias` -> `blocks.i.attn.qkv.{q,v}_bias`; the final LayerNorm is `fc_norm` in fine-tuned
    files (mean pooling) and `norm` in pre-training files, and fills our `fc_norm` either way.
    Returns (renamed state, ignored file keys, 'pretraining' | 'finetuned'). Unknown keys pass through unchanged,
    so that the key check reports them.
    """
    ignored = []
    kind = "finetuned"
    if any(k.startswith("encoder.") for k in state):
        kind = "pretraining"
        ignored, rest = _split(state, VIDEOMAE_DECODER)
        state = {(k[len("encoder."):] if k.startswith("encoder.") else k): state[k] for k in rest}
    heads, rest = _split(state, ("head.",))
    ignored += heads
    out = {}
    for k in rest:
        new = k.replace(".attn.q_bias", ".attn.qkv.q_bias").replace(".attn.v_bias", ".attn.qkv.v_bias")
        if k.startswith("norm.") and "fc_norm.weight" not in state:
            new = "fc_norm." + k[len("norm."):]
        out[new] = state[k]
    return out, ignored, kind


def load_videomae(path: str | Path, vit: nn.Module, trusted: bool = False) -> dict:
    """Fills a models.video_vit.VideoViT from a VideoMAE checkpoint: a pre-training file (`{'model': ...}`, keys
    `encoder.*` and `decoder.*`) or a fine-tuned one (`{'model': ...}`, `{'module': ...}` or bare), e.g.
    `videomae_base_patch16_224.pth`. Decoder and classifier keys are ignored; `cls_token` and `mask_token` are not in
    any VideoMAE file and keep their initialisation; every other parameter must come from the file.
    Returns {'kind': 'pretraining' | 'finetuned', 'ignored': [file keys], 'kept_init': [model keys], 'kept',
    'initialised'}.
    """
    raw = strip_prefix(unwrap_state_dict(read_checkpoint(path, trusted), path, ("model", "module", "state_dict")),
                       "module.")
    state, ignored, kind = videomae_to_video_vit(raw)
    report = load_checked(vit, state, path, may_miss=lambda k: k in VIDEO_VIT_NOT_IN_VIDEOMAE)
    return {"kind": kind, "ignored": ignored, "kept_init": list(VIDEO_VIT_NOT_IN_VIDEOMAE), **report}


def cut_ast_pos_embed(pos: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> torch.Tensor:
    """Adapts a (1, 2 + Fs * Ts, D) AST positional embedding to a (Fd, Td) patch grid, as the official AST code does:
    the two leading (CLS, distillation) positions are kept; along each axis a smaller grid takes the central slice
    starting at src // 2 - dst // 2 (12 x 101 -> 12 x 9 keeps time columns 46..54), a larger one is bilinearly
    interpolated. Patches are frequency-major (index f * T + t)."""
    extra, grid = pos[:, :2], pos[:, 2:].transpose(1, 2).unflatten(2, src_grid)  # (1, D, Fs, Ts)
    for axis, (src, dst) in enumerate(zip(src_grid, dst_grid)):
        if dst <= src:
            grid = grid.narrow(2 + axis, src // 2 - dst // 2, dst)
        else:
            size = list(grid.shape[2:])
            size[axis] = dst
            grid = torch.nn.functional.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.cat([extra, grid.flatten(2).transpose(1, 2)], dim=1)


def load_ast(path: str | Path, ast: nn.Module, src_frames: int = 1024, trusted: bool = False) -> dict:
    """Fills a models.ast.AST from the AudioSet AST file `audioset_10_10_0.4593.pth` (a DataParallel state dict:
    `module.v.*` the DeiT, `module.mlp_head.*` the AudioSet head; a file whose keys lack `module.` works too).

    The classifier heads (`mlp_head`, the DeiT's `v.head` / `v.head_dist`) are ignored. The file's positional
    embedding covers the patch grid of `src_frames` frames (1024 -> 12 x 101, i.e. (1, 2 + 1212, D)); it is cut to the
    model's grid (100 frames -> 12 x 9: the central time columns 46..54) by cut_ast_pos_embed, the CLS and
    distillation positions unchanged. Returns {'ignored': [file keys], 'pos_grid': (file grid, model grid), 'kept', 'initialised'}.
    """
    file_state = unwrap_state_dict(read_checkpoint(path, trusted), path)
    raw = strip_prefix(file_state, "module.")
    heads, rest = _split(raw, AST_HEADS)
    ignored = [("" if raw is file_state else "module.") + k for k in heads]
    state = {(k[len("v."):] if k.startswith("v.") else k): raw[k] for k in rest}
    cfg = ast.cfg
    src_grid = ((cfg.n_mels - cfg.patch_size) // cfg.fstride + 1, (src_frames - cfg.patch_size) // cfg.tstride + 1)
    pos = state.get("pos_embed")
    if pos is not None and pos.shape != ast.pos_embed.shape:
        if pos.dim() != 3 or pos.shape[1] != 2 + src_grid[0] * src_grid[1]:
            raise CheckpointError(
                f"weight file {path}: pos_embed has shape {tuple(pos.shape)}, expected (1, 2 + {src_grid[0]} x "
                f"{src_grid[1]}, D) for {src_frames} frames x {cfg.n_mels} mel bins; pass the file's src_frames")
        state["pos_embed"] = cut_ast_pos_embed(pos, src_grid, cfg.grid)
    report = load_checked(ast, state, path)
    return {"ignored": ignored, "pos_grid": (src_grid, cfg.grid), **report}
