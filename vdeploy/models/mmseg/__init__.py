"""MMSegmentation semantic segmentation models, re-implemented without mmseg/mmcv."""
from .attention_heads import CCHead, DAHead, DNLHead, GCHead, NLHead
from .context_heads import ANNHead, APCHead, DMHead, EMAHead, ISAHead
from .enc_head import EncHead
from .psa_head import PSAHead
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
from .convnext import ConvNeXt
from .ham_head import LightHamHead
from .knet_head import IterativeDecodeHead, KernelUpdateHead, KernelUpdator
from .mscan import MSCAN
from .multiple_of import MultipleOfEncoderDecoder
from .poolformer import PoolFormer
from .twins import PCPVT, SVT
from .beit import BEiT, MAE
from .dpt_head import DPTHead
from .vit import VisionTransformer
from .vit_heads import SETRMLAHead, SETRUPHead, SegmenterMaskTransformerHead
from .vit_necks import Feature2Pyramid, MLANeck, MultiLevelNeck
from .cgnet import CGNet
from .ddrnet import DDRNet
from .erfnet import ERFNet
from .fastscnn import FastSCNN
from .mobilenet_v3 import MobileNetV3
from .pidnet import PIDNet
from .point_head import PointHead
from .query_heads import Mask2FormerHead, MaskFormerHead
from .realtime_heads import DDRHead, DepthwiseSeparableFCNHead, LRASPPHead, PIDHead
from .resnest import ResNeSt
from .stdc import STDCContextPathNet, STDCNet
from .clip_text import CLIPTextEncoder
from .multimodal import MultimodalEncoderDecoder
from .san_head import SideAdapterCLIPHead
from .ldm_autoencoder import AutoencoderKLEncoder
from .ldm_unet import UNetModel as LdmUNetModel
from .vpd import VPD, DepthEstimator, TextAdapter, VPDDepthHead

__all__ = ["ANNHead", "APCHead", "ASPPHead", "BiSeNetV1", "BiSeNetV2", "CCHead", "DAHead", "DMHead", "DNLHead",
           "DepthwiseSeparableASPPHead", "EMAHead", "EncHead", "EncoderDecoder", "FCNHead", "FPN", "FPNHead",
           "GCHead", "HRNet", "ICNeck", "ICNet", "ISAHead", "JPU", "MixVisionTransformer", "MobileNetV2", "NLHead",
           "OCRHead", "PSAHead", "PSPHead", "ResNet", "SegformerHead", "SwinTransformer", "UNet", "UPerHead"]
__all__ += ["BEiT", "DPTHead", "Feature2Pyramid", "MAE", "MLANeck", "MultiLevelNeck", "SETRMLAHead", "SETRUPHead",
            "SegmenterMaskTransformerHead", "VisionTransformer"]
__all__ += ["ConvNeXt", "LightHamHead", "MSCAN", "MultipleOfEncoderDecoder", "PCPVT", "PoolFormer", "SVT"]
__all__ += ["CGNet", "DDRHead", "DDRNet", "DepthwiseSeparableFCNHead", "ERFNet", "FastSCNN", "LRASPPHead",
            "MobileNetV3", "PIDHead", "PIDNet", "PointHead", "ResNeSt", "STDCContextPathNet", "STDCNet"]
__all__ += ["IterativeDecodeHead", "KernelUpdateHead", "KernelUpdator"]
__all__ += ["Mask2FormerHead", "MaskFormerHead"]
__all__ += ["CLIPTextEncoder", "MultimodalEncoderDecoder", "SideAdapterCLIPHead"]
__all__ += ["AutoencoderKLEncoder", "DepthEstimator", "LdmUNetModel", "TextAdapter", "VPD", "VPDDepthHead"]
