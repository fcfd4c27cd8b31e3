"""Serving: the OpenAI-compatible HTTP server (``app``), its request bodies (``protocol``) and the
``longcat serve`` / ``generate`` / ``models init`` commands (``cli``)."""
from longcat.serve.app import ServerThread, build_app

__all__ = ["build_app", "ServerThread"]
