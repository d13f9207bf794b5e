"""Serve TinyCNN as a web API: POST 28x28 pixels (or a picture), get the digit back.

    uvicorn d4_api_mnist:app        # then open http://127.0.0.1:8000/draw, or /docs to try each endpoint

The weights come from D4_MODEL_PATH (default: d4_cnn.pt beside this file) and are loaded
once, on the CPU, when the server starts.
"""

import gc
import os
import re
import sys
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, TypedDict

import anyio
from fastapi import FastAPI, File, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from d4.batching import PIXELS_PER_IMAGE, BatchingPredictor, PredictorStopped
from d4.body_route import BodyRoute
from d4.limits import ExplainTooLarge
from d4.model import IMAGE_SIZE, LABELS, TinyCNN, WeightsError, architecture, load_weights
from d4.preprocess import MAX_IMAGE_PIXELS, ImageRejected, ImageTooLarge, image_to_views
from d4.report import read_record, record_path, sha256

DEFAULT_MODEL_PATH = Path(__file__).with_name("d4_cnn.pt")
DRAW_PAGE = (Path(__file__).parent / "d4" / "draw.html").read_text(encoding="utf-8")
# Each POST route's body limit: bigger bodies get 413 before they are read, so a client cannot
# make the server hold a huge request in memory. A 28x28 JSON array is 6 to 16 KB.
MAX_BODY_BYTES = 1024 * 1024  # /predict
MAX_BATCH_IMAGES = 256
MAX_BATCH_BODY_BYTES = 8 * 1024 * 1024  # 256 images of up to 16 KB, with room to spare
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # /predict/image: a phone photo as JPEG
# Browser pages from these origins (comma-separated) may call the API; none by default.
CORS_ORIGINS = [origin for origin in os.environ.get("D4_CORS_ORIGINS", "").split(",") if origin]
# PyTorch sizes its thread pool from the host's cores, not the container's CPU share; one
# thread is fastest for one small image and keeps a 0.1-CPU Render instance responsive.
TORCH_THREADS = int(os.environ.get("D4_TORCH_THREADS", "1"))


# Request and response models: FastAPI validates against them and shows them on /docs.
Pixel = Annotated[float, Field(ge=0.0, le=1.0, strict=True, allow_inf_nan=False)]
PixelRow = Annotated[list[Pixel], Field(min_length=IMAGE_SIZE, max_length=IMAGE_SIZE)]
# A vertical bar: the digit 1, as an example for /docs.
EXAMPLE_PIXELS = [[1.0 if 4 <= row < 24 and 12 <= col < 16 else 0.0 for col in range(28)] for row in range(28)]


Pixels = Annotated[
    list[PixelRow],
    Field(
        min_length=IMAGE_SIZE,
        max_length=IMAGE_SIZE,
        description="28 rows of 28 grey levels, 0.0 = background (black) to 1.0 = ink (white), as in MNIST",
    ),
]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"pixels": EXAMPLE_PIXELS}]})

    pixels: Pixels


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"images": [EXAMPLE_PIXELS]}]})

    images: Annotated[list[Pixels], Field(min_length=1, max_length=MAX_BATCH_IMAGES)]


class Explanation(BaseModel):
    feature_maps: dict[str, list[list[list[float]]]] = Field(
        description="what each conv block made of the image, after pooling and ReLU: "
        "conv1 is 8 maps of 14x14, conv2 is 16 maps of 7x7 (each map is one learned filter's response)"
    )
    saliency: list[list[float]] = Field(
        description="28x28 in 0..1: how much each input pixel moved the predicted digit's score "
        "(|gradient x input|, scaled to its largest value); bright where the strokes decided the answer"
    )


class Prediction(BaseModel):
    predicted_digit: int = Field(ge=0, le=9, examples=[1])
    confidence: float = Field(ge=0.0, le=1.0, description="probability of the predicted digit", examples=[0.998])
    probabilities: list[float] = Field(
        min_length=len(LABELS), max_length=len(LABELS), description="probability of each digit 0..9, summing to 1"
    )
    explanation: Explanation | None = Field(default=None, description="with ?explain=true: what the network saw")


