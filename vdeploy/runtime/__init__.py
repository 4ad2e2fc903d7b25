"""The torch-free side: load a bundle, run it on a backend, pre/post-process like the framework.

Nothing under `vdeploy.runtime` imports torch at module level; the TorchScript and eager
PyTorch backends import it when they are chosen.
"""
from ..bundle import Bundle, load_bundle
from .predictor import Prediction, Predictor

__all__ = ["Bundle", "load_bundle", "Predictor", "Prediction"]
