"""torch model -> bundle. `export_bundle` is imported on first use, so that the torch-free entry
the runtime loads from here (backend_entry) does not pull in torch."""
from __future__ import annotations

__all__ = ["export_bundle"]


def __getattr__(name):
    if name == "export_bundle":
        from .bundle_writer import export_bundle

        return export_bundle
    raise AttributeError(name)
