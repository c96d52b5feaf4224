"""Builds a method's network from the resolved options (an argparse namespace from opts.py) and loads the
pretrained weights the options name."""
from models.ast import ASTConfig
from models.checkpoints import load_resnet3d, load_torchvision_resnet
from models.cten import CTEN
from models.mart import DecoderConfig, build_mart
from models.mbt import MBT
from models.text import TextEncoder, bundled_text_model_path
from models.video_vit import VideoViTConfig

# Options that fix the architecture: --eval-only takes these from the checkpoint's config, not from the flags.
MODEL_OPTIONS = ("method", "modalities", "intra", "inter", "temporal_attention", "nonlocal_init", "visual_depth",
                 "visual_input", "audio_arch", "audio_first_conv", "dropout", "seq_len", "eval_seq_len", "snippet_duration", "sample_size",
                 "audio_frames", "mbt_depth", "mbt_width", "mbt_heads", "n_bottleneck", "fusion_layer", "video_scaling", "freeze_audio_early",
                 "mbt_pool", "mbt_head_init_scale", "video_patch_size", "ast_stride", "ast_patch_freq",
                 "ast_input_mean", "ast_input_std")


def build_model(args, n_classes: int, pretrained: bool = True):
    """CTEN, or the MBT backbone (MART's stage 2 and --method mbt)."""
    if args.method == "cten":
        model = CTEN(n_classes, args.seq_len, modalities=args.modalities, intra=args.intra,
                     inter=args.inter and args.modalities == "av", temporal_attention=args.temporal_attention,
                     nonlocal_init=args.nonlocal_init, visual_depth=args.visual_depth, visual_input=args.visual_input,
                     audio_arch=args.audio_arch, audio_first_conv=args.audio_first_conv, dropout=args.dropout)
        if pretrained and args.visual_weights and model.visual is not None:
            load_resnet3d(args.visual_weights, model.visual)
        if pretrained and args.audio_weights and model.audio is not None:
            load_torchvision_resnet(args.audio_weights, model.audio)
        return model
    scaling = {} if args.video_scaling == "imagenet" else dict(mean=(100 / 255,) * 3, std=(1.0,) * 3)
    video = VideoViTConfig(img_size=args.sample_size, num_frames=args.snippet_duration, dim=args.mbt_width,
                           depth=args.mbt_depth, num_heads=args.mbt_heads, patch_size=args.video_patch_size, **scaling)
    audio = ASTConfig(n_frames=args.audio_frames, dim=args.mbt_width, depth=args.mbt_depth, num_heads=args.mbt_heads,
                      fstride=args.ast_stride, tstride=args.ast_stride, patch_freq=args.ast_patch_freq,
                      input_mean=args.ast_input_mean, input_std=args.ast_input_std)
    model = MBT(n_classes, video, audio, n_bottleneck=args.n_bottleneck, fusion_layer=args.fusion_layer,
                drop_path=args.drop_path, grad_checkpointing=args.grad_checkpointing,
                freeze_audio_early=args.freeze_audio_early, pool=args.mbt_pool,
                head_init_scale=args.mbt_head_init_scale)
    if pretrained and (args.videomae_weights or args.ast_weights):
        model.load_pretrained(args.videomae_weights, args.ast_weights)
    return model


def build_stage1(args, mbt: MBT, n_classes: int):
    """MART's stage-1 model around `mbt` itself (decoder, complementary learning, text encoder): stage 1 trains the
    same backbone object that stage 2 goes on with."""
    text = TextEncoder(args.text_model or bundled_text_model_path(), args.mbt_width, trainable=args.text_trainable,
                       max_length=args.text_max_len)
    return build_mart(mbt, n_classes, text, DecoderConfig(args.decoder_width, args.decoder_depth, args.decoder_heads),
                      comp_heads=args.comp_heads)
