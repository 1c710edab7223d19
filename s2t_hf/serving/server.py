"""Running the app: uvicorn in this process, in the foreground (`s2t-hf serve`) or in a thread
(`BackgroundServer`: for notebooks, tests and the browser check)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class BackgroundServer:
    """`with BackgroundServer(app) as url:` serves `app` on a free loopback port until the block ends."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 120.0):
        self.config = uvicorn.Config(app, host=host, port=port or free_port(host), log_level="warning", access_log=False)
        self.server = uvicorn.Server(self.config)
        self.start_timeout = start_timeout
        self.thread = threading.Thread(target=self.server.run, name="s2t-hf-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:  # set once the lifespan (model warm-up) has run and the socket listens
            if not self.thread.is_alive():
                raise RuntimeError(f"the server on {self.url} stopped while starting (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server on {self.url} did not start within {self.start_timeout:g} s")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
