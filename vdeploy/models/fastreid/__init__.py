"""fast-reid re-identification models, re-implemented without fast-reid."""
from .baseline import EmbeddingHead, ReidBaseline
from .resnet import ResNet

__all__ = ["EmbeddingHead", "ReidBaseline", "ResNet"]
