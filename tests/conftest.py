"""Shared test helpers: the shipped MNIST fixture, running the scripts, a real uvicorn server."""

import atexit
import functools
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageDraw

# DIGIT_STROKES: each digit as pen strokes on a 280x280 pad, the way a person draws it (the handwriting proxy
# draws from d4/drawn_digits.py too). The image tests draw them with Pillow, the browser test with the mouse.
from d4.drawn_digits import DIGIT_STROKES

REPO = Path(__file__).resolve().parents[1]
FIXTURE_MNIST = (
    Path(__file__).resolve().parent / "fixtures" / "mnist"
)  # 200 train + 300 test digits


def _shipped_weights() -> Path:
    """The d4_cnn.pt this repository ships (with its d4_cnn.json), even after a training run replaced the working copy.

    A learner's `python d4_tiny_cnn_mnist.py` writes its own d4_cnn.pt here, as the notes' does. The
    tests of the shipped model's quality then read the committed files from git, in a folder of their own.
    """
    working = REPO / "d4_cnn.pt"
    try:
        committed = {
            name: subprocess.run(
                ["git", "show", f"HEAD:{name}"], cwd=REPO, capture_output=True, check=True
            ).stdout
            for name in ("d4_cnn.pt", "d4_cnn.json")
        }
    except (
        OSError,
        subprocess.CalledProcessError,
    ):  # not a git checkout: the files here are the shipped ones
        return working
    if working.is_file() and working.read_bytes() == committed["d4_cnn.pt"]:
        return working
    folder = Path(tempfile.mkdtemp(prefix="d4-shipped-weights-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for name, content in committed.items():
        (folder / name).write_bytes(content)
    return folder / "d4_cnn.pt"


SHIPPED_WEIGHTS = _shipped_weights()
# The API in-process (TestClient) serves the shipped weights too; a test that wants others sets D4_MODEL_PATH itself.
os.environ["D4_MODEL_PATH"] = str(SHIPPED_WEIGHTS)


SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_CHROMIUM = (
    "the /draw and /docs tests need Chromium and none was found: on Debian/Ubuntu `sudo apt-get install chromium`, "
    "elsewhere `python -m playwright install chromium`"
)


@functools.cache
def find_chromium() -> str | None:
    """Playwright's own Chromium if it is installed, else the first system Chromium or Chrome on the PATH."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        bundled = playwright.chromium.executable_path
    if Path(bundled).is_file():
        return bundled
    return next(filter(None, map(shutil.which, SYSTEM_CHROMIUMS)), None)


BROWSER_TESTS = ("test_draw_page.py", "test_docs_offline.py")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop the run at once, in one line, when browser tests are selected and there is no browser to run them."""
    if any(item.path.name in BROWSER_TESTS for item in session.items) and find_chromium() is None:
        pytest.exit(NO_CHROMIUM, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium driven by Playwright, for the page tests."""
    from playwright.sync_api import sync_playwright

    chromium = (
        find_chromium()
    )  # before this fixture's own Playwright starts: one at a time per thread
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        yield browser
        browser.close()


def drawn(digit: int, mode: str = "L", paper=255, pen=0) -> Image.Image:
    """DIGIT_STROKES drawn with a thick round pen, like a finger on a canvas."""
    image = Image.new(mode, (280, 280), paper)
    pencil = ImageDraw.Draw(image)
    for stroke in DIGIT_STROKES[digit]:
        pencil.line(stroke, fill=pen, width=20, joint="curve")
    return image


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def script_env(**overrides: str) -> dict[str, str]:
    """The environment a user would have: no display, and no proxy tricks unless a test adds them."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def run_script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts as a user would, from the repo root."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env or script_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def uvicorn_process(
    model_path: Path = SHIPPED_WEIGHTS,
    *,
    app: str = "d4_api_mnist:app",
    app_dir: Path = REPO,
    cwd: Path = REPO,
    health: str = "/healthz",
    **env: str,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real uvicorn on a free loopback port serving `app` (ours by default): its base URL and its process."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--app-dir",
            str(app_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=cwd,
        env=script_env(D4_MODEL_PATH=str(model_path), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"uvicorn exited with {process.returncode}: {process.stdout.read()}"
                )
            try:
                if requests.get(f"{base_url}{health}", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not become healthy within 60 s")
            time.sleep(0.2)
        yield base_url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def uvicorn_server(model_path: Path = SHIPPED_WEIGHTS, **env: str) -> Iterator[str]:
    """A real `uvicorn d4_api_mnist:app` on a free loopback port; yields its base URL."""
    with uvicorn_process(model_path, **env) as (base_url, _):
        yield base_url


@contextmanager
def notes_api_server(weights_folder: Path) -> Iterator[str]:
    """The notes' API (benchmarks/notes_api.py) as a real uvicorn serving weights_folder/d4_cnn.pt; its base URL.

    Like the notes' script, it reads d4_cnn.pt from its working directory.
    """
    notes_api = {
        "app": "notes_api:app",
        "app_dir": REPO / "benchmarks",
        "cwd": weights_folder,
        "health": "/",
    }
    with uvicorn_process(weights_folder / "d4_cnn.pt", **notes_api) as (base_url, _):
        yield base_url


def old_layout_state_dict() -> dict:
    """What this project's trainer saved before it took the notes' layout: nn.Sequential blocks conv and fc."""
    from torch import nn

    conv = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1)
    )
    fc = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    return nn.ModuleDict({"conv": conv, "fc": fc}).state_dict()


@pytest.fixture(autouse=True)
def denormals_as_usual():
    """Denormal floats back on after each test.

    The trainer's main() flushes them to zero for the whole process, as a script may; run in-process by a
    test, it must not leave that on for the next (hypothesis refuses to run with it).
    """
    yield
    import torch

    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def client():
    """The API in-process (FastAPI's TestClient), its lifespan run: it serves the shipped d4_cnn.pt."""
    from fastapi.testclient import TestClient

    from d4_api_mnist import app

    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def fixture_test_digits() -> tuple:
    """The 300 real MNIST test digits shipped with the tests, as (uint8 images, labels)."""
    from d4.data import load_mnist

    return load_mnist(FIXTURE_MNIST, train=False)
