"""A stand-in OpenAI-compatible embeddings server for the tests (stdlib only), run as its own process.

``python embedding_server.py PORT KEY DIM FAIL_FIRST``: ``POST /v1/embeddings`` answers deterministic
vectors (``vector(model, text, dim)``), checks the bearer key (401), knows one model
(``text-embedding-3-small``, else 404), honours ``dimensions`` and answers 503 to its first
``FAIL_FIRST`` requests. ``GET /health`` is 200; ``GET /stats`` lists the batch size of each request.
"""

from __future__ import annotations

import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

MODEL = "text-embedding-3-small"


def vector(model: str, text: str, dim: int) -> list[float]:
    """The server's embedding of ``text``: seeded by the SHA-256 of model and text."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\n{text}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).round(6).tolist()


def serve(port: int, key: str, dim: int, fail_first: int) -> None:
    state = {"sizes": [], "failures": fail_first}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"ok": True})
            elif self.path == "/stats":
                self._send(200, {"sizes": state["sizes"]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/embeddings":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if self.headers.get("Authorization") != f"Bearer {key}":
                return self._send(401, {"error": {"message": "Incorrect API key provided"}})
            if state["failures"] > 0:
                state["failures"] -= 1
                return self._send(503, {"error": {"message": "overloaded, try again"}})
            if body.get("model") != MODEL:
                return self._send(404, {"error": {"message": f"The model {body.get('model')} does not exist"}})
            texts = body["input"]
            state["sizes"].append(len(texts))
            n = body.get("dimensions", dim)
            data = [{"object": "embedding", "index": i, "embedding": vector(MODEL, t, n)} for i, t in enumerate(texts)]
            self._send(200, {"object": "list", "data": data[::-1], "model": MODEL})  # out of order on purpose

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
