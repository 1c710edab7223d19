"""The HTTP service: `POST /v1/recognize`, `GET /v1/lexicon`, `GET /healthz` and a page at `/`.

    from s2t_hf import S2T
    from s2t_hf.serving import ServeSettings, create_app
    app = create_app(S2T.from_pretrained("outputs/quickstart"), ServeSettings(max_batch=16))

An upload's answer is the JSON of `s2t-hf recognize --json` for that file. Bad input is a 4xx
whose body names the reason (the `AudioError` reasons of the CLI: empty, unreadable, silent,
too-long, ...), never a 5xx; a full queue is a 503 with `Retry-After`.
"""

# no `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at runtime
import asyncio
import logging
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from .. import __version__
from ..audio.reading import SAMPLING_RATE, AudioError, read_usable_audio
from ..inference.recognizer import S2T
from ..inference.spotting import spotter_for
from .batching import DynamicBatcher, QueueFull

logger = logging.getLogger("s2t_hf.serving")

API_KEY_HEADER = "x-api-key"
REQUEST_ID_HEADER = "x-request-id"


@dataclass
class ServeSettings:
    max_batch: int = 16  # clips in one forward pass
    workers: int = 1  # batches scored side by side (threads sharing the model; see serving.batching). The CLI's
    # default is 2, and it sets PyTorch's threads to match; here the caller owns the threads
    max_wait_ms: float = 10.0  # how long the first clip of a batch waits for company
    max_queue: int = 64  # clips waiting beyond that are refused with 503
    max_upload_mb: float = 10.0  # larger uploads are refused with 413 before they are read
    max_seconds: float = 30.0  # longer audio is refused with 422 (reason too-long)
    max_spot_seconds: float = 600.0  # the same for /v1/spot, which searches long recordings in windows
    max_top_k: int = 20
    api_key: str | None = None  # when set, /v1/* needs it in X-API-Key or `Authorization: Bearer`
    retry_after_s: int = 1  # what a 503 tells the caller


def error_response(status: int, reason: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, "reason": reason, **extra}, status_code=status, headers=headers)


