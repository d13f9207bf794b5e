"""What the benchmarks share: a server under test, its memory, and a small asyncio HTTP/1.1 load client.

The client is keep-alive, bounded and honest about failures. It sends raw requests (bytes,
made by `http_request`) over a fixed number of connections, reads each answer by its
Content-Length, reconnects when the server closes a connection after answering, and counts
a connection that breaks before a full answer as dropped. Enough for uvicorn; not a general
HTTP client (no chunked responses).
"""

import asyncio
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
RENDER_FREE = REPO.parent / "shared" / "tools" / "render-free"


@contextmanager
def running_server(
    command: list[str], health_url: str, **popen_options
) -> Iterator[tuple[subprocess.Popen, float]]:
    """Start a server; once health_url answers 200, yield it and the seconds that took; stop it at the end."""
    start = time.perf_counter()
    server = subprocess.Popen(command, **popen_options)
    try:
        while True:
            try:
                if requests.get(health_url, timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.01)
            if server.poll() is not None or time.perf_counter() - start > 60:
                sys.exit(f"error: {' '.join(command)} did not start")
        yield server, time.perf_counter() - start
    finally:
        with contextlib.suppress(
            ProcessLookupError, FileNotFoundError
        ):  # it may have exited already
            os.kill(
                serving_pid(server), signal.SIGTERM
            )  # the server itself, so that a wrapper sees it exit
        server.wait()


def serving_pid(server: subprocess.Popen) -> int:
    """The server's own process: `server`, or behind a wrapper that starts it (render-free), its innermost child."""
    pid = server.pid
    while children := Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pid = int(children[0])
    return pid


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, private) MB. Resident also counts the pages of shared libraries (torch's
    code) that the process has touched; private is the memory that is the process's own."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used so far, user and system, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def http_request(
    method: str, path: str, body: bytes = b"", content_type: str = "application/json", **headers
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if body or method == "POST":
        lines += [
            f"Content-Type: {content_type}",
            f"Content-Length: {headers.pop('content_length', len(body))}",
        ]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Load:
    """What one run of `drive` saw."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)  # (request kind, HTTP status) -> count
    dropped: int = 0  # connections that broke before a whole answer came back
    elapsed: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed

    def percentile_ms(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[int(share * (len(ordered) - 1))]

    @property
    def p50_ms(self) -> float:
        return 1000 * statistics.median(self.latencies)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server will close the connection."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return int(head.split(b" ")[1]), headers.get(b"connection") == b"close"


async def _one_connection(
    port: int, work: itertools.cycle, remaining: list[int], load: Load
) -> None:
    reader = writer = None
    while remaining[0] > 0:
        remaining[0] -= 1
        kind, request = next(work)
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.perf_counter()
        try:
            writer.write(request)
            status, closing = await _read_answer(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            load.dropped += 1
            writer.close()
            writer = None
            continue
        load.latencies.append(time.perf_counter() - start)
        load.statuses[kind, status] += 1
        if closing:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def drive(port: int, requests: list[tuple[str, bytes]], concurrency: int, total: int) -> Load:
    """Send `total` requests, cycling through (kind, raw request) pairs, over `concurrency` connections."""
    load, remaining = Load(), [total]
    work = itertools.cycle(requests)  # shared: each connection takes the next request
    start = time.perf_counter()
    await asyncio.gather(
        *(_one_connection(port, work, remaining, load) for _ in range(concurrency))
    )
    load.elapsed = time.perf_counter() - start
    return load


def deploy_env() -> dict[str, str]:
    """The environment render.yaml gives the API (threads, allocator, shutdown), but not Render's Python version."""
    (service,) = yaml.safe_load((REPO / "render.yaml").read_text())["services"]
    return {
        item["key"]: item["value"] for item in service["envVars"] if item["key"] != "PYTHON_VERSION"
    }


def api_in_render_free(python: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment that start the API in a free instance's shape, as Render runs it."""
    command = [str(RENDER_FREE), python, "-m", "uvicorn", "d4_api_mnist:app", "--port", str(port)]
    return command, {**os.environ, **deploy_env()}
