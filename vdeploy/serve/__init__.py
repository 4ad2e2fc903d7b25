"""Serving bundles over HTTP on KServe's model server (docs/serving.md).

Torch-free. `build_app({name: Predictor}, ServeConfig(...))` gives the ASGI app; `serve(...)` runs
it. The engine is imported lazily, so this package imports without the `serve` extra.
"""
from .app import ServeConfig, build_app, serve
from .batcher import BatchPolicy

__all__ = ["BatchPolicy", "ServeConfig", "build_app", "serve"]
