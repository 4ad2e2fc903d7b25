"""Assemble the HTTP app: KServe's v2 endpoints + vdeploy's routes, guard and workers."""
# No `from __future__ import annotations`: FastAPI must see the route annotations as classes.
import asyncio
import concurrent.futures
import contextlib
import os
from dataclasses import dataclass, field

from ..errors import UserError
from .batcher import BadImage, BatchPolicy, InferenceWorker, QueueFull, RequestTimeout, TooLarge
from .contract import to_json
from .engine import decode_binary_request, import_kserve, vision_model_class
from .guards import Guard
from .metrics import ServeMetrics
from .names import check_model_name, is_valid_model_name
from .page import PAGE


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    max_body_bytes: int = 16 << 20
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    pool_threads: int = 0  # decode/pre/postprocess threads; 0: one per CPU, at least 2
    # Decoded images: 50 MP (150 MB as BGR) covers any camera; a decode pool thread holds one.
    max_image_pixels: int = 50_000_000
    # Connections (server.py applies these): the request head within header_timeout_s of the
    # connection opening or of the previous answer; the whole body within body_timeout_s of the
    # head; idle keep-alive connections closed after keep_alive_s; past max_connections
    # connections or requests in progress, 503; after SIGTERM requests in progress get
    # shutdown_timeout_s to finish.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: float = 5.0
    max_connections: int = 256
    shutdown_timeout_s: float = 10.0
    max_header_bytes: int = 16 << 10
    log_level: str = "info"


def build_app(predictors: dict, config: ServeConfig):
    """A FastAPI app serving `predictors` ({name: Predictor}); workers start with the app."""
    import_kserve()
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from kserve import errors as kerr
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints
    from prometheus_client import REGISTRY, exposition

    for name in predictors:
        check_model_name(name)
    metrics = ServeMetrics()
    pool = concurrent.futures.ThreadPoolExecutor(config.pool_threads or max(2, os.cpu_count() or 2),
                                                 thread_name_prefix="vdeploy-prep")
    from ..runtime.io import decode_image

    def decode(data: bytes, name: str = "image"):
        return decode_image(data, name, config.max_image_pixels)

    workers = {name: InferenceWorker(p, config.policy, pool, decode=decode,
                                     on_batch=metrics.batch_size.labels(name).observe)
               for name, p in predictors.items()}
    VisionModel = vision_model_class()
    repository = ModelRepository()
    for name, p in predictors.items():
        repository.update(VisionModel(name, workers[name], p.task))
    dataplane = DataPlane(model_registry=repository)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for w in workers.values():
            await w.start()
        try:
            yield
        finally:
            for w in workers.values():
                await w.stop()
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="vdeploy", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.workers = workers
    app.state.closing = asyncio.Event()  # set by the server on shutdown (server.py)

    async def page():
        return HTMLResponse(PAGE)

    async def ping():
        return {"status": "Healthy"}

    async def prometheus(request: Request):
        encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
        for name, w in workers.items():
            metrics.in_flight.labels(name).set(w.in_flight)
        return Response(encoder(REGISTRY) + encoder(metrics.registry), headers={"content-type": content_type})

    async def predictions(model_name: str, request: Request):
        """TorchServe-style: raw image bytes in (POST, or PUT as `curl -T` sends them); JSON, or PNG
        for segmentation (a palette PNG of class indices) or `?render=1`. Errors are JSON with a
        4xx/5xx status, never a 200."""
        if not is_valid_model_name(model_name):
            return JSONResponse({"error": f"invalid model name {model_name!r}"}, status_code=400)
        if model_name not in predictors:
            return JSONResponse({"error": f"model {model_name} is not served"}, status_code=404)
        body = await request.body()
        pred, = await workers[model_name].predict([body])
        p = predictors[model_name]
        if request.query_params.get("render") in ("1", "true"):
            # decoded again (the worker keeps no pixels), in the pool and under the same pixel limit
            png = await asyncio.get_running_loop().run_in_executor(pool, lambda: _render(decode(body), pred, p.classes))
            return Response(png, media_type="image/png", headers={"X-Vdeploy-Summary": _summary(pred, p.classes)})
        if p.task == "semantic_segmentation":
            from .contract import encode_label_map_palette

            png = await asyncio.get_running_loop().run_in_executor(pool, encode_label_map_palette,
                                                                   pred.label_map, len(p.classes))
            return Response(png, media_type="image/png")
        if p.task == "depth_estimation":  # a 16-bit PNG of millimetres
            from ..runtime.tasks.depth_estimation import encode_depth_png

            png = await asyncio.get_running_loop().run_in_executor(pool, encode_depth_png, pred.depth_map)
            return Response(png, media_type="image/png")
        return JSONResponse(to_json(p.task, pred, p.classes))

    async def v2_infer(model_name: str, request: Request):
        """KServe's v2 infer endpoint, with a request decoder that keeps binary BYTES as bytes."""
        from kserve.protocol.rest.v2_datamodels import InferenceRequest
        from pydantic import ValidationError

        if model_name not in predictors:
            raise kerr.ModelNotFound(model_name)
        body, headers = await request.body(), dict(request.headers)
        if "inference-header-content-length" in headers:
            infer_request = decode_binary_request(body, headers["inference-header-content-length"], model_name)
        else:
            try:
                parsed = InferenceRequest.model_validate_json(body)
            except ValidationError as e:
                raise kerr.InvalidInput(f"malformed v2 request: {e.errors()[0].get('msg', e)}") from None
            infer_request, _ = dataplane.decode(parsed, headers, protocol_version="v2", model_name=model_name)
        response, response_headers = await dataplane.infer(model_name=model_name, request=infer_request, headers=headers)
        response, more_headers = dataplane.encode(model_name=model_name, response=response, headers=headers,
                                                  req_attributes={})
        response_headers = {k: v for k, v in {**response_headers, **more_headers}.items()
                            if k not in ("content-length", "content-type")}
        if isinstance(response, bytes):
            return Response(response, headers=response_headers, media_type="application/octet-stream")
        return JSONResponse(response, headers=response_headers)

    async def no_versions(model_name: str, model_version: str):
        """The protocol's optional version: a bundle is served as one model without versions, so any
        version is an unknown resource (KServe answers 501, a server error, for a client's request)."""
        if model_name not in predictors:
            raise kerr.ModelNotFound(model_name)
        return JSONResponse({"error": f"model {model_name} has no version {model_version!r}: models are served "
                                      f"without versions, at /v2/models/{model_name}"}, status_code=404)

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/v2/models/{model_name}/infer", v2_infer, methods=["POST"])
    # ahead of KServe's own versioned routes
    for suffix, method in [("", "GET"), ("/ready", "GET"), ("/infer", "POST")]:
        app.add_api_route(f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}", no_versions, methods=[method])
    app.add_api_route("/ping", ping, methods=["GET"])
    app.add_api_route("/metrics", prometheus, methods=["GET"])
    app.add_api_route("/predictions/{model_name}", predictions, methods=["POST", "PUT"])
    register_v2_endpoints(app, dataplane, ModelRepositoryExtension(model_registry=repository))
    _add_error_handlers(app)
    app.add_middleware(Guard, token=config.token, max_body_bytes=config.max_body_bytes, metrics=metrics,
                       model_names=list(predictors), body_timeout_s=config.body_timeout_s,
                       closing=app.state.closing, max_header_bytes=config.max_header_bytes)
    return app