class ImagePrediction(Prediction):
    input: list[list[float]] | None = Field(
        default=None, description="with ?return_input=true: the 28x28 grey levels the model saw, after preprocessing"
    )


class BatchPrediction(BaseModel):
    predictions: list[Prediction] = Field(description="one per image, in the order they were sent")


class Problem(BaseModel):
    message: str = Field(description="what was wrong, in one sentence")
    detail: str | list


class ServiceInfo(BaseModel):
    ok: bool
    demo: str
    endpoint: str
    image_endpoint: str
    batch_endpoint: str
    ui: str
    model: str
    docs: str
    health: str


class Layer(BaseModel):
    name: str = Field(description="the attribute in TinyCNN, as in the course notes")
    operation: str
    output_shape: list[int] = Field(description="for one image: [channels, height, width], or [features]")
    parameters: int = Field(description="learned weights and biases")


class WeightsFile(BaseModel):
    file: str
    bytes: int
    sha256: str


class TrainingRecord(BaseModel):
    test_accuracy: float = Field(description="on the 10,000 MNIST test images")
    command: str = Field(description="the training run that made these weights")
    epochs: int
    date: str


class ModelCard(BaseModel):
    layers: list[Layer] = Field(description="TinyCNN in the notes' order, from one 28x28 image to 10 logits")
    parameters: int
    weights: WeightsFile = Field(description="the weights being served")
    training: TrainingRecord | None = Field(description="from the record the trainer wrote beside the weights")
    training_source: str = Field(description="where `training` comes from, or why it is unknown")


class Health(BaseModel):
    status: str


class ServerState(TypedDict):
    """What lifespan yields becomes each request's request.state: one set per running server."""

    predictor: BatchingPredictor
    model_card: ModelCard
    # Decoding a large image takes tens of MB for a moment: one at a time keeps a 512 MB instance safe.
    image_workers: anyio.CapacityLimiter


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[ServerState]:
    model_path = Path(os.environ.get("D4_MODEL_PATH", DEFAULT_MODEL_PATH))
    try:
        model = load_weights(model_path)
    except WeightsError as error:
        # Exit here with one line: an exception raised from lifespan would be printed
        # by uvicorn as a long Starlette traceback that buries the reason.
        print(f"error: {error}", file=sys.stderr, flush=True)
        os._exit(1)
    model_card = describe(model, model_path)
    predictor = BatchingPredictor(model, threads=TORCH_THREADS)
    predictor.start()
    # Start-up leaves ~190,000 objects (torch, pydantic, FastAPI) that live as long as the
    # server. Frozen, Python's oldest-generation collections skip them: each took ~80 ms under
    # load, stalling every request, /healthz included. No full collection first: it found ~50
    # garbage objects and took ~100 ms, a whole second of a free instance's 0.1 CPU at wake-up.
    gc.freeze()
    yield {"predictor": predictor, "model_card": model_card, "image_workers": anyio.CapacityLimiter(1)}
    predictor.stop()


app = FastAPI(
    title="D4 Tiny CNN",
    summary="Classify a handwritten digit (MNIST, 28x28 grey levels) with a tiny CNN.",
    lifespan=lifespan,
)
app.router.route_class = BodyRoute  # JSON parsed 3x faster, uploads checked to be whole, then the usual validation
app.add_middleware(ExplainTooLarge)
if CORS_ORIGINS:
    app.add_middleware(CORSMiddleware, allow_origins=CORS_ORIGINS, allow_methods=["GET", "POST"], allow_headers=["*"])


PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
HOW_TO_CALL = {
    "/predict": 'send JSON {"pixels": [[28 numbers] x 28]} with Content-Type: application/json',
    "/predict/batch": 'send JSON {"images": [[[28 numbers] x 28], ...]} with Content-Type: application/json',
    "/predict/image": "send multipart/form-data with the picture in the field named file",
}


