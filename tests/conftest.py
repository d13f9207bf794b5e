"""Shared test helpers: the shipped MNIST fixture, running the scripts, a real uvicorn server."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
FIXTURE_MNIST = Path(__file__).resolve().parent / "fixtures" / "mnist"  # 200 train + 300 test digits
SHIPPED_WEIGHTS = REPO / "d4_cnn.pt"


def script_env(**overrides: str) -> dict[str, str]:
    """The environment a user would have: no display, and no proxy tricks unless a test adds them."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts as a user would, from the repo root."""
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env or script_env(), capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def uvicorn_server(model_path: Path = SHIPPED_WEIGHTS, **env: str) -> Iterator[str]:
    """A real `uvicorn d4_api_mnist:app` on a free loopback port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "d4_api_mnist:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
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
                raise RuntimeError(f"uvicorn exited with {process.returncode}: {process.stdout.read()}")
            try:
                if requests.get(f"{base_url}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not become healthy within 60 s")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


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
