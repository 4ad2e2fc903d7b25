"""MMSegmentation semantic segmentation models, re-implemented without mmseg/mmcv."""
from .attention_heads import (ANNHead, APCHead, CCHead, DAHead, DMHead, DNLHead, EMAHead, EncHead, GCHead, ISAHead,
                              NLHead, PSAHead)
from .heads import (ASPPHead, DepthwiseSeparableASPPHead, FCNHead, FPNHead, PSPHead, SegformerHead, UPerHead)
from .mit import MixVisionTransformer
from .resnet import ResNet
from .segmentor import EncoderDecoder
from .swin import SwinTransformer

__all__ = ["ANNHead", "APCHead", "ASPPHead", "CCHead", "DAHead", "DMHead", "DNLHead", "DepthwiseSeparableASPPHead",
           "EMAHead", "EncHead", "EncoderDecoder", "FCNHead", "FPNHead", "GCHead", "ISAHead", "MixVisionTransformer",
           "NLHead", "PSAHead", "PSPHead", "ResNet", "SegformerHead", "SwinTransformer", "UPerHead"]
