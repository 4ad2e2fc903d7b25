"""MMSegmentation's VPD depth estimator at inference: a `DepthEstimator` of the `VPD` backbone
(Stable Diffusion v1's autoencoder and UNet, conditioned on a scene-class text embedding) and
the `VPDDepthHead`, without mmseg or ldm.

The graph takes the image after the test pipeline's resize (float32 [N, 3, H, W], 0-255, in the
colour order of `mean`/`std`) and returns `(depth [N, 1, H, W],)` in metres. Resizing it to the
original photo happens on the host (bilinear, the head's `align_corners`), as mmseg's
`postprocess_result`.

Per image (or sliding window):
- the context: the class embedding (with `class_embed_select`, mmseg's appended mean row, the
  one it uses for an image without a category id; else every row) through the text adapter
  x + gamma * fc(x);
- the normalised image padded at the bottom/right to `pad_shape` with `pad_val`; the
  autoencoder's latent mean; the UNet at timestep 1 with that context; the outputs of output
  blocks 1, 4, 7 and of the last one, finest first (strides 8, 16, 32, 64 of the image for SD);
- the head's depth map, resized bilinearly to the window (mmseg's `predict_by_feat`: the
  padding is squeezed in, not cropped off).

Test modes: 'whole'; 'slide_flip' (mmseg's windows as EncoderDecoder's `slide`, each window's
depth averaged with that of its horizontal mirror, flipped back). mmseg 1.2.2's
`DepthEstimator.inference` runs 'slide' and then overwrites the result with whole-image
inference (an `if` where an `elif` was meant), so 'slide' returns what 'whole' does: built
here as 'whole'.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .ldm_autoencoder import AutoencoderKLEncoder
from .ldm_unet import UNetModel
from .segmentor import EncoderDecoder


class TextAdapter(nn.Module):
    def __init__(self, text_dim: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(text_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))

    def forward(self, texts, gamma):
        return texts + gamma * self.fc(texts)


class _DiffusionWrapper(nn.Module):
    """ldm's DiffusionWrapper: holds the UNet as `diffusion_model` (a level of checkpoint names)."""

    def __init__(self, unet: UNetModel):
        super().__init__()
        self.diffusion_model = unet


class UNetFeatures(nn.Module):
    """mmseg's UNetWrapper with `use_attn=False`: the UNet's multi-scale features, finest first."""

    TAPS = (1, 4, 7)  # output blocks mmseg reads, before the last one

    def __init__(self, unet: UNetModel):
        super().__init__()
        self.unet = _DiffusionWrapper(unet)

    def forward(self, latents, timesteps, context):
        return self.unet.diffusion_model.features(latents, timesteps, context, self.TAPS)[::-1]


class VPD(nn.Module):
    def __init__(self, encoder_vq: AutoencoderKLEncoder, unet: UNetModel, class_embeddings: torch.Tensor, *,
                 class_embed_select: bool, gamma: float = 1e-4, pad_shape: Optional[Sequence[int]] = None,
                 pad_val: float = 0.0):
        super().__init__()
        self.encoder_vq = encoder_vq
        self.unet = UNetFeatures(unet)
        text_dim = class_embeddings.shape[-1]
        self.text_adapter = TextAdapter(text_dim)
        self.class_embed_select = class_embed_select
        if class_embed_select:  # mmseg appends the mean row: the embedding of an image of no known class
            class_embeddings = torch.cat([class_embeddings, class_embeddings.mean(0, keepdim=True)])
        self.register_buffer("class_embeddings", class_embeddings)
        self.gamma = nn.Parameter(torch.full((text_dim,), float(gamma)))
        self.pad_shape = tuple(int(v) for v in pad_shape) if pad_shape is not None else None
        self.pad_val = float(pad_val)

    def context(self, batch: int):
        """The cross-attention context [batch, rows, text_dim]; the same for every image."""
        if self.class_embed_select:
            # no category id at inference: mmseg selects row -1 (the mean) for every image
            rows = self.text_adapter(self.class_embeddings[-1:], self.gamma)
        else:
            rows = self.text_adapter(self.class_embeddings, self.gamma)
        return rows[None].expand(batch, -1, -1)

    def pad(self, x):
        if self.pad_shape is None:
            return x
        size = torch._shape_as_tensor(x)  # a tensor, so that an ONNX trace keeps the padding size-dependent
        pad_h = torch.clamp(self.pad_shape[0] - size[2], min=0)
        pad_w = torch.clamp(self.pad_shape[1] - size[3], min=0)
        return F.pad(x, (0, pad_w, 0, pad_h), value=self.pad_val)

    def forward(self, x):
        context = self.context(x.shape[0])
        latents = self.encoder_vq(self.pad(x))
        timesteps = torch.ones(1, dtype=torch.long, device=x.device)  # t = 1; one embedding broadcast over the batch
        return self.unet(latents, timesteps, context)


