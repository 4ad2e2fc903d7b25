"""torch model -> bundle. `export_bundle` is the Python API behind `vdeploy export`."""
from .bundle_writer import export_bundle

__all__ = ["export_bundle"]
