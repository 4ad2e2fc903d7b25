"""MMSegmentation semantic segmentation models, re-implemented without mmseg/mmcv."""
from .attention_heads import (ANNHead, APCHead, CCHead, DAHead, DMHead, DNLHead, EMAHead, EncHead, GCHead, ISAHead,
                              NLHead, PSAHead)
from .bisenetv1 import BiSeNetV1
from .bisenetv2 import BiSeNetV2
from .heads import (ASPPHead, DepthwiseSeparableASPPHead, FCNHead, FPNHead, PSPHead, SegformerHead, UPerHead)
from .hrnet import HRNet
from .mit import MixVisionTransformer
from .icnet import ICNet
from .mobilenet_v2 import MobileNetV2
from .necks import FPN, JPU, ICNeck
from .ocr_head import OCRHead
from .resnet import ResNet
from .segmentor import EncoderDecoder
from .swin import SwinTransformer
from .unet import UNet

__all__ = ["ANNHead", "APCHead", "ASPPHead", "BiSeNetV1", "BiSeNetV2", "CCHead", "DAHead", "DMHead", "DNLHead",
           "DepthwiseSeparableASPPHead", "EMAHead", "EncHead", "EncoderDecoder", "FCNHead", "FPN", "FPNHead",
           "GCHead", "HRNet", "ICNeck", "ICNet", "ISAHead", "JPU", "MixVisionTransformer", "MobileNetV2", "NLHead",
           "OCRHead", "PSAHead", "PSPHead", "ResNet", "SegformerHead", "SwinTransformer", "UNet", "UPerHead"]
