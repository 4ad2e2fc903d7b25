"""MMSegmentation semantic segmentation models, re-implemented without mmseg/mmcv."""
from .attention_heads import (ANNHead, APCHead, CCHead, DAHead, DMHead, DNLHead, EMAHead, EncHead, GCHead, ISAHead,
                              NLHead, PSAHead)
from .heads import (ASPPHead, DepthwiseSeparableASPPHead, FCNHead, FPNHead, PSPHead, SegformerHead, UPerHead)
from .hrnet import HRNet
from .mit import MixVisionTransformer
from .ocr_head import OCRHead
from .resnet import ResNet
from .segmentor import EncoderDecoder
from .swin import SwinTransformer

__all__ = ["ANNHead", "APCHead", "ASPPHead", "CCHead", "DAHead", "DMHead", "DNLHead", "DepthwiseSeparableASPPHead",
           "EMAHead", "EncHead", "EncoderDecoder", "FCNHead", "FPNHead", "GCHead", "HRNet", "ISAHead", "MixVisionTransformer",
           "NLHead", "OCRHead", "PSAHead", "PSPHead", "ResNet", "SegformerHead", "SwinTransformer", "UPerHead"]