def page_html() -> str:
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def create_app(recogniser: S2T, settings: ServeSettings | None = None, warm_up: bool = True) -> FastAPI:
    """The ASGI app serving `recogniser`; the dynamic batcher runs while the app does."""
    settings = settings or ServeSettings()
    batcher = DynamicBatcher(recogniser, settings.max_batch, settings.max_wait_ms, settings.max_queue, settings.workers)
    max_upload_bytes = int(settings.max_upload_mb * 1024 * 1024)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        if warm_up:  # the first forward pass is the slowest (allocations, kernel choice): pay it before the first caller
            await asyncio.wrap_future(batcher.submit(warm_up_clip(), top_k=1))
            logger.info("model warmed up; serving %s (%d names)", recogniser.source, len(recogniser.lexicon))
        yield
        await run_in_threadpool(batcher.stop)

    app = FastAPI(
        title="s2t-hf",
        summary="Spoken drug names in, ranked and calibrated lexicon names out",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.settings = settings

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Request ids, the API key and the upload size, checked before a body is read."""
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex[:16]
        started = time.perf_counter()
        response = None
        if request.url.path.startswith("/v1/"):
            response = check_key(request, settings.api_key) or check_length(request, max_upload_bytes)
        if response is None:
            response = await call_next(request)
        response.headers[REQUEST_ID_HEADER] = request_id
        elapsed_ms = 1000 * (time.perf_counter() - started)
        logger.info("%s %s %s -> %d in %.1f ms", request_id, request.method, request.url.path, response.status_code, elapsed_ms)
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        fields = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
        return error_response(422, "bad-request", f"{fields} (send the audio as multipart form field 'audio')")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return error_response(error.status_code, "http", str(error.detail), headers=getattr(error, "headers", None))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return page_html()

    @app.get("/healthz")
    async def healthz() -> dict:
        stats = batcher.stats
        return {
            "status": "ok",
            "model": recogniser.source,
            "quantization": getattr(recogniser, "quantization", None),  # "int8" when served with --quantize int8
            "names": len(recogniser.lexicon),
            "waiting": batcher.waiting,
            "batches": stats.batches,
            "clips": stats.clips,
            "largest_batch": stats.largest_batch,
            "max_batch": settings.max_batch,
            "workers": settings.workers,
            "api_key_required": settings.api_key is not None,
        }

    @app.get("/v1/lexicon")
    async def lexicon() -> dict:
        return {"count": len(recogniser.lexicon), "names": [entry.name for entry in recogniser.lexicon]}

    async def read_upload(audio: UploadFile, max_seconds: float) -> tuple[str, np.ndarray | JSONResponse]:
        """The upload's name and its 16 kHz clip, or the 413 / 422 response naming what is wrong with it."""
        name = audio.filename or "upload"
        data = await audio.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:  # a multipart body can hide a larger part behind a small Content-Length
            return name, error_response(413, "too-large", f"{name}: over the {settings.max_upload_mb:g} MB upload limit", path=name)
        try:
            return name, await run_in_threadpool(read_usable_audio, data, max_seconds, None, name)
        except AudioError as error:
            return name, error_response(422, error.reason, str(error), path=name)

    @app.post("/v1/recognize")
    async def recognize(
        audio: Annotated[UploadFile, File(description="the recording: wav, flac, ogg or mp3; any rate, mono or stereo")],
        top_k: Annotated[int, Query(ge=1, le=settings.max_top_k, description="how many names to list")] = 5,
        allow_out_of_lexicon: Annotated[bool, Query(description="decision null when no name fits as well as the transcript")] = False,
    ):
        """Rank the lexicon's names for one recording: the JSON of `s2t-hf recognize --json`."""
        name, clip = await read_upload(audio, settings.max_seconds)
        if isinstance(clip, JSONResponse):
            return clip
        try:
            future = batcher.submit(clip, top_k, allow_out_of_lexicon)
        except QueueFull as error:
            retry = str(settings.retry_after_s)
            return error_response(503, "busy", f"{error}; retry in {retry} s", headers={"Retry-After": retry})
        result = await asyncio.wrap_future(future)
        return {"path": name, **result.to_dict()}

    spotting = asyncio.Semaphore(1)  # one recording at a time beside the batcher: a minute of audio is many windows

    @app.post("/v1/spot")
    async def spot(
        audio: Annotated[UploadFile, File(description="a recording of any length up to the limit: wav, flac, ogg or mp3")],
        top_k: Annotated[int, Query(ge=1, le=settings.max_top_k, description="ranked names listed for each name found")] = 5,
        threshold: Annotated[
            float | None, Query(le=0, description="score a name needs, per letter (CTC) or per token (Whisper) (default: the model's)")
        ] = None,
    ):
        """Every lexicon name said anywhere in the recording, with its times: the JSON of `s2t-hf spot --json`."""
        try:
            spotter_for(recogniser)
        except ValueError as error:
            return error_response(501, "cannot-spot", str(error))
        name, clip = await read_upload(audio, settings.max_spot_seconds)
        if isinstance(clip, JSONResponse):
            return clip
        async with spotting:
            result = await run_in_threadpool(recogniser.spot, (clip, SAMPLING_RATE), threshold, top_k)
        return {"path": name, **result.to_dict()}

    return app


def check_key(request: Request, api_key: str | None) -> JSONResponse | None:
    if api_key is None:
        return None
    given = request.headers.get(API_KEY_HEADER) or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if given and secrets.compare_digest(given.encode(), api_key.encode()):
        return None
    return error_response(401, "unauthorized", "missing or wrong API key: send it as X-API-Key or 'Authorization: Bearer KEY'",
                          headers={"WWW-Authenticate": "Bearer"})


def check_length(request: Request, max_bytes: int) -> JSONResponse | None:
    if request.method != "POST":
        return None
    length = request.headers.get("content-length")
    if length is None:
        return error_response(411, "length-required", "send the upload with a Content-Length header (no chunked uploads)")
    if not length.isdigit():
        return error_response(400, "bad-request", f"Content-Length {length!r} is not a number")
    if int(length) > max_bytes + 64 * 1024:  # room for the multipart envelope around the file
        return error_response(413, "too-large", f"the upload is {int(length) / 2**20:.1f} MB, over the {max_bytes / 2**20:g} MB limit")
    return None


def warm_up_clip():
    import numpy as np

    return (0.01 * np.random.default_rng(0).standard_normal(16_000)).astype(np.float32)
