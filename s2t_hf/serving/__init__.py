"""Serving: an HTTP API and a page over `S2T`, with dynamic batching (`s2t-hf serve`).

Needs the `serve` extra (FastAPI, uvicorn, python-multipart), which the setup installs.
"""

from .app import ServeSettings, create_app
from .batching import DynamicBatcher, QueueFull

__all__ = ["DynamicBatcher", "QueueFull", "ServeSettings", "create_app"]
