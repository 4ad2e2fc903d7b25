"""MMSegmentation semantic segmentation models, re-implemented without mmseg/mmcv."""
from .heads import ASPPHead, DepthwiseSeparableASPPHead, FCNHead, PSPHead
from .resnet import ResNet
from .segmentor import EncoderDecoder

__all__ = ["ASPPHead", "DepthwiseSeparableASPPHead", "EncoderDecoder", "FCNHead", "PSPHead", "ResNet"]