class VPDDecoder(nn.Module):
    """Stride-2 transposed convolutions (BN, ReLU), a 3x3 conv (BN, ReLU), two bilinear x2 upsamplings."""

    def __init__(self, in_channels: int, out_channels: int, num_deconv_filters: Sequence[int]):
        super().__init__()
        layers = []
        for width in num_deconv_filters:
            layers += [nn.ConvTranspose2d(in_channels, width, 2, stride=2, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU()]
            in_channels = width
        self.deconv_layers = nn.Sequential(*layers)
        self.conv_layers = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                                         nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x):
        x = self.conv_layers(self.deconv_layers(x))
        for _ in range(2):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return x


class VPDDepthHead(nn.Module):
    """Four feature maps (strides s, 2s, 4s, 8s) -> depth in (0, max_depth): the finest two brought
    to stride 4s by strided convolutions, the coarsest upsampled (nearest) to it, all concatenated
    and mixed by a 1x1 conv; `fmap_border` rows and columns cut at the bottom/right; the decoder
    (for SD, s = 8 and three deconvolutions: back to the padded input's size less 32 pixels per
    border row); two 3x3 convs; sigmoid * max_depth."""

    def __init__(self, *, in_channels: Sequence[int], max_depth: float, embed_dim: int, feature_dim: int,
                 num_deconv_filters: Sequence[int], fmap_border: Union[int, Sequence[int]] = 0,
                 align_corners: bool = False):
        super().__init__()
        c0, c1 = in_channels[0], in_channels[1]
        self.max_depth = float(max_depth)
        self.align_corners = align_corners
        self.fmap_border = (fmap_border, fmap_border) if isinstance(fmap_border, int) else tuple(fmap_border)
        self.conv1 = nn.Sequential(nn.Conv2d(c0, c0, 3, stride=2, padding=1), nn.GroupNorm(16, c0), nn.ReLU(),
                                   nn.Conv2d(c0, c0, 3, stride=2, padding=1))
        self.conv2 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.conv_aggregation = nn.Sequential(nn.Conv2d(sum(in_channels), feature_dim, 1),
                                              nn.GroupNorm(16, feature_dim), nn.ReLU())
        self.decoder = VPDDecoder(embed_dim * 8, embed_dim, num_deconv_filters)
        self.depth_pred_layer = nn.Sequential(nn.Conv2d(embed_dim, embed_dim, 3, padding=1), nn.ReLU(),
                                              nn.Conv2d(embed_dim, 1, 3, padding=1))

    def forward(self, feats):
        coarse = torch.cat([feats[2], F.interpolate(feats[3], scale_factor=2, mode="nearest")], dim=1)
        x = self.conv_aggregation(torch.cat([self.conv1(feats[0]), self.conv2(feats[1]), coarse], dim=1))
        x = x[:, :, :x.shape[2] - self.fmap_border[0], :x.shape[3] - self.fmap_border[1]]
        out = self.depth_pred_layer(self.decoder(x))
        return torch.sigmoid(out) * self.max_depth


class DepthEstimator(nn.Module):
    slide = EncoderDecoder.slide  # mmseg's windows and averaging, over this class's encode_decode

    def __init__(self, backbone: VPD, decode_head: VPDDepthHead, *, mean: Sequence[float], std: Sequence[float],
                 mode: str = "whole", crop_size: Optional[Sequence[int]] = None,
                 stride: Optional[Sequence[int]] = None):
        super().__init__()
        if mode not in ("whole", "slide_flip"):
            raise ValueError(f"test mode {mode!r} is not one of 'whole', 'slide_flip'")
        if mode == "slide_flip" and (crop_size is None or stride is None):
            raise ValueError("slide_flip inference needs crop_size and stride")
        self.backbone = backbone
        self.decode_head = decode_head
        self.align_corners = decode_head.align_corners
        self.mode = mode
        self.crop_size = tuple(int(v) for v in crop_size) if crop_size else None
        self.stride = tuple(int(v) for v in stride) if stride else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), False)

    def depth(self, x):
        """Normalised images -> depth at their own size (mmseg's `encode_decode`)."""
        out = self.decode_head(self.backbone(x))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    def encode_decode(self, x):
        """A window's depth averaged with that of its mirror image, mirrored back (slide_flip)."""
        n = x.shape[0]
        both = self.depth(torch.cat([x, x.flip(3)]))  # one batch for the windows and their mirrors
        return (both[:n] + both[n:].flip(3)) / 2.0

    def forward(self, images):
        x = (images - self.mean) / self.std
        if self.mode == "slide_flip":
            return (self.slide(x),)
        return (self.depth(x),)