@app.exception_handler(RequestValidationError)
async def explain_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 with one readable sentence, plus FastAPI's list without the echoed input.

    Field names come from the client when a field is unexpected; only plain names are repeated.
    """
    errors = [{**problem, "loc": tuple(map(_safe_name, problem["loc"]))} for problem in error.errors()]
    first = errors[0]
    if first["type"] == "json_invalid":  # loc holds a character position, not a field
        message = f"request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    else:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"][1:])
        message = f"{where.lstrip('.') or 'request body'}: {first['msg']}"
    if first["type"] == "json_invalid" or first["loc"] == ("body",) or first["type"] == "missing":
        message += f" ({HOW_TO_CALL.get(request.url.path, 'see /docs')})"  # the body's overall shape was wrong
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problems)"
    problems = [{"loc": problem["loc"], "msg": problem["msg"], "type": problem["type"]} for problem in errors[:10]]
    return JSONResponse(status_code=422, content={"message": message, "detail": problems})


def _safe_name(part: str | int) -> str | int:
    """A place in the body as the client named it, if it is a plain name; otherwise a placeholder."""
    if isinstance(part, int) or PLAIN_NAME.fullmatch(part):
        return part
    return "(a field whose name is not shown)"


@app.exception_handler(HTTPException)
async def explain_http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Every other error (400 unreadable body, 404, 405) in the same shape as a 422."""
    body = Problem(message=str(error.detail), detail=str(error.detail))
    return JSONResponse(status_code=error.status_code, content=body.model_dump(), headers=error.headers)


@app.exception_handler(PredictorStopped)
async def explain_shutting_down(request: Request, error: PredictorStopped) -> JSONResponse:
    """Work that arrives while the server stops is refused at once, never left waiting."""
    message = f"{error}; try again in a few seconds"
    return JSONResponse(status_code=503, content={"message": message, "detail": message}, headers={"Retry-After": "5"})


@app.get("/")
async def service_info() -> ServiceInfo:
    return ServiceInfo(
        ok=True,
        demo="D4 Tiny CNN: handwritten digit classifier trained on MNIST",
        endpoint="/predict",
        image_endpoint="/predict/image",
        batch_endpoint="/predict/batch",
        ui="/draw",
        model="/model",
        docs="/docs",
        health="/healthz",
    )


@app.get("/healthz", responses={503: {"model": Health, "description": "The inference thread has stopped or is stuck"}})
async def health(request: Request, response: Response) -> Health:
    """Cheap check for Render: ok once the model has loaded and while its thread is alive and answering.

    It never runs the model: it asks the inference thread's state, so a probe costs microseconds.
    """
    if request.state.predictor.healthy():
        return Health(status="ok")
    response.status_code = 503
    return Health(status="unavailable: the inference thread has stopped or is stuck")


TOO_LARGE = {"model": Problem, "description": "The body is over the size limit"}
UNREADABLE = {"model": Problem, "description": "The body could not be read (a broken multipart upload)"}


Explain = Annotated[
    bool, Query(description="also return the feature maps of both conv blocks and a saliency map (about 35 KB)")
]


@app.post("/predict", max_body_size=MAX_BODY_BYTES, responses={413: TOO_LARGE}, response_model_exclude_none=True)
async def predict(body: PredictRequest, request: Request, explain: Explain = False) -> Prediction:
    """Classify one 28x28 image of grey levels in 0..1 (white digit on black, like MNIST)."""
    pixels = packed([body.pixels])
    # The model runs on a worker thread, batched with other waiting requests: the event loop stays free.
    [probabilities] = await request.state.predictor.probabilities(pixels)
    prediction = to_prediction(probabilities)
    if explain:
        prediction.explanation = Explanation(**await request.state.predictor.explanation(pixels))
    return prediction


@app.post(
    "/predict/batch", max_body_size=MAX_BATCH_BODY_BYTES, responses={413: TOO_LARGE}, response_model_exclude_none=True
)
async def predict_batch(body: BatchRequest, request: Request) -> BatchPrediction:
    """Classify up to 256 images of 28x28 grey levels in one forward pass; answers come in the same order."""
    rows = await request.state.predictor.probabilities(packed(body.images))
    return BatchPrediction(predictions=[to_prediction(probabilities) for probabilities in rows])