def _add_error_handlers(app) -> None:
    """Every error as `{"error": message}` with its status. Client errors (4xx, and 503 for
    overload) are logged as one line by the Guard, without a traceback (KServe's own handlers log
    one for each); server errors keep theirs."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve import errors as kerr
    from starlette.exceptions import HTTPException

    def error(status: int, extra: dict | None = None):
        async def handler(_, exc):
            return JSONResponse({"error": str(exc)}, status_code=status, headers=extra)
        return handler

    async def http_error(_, exc):  # 404 for an unknown route, 405 for a wrong method (with Allow)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def validation_error(_, exc):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"malformed request: {where}: {first.get('msg', 'invalid')}"}, status_code=400)

    async def server_error(_, exc):
        kerr.logger.error("Exception:", exc_info=exc)
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)

    async def unexpected(_, exc):  # Starlette re-raises after answering: uvicorn logs the traceback
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    for exc, handler in [
        (QueueFull, error(503, {"Retry-After": "1"})), (RequestTimeout, error(504)), (TooLarge, error(413)),
        (BadImage, error(400)), (UserError, error(400)), (HTTPException, http_error),
        (RequestValidationError, validation_error),
        (kerr.InvalidInput, error(400)), (kerr.ModelNotFound, error(404)), (kerr.ModelNotReady, error(503)),
        (kerr.ServerNotLive, error(503)), (kerr.ServerNotReady, error(503)), (NotImplementedError, error(501)),
        (kerr.InferenceError, server_error), (Exception, unexpected),
    ]:
        app.add_exception_handler(exc, handler)


def serve(predictors: dict, config: ServeConfig) -> None:
    """Run until SIGINT/SIGTERM, then drain for at most config.shutdown_timeout_s (server.py)."""
    from .server import make_server

    make_server(build_app(predictors, config), config).run()


def _render(image, pred, classes) -> bytes:
    import cv2

    from ..runtime.vis import draw

    ok, buf = cv2.imencode(".png", draw(image, pred, classes))
    if not ok:
        raise RuntimeError("PNG encoding of the drawing failed")
    return buf.tobytes()


def _summary(pred, classes) -> str:
    if pred.boxes is not None:
        return f"{len(pred)} detections"
    if pred.probs is not None:
        k = int(pred.probs.argmax())
        return f"top class: {classes[k] if k < len(classes) else k}"
    if pred.features is not None:
        return f"embedding of {pred.features.size} values"
    if pred.depth_map is not None:
        return f"depth map {pred.depth_map.shape[1]}x{pred.depth_map.shape[0]}"
    return "label map"
