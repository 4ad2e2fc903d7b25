"""vdeploy: export, verify, run, evaluate, benchmark and serve PyTorch vision models."""

__version__ = "0.1.0"