@app.post(
    "/predict/image",
    max_body_size=MAX_UPLOAD_BYTES,
    response_model_exclude_none=True,
    responses={
        400: UNREADABLE,
        413: {
            "model": Problem,
            "description": f"The upload is over {MAX_UPLOAD_BYTES // 2**20} MiB or {MAX_IMAGE_PIXELS:,} pixels",
        },
        422: {"model": Problem, "description": "Not an image, a broken or animated one, a thin strip, or blank"},
    },
)
async def predict_image(
    request: Request,
    file: Annotated[UploadFile, File(description="a picture of one digit: PNG, JPEG or MPO, GIF, BMP, WebP")],
    return_input: Annotated[bool, Query(description="also return the 28x28 input the model saw")] = False,
    explain: Explain = False,
) -> ImagePrediction:
    """Classify a photo, scan or drawing of one digit, dark on light or light on dark, any size.

    It is prepared the way MNIST's digits were (see d4/preprocess.py): cropped to the ink,
    scaled to fit 20x20, centred by its centre of mass in 28x28, white on black.
    """
    data = await file.read()
    try:
        # Decoding is slow next to inference: a worker thread does it so the event loop stays free.
        views = await anyio.to_thread.run_sync(image_to_views, data, limiter=request.state.image_workers)
    except ImageTooLarge as error:
        raise HTTPException(status_code=413, detail=str(error)) from None
    except ImageRejected as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    # The picture and 4 nearby views of it in one batch; their answers averaged read people's digits better.
    rows = await request.state.predictor.probabilities(views)
    probabilities = [sum(column) / len(rows) for column in zip(*rows, strict=True)]
    prediction = ImagePrediction(**to_prediction(probabilities).model_dump())
    upright = views[:PIXELS_PER_IMAGE]  # the prepared picture itself, before the nearby views
    if return_input:
        prediction.input = [upright[row * IMAGE_SIZE : (row + 1) * IMAGE_SIZE].tolist() for row in range(IMAGE_SIZE)]
    if explain:
        prediction.explanation = Explanation(**await request.state.predictor.explanation(upright))
    return prediction


@app.get("/model")
async def model_card(request: Request) -> ModelCard:
    """The network being served: its layers with their output shapes and parameters, its weights, how they were made."""
    return request.state.model_card


def describe(model: TinyCNN, weights: Path) -> ModelCard:
    layers = [Layer(**layer) for layer in architecture(model)]
    digest = sha256(weights)
    record = read_record(weights, digest)
    if record is None:
        training = None
        source = f"unknown: no training record of these weights ({record_path(weights).name}) beside them"
    else:
        training = TrainingRecord(
            test_accuracy=record["test_accuracy"], command=record["command"], epochs=len(record["epochs"]),
            date=record["date"],
        )  # fmt: skip
        source = f"{record_path(weights).name}, written by the trainer with these weights (same sha256)"
    return ModelCard(
        layers=layers,
        parameters=sum(layer.parameters for layer in layers),
        weights=WeightsFile(file=weights.name, bytes=weights.stat().st_size, sha256=digest),
        training=training,
        training_source=source,
    )


@app.get("/draw", response_class=HTMLResponse)
async def draw_page() -> str:
    """A page to draw a digit on (mouse, pen or touch) and see what the model makes of it."""
    return DRAW_PAGE


def packed(images: list[list[list[float]]]) -> array:
    """The images' grey levels, row after row, in one float32 buffer that torch reads without a copy.

    array.fromlist row by row is 10x faster than torch.tensor(nested lists) and 2.5x faster
    than array("f", chain.from_iterable(...)).
    """
    pixels = array("f")
    for image in images:
        for row in image:
            pixels.fromlist(row)
    return pixels


def to_prediction(probabilities: list[float]) -> Prediction:
    digit = max(range(len(LABELS)), key=probabilities.__getitem__)
    return Prediction(predicted_digit=digit, confidence=probabilities[digit], probabilities=probabilities)
