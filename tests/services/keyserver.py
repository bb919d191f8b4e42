"""A small real HTTP server that serves a GET /keys document the test can change."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from crumb import PublicKey


def document(current: PublicKey, previous: PublicKey | None = None, nodes: dict | None = None,
             retired: list[PublicKey] = ()) -> dict:
    keys = [{**current.to_jwk(), "alg": "EdDSA", "use": "sig", "status": "current"}]
    if previous is not None:
        keys.append({**previous.to_jwk(), "alg": "EdDSA", "use": "sig", "status": "previous"})
    keys += [{**k.to_jwk(), "status": "retired"} for k in retired]
    return {"keys": keys, "nodes": [{"name": n, **k.to_jwk()} for n, k in (nodes or {}).items()],
            "issuer": "test"}


class KeyServer:
    def __init__(self, doc: dict | None = None) -> None:
        self.body = json.dumps(doc or {"keys": []}).encode()
        self.status = 200
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                if self.path != "/keys":
                    self.send_error(404)
                    return
                self.send_response(server.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/keys"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def serve(self, doc: dict | bytes) -> None:
        self.body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
