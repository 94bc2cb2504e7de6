"""HTTP service and web page for ast-audio (`ast-audio serve`); needs the `serve` extra (fastapi, uvicorn)."""

from .app import ServeSettings, create_app, run_server

__all__ = ["ServeSettings", "create_app", "run_server"]
