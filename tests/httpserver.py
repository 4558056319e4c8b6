"""A local HTTP server on 127.0.0.1 that serves files like OpenAI's bucket, with faults on demand.

    server.files["/models/124M/hparams.json"] = b"..."
    server.faults["/models/124M/model.ckpt.data-00000-of-00001"] = ["drop_half", "ok"]  # one per request

Faults: "ok", "503", "404", "drop_half" (announce the full size, send half, close), "short" (announce the full
size, send all but 100 bytes, close), "short_range" (a well-formed 206 whose Content-Range promises the rest of
the file but whose body, and Content-Length, hold only half of it: the HTTP layer sees nothing wrong). Range requests ("bytes=N-") are answered with 206 like Azure does.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.seconds_per_body = 0.0  # > 0: a slow mirror, each body sent in 20 pieces over this long
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                queue = server.faults.get(self.path, [])
                fault = queue.pop(0) if queue else "ok"
                body = server.files.get(self.path)
                if fault == "404" or body is None:
                    return self.reply(404, b"<Error><Code>BlobNotFound</Code></Error>")
                if fault == "503":
                    return self.reply(503, b"<Error><Code>ServerBusy</Code></Error>")
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[len("bytes="):-1])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                part = body[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                if fault == "short_range":
                    part = part[: len(part) // 2]
                self.send_header("Content-Length", str(len(part)))
                self.send_header("Connection", "close")
                self.end_headers()
                if fault == "drop_half":
                    part = part[: len(part) // 2]
                elif fault == "short":
                    part = part[:-100]
                if server.seconds_per_body:
                    step = max(1, len(part) // 20)
                    for i in range(0, len(part), step):
                        self.wfile.write(part[i : i + step])
                        self.wfile.flush()
                        time.sleep(server.seconds_per_body / 20)
                else:
                    self.wfile.write(part)
                self.wfile.flush()
                self.close_connection = True

            def reply(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
