"""Run ASGI applications under uvicorn on a loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

START_TIMEOUT_SECONDS = 15


@dataclass
class RunningServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def bind_loopback() -> socket.socket:
    """Bind a socket to a free port on 127.0.0.1, so the URL is known before the app is built."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve(build_app: Callable[[str], ASGIApp], *, lifespan: str = "on") -> Iterator[RunningServer]:
    """Serve build_app(base_url) on a fresh loopback port until the block ends.

    Use lifespan="off" for applications without lifespan support, such as Django's.
    """
    sock = bind_loopback()
    port = sock.getsockname()[1]
    running = RunningServer("127.0.0.1", port)
    app = build_app(running.url)
    config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, ws="none")
    server = uvicorn.Server(config)

    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {running.url}")
        time.sleep(0.02)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_SECONDS)
        sock.close()
