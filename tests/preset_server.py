"""A local stand-in for open-mmlab's download server (127.0.0.1, Range requests, cut-off
responses) and the preset records that point at it; the `server` fixture is conftest.py's."""

import hashlib
import http.server
import threading

from pspnet_tf.download import BASE_ENV, CACHE_ENV, OPENMMLAB


class Server:
    """Serves `files` ({url path: bytes}) on 127.0.0.1 with Range support; records requests,
    and `truncate` cuts the next response to a path off half-way through its body."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.truncate: set[str] = set()
        self.ignore_range = False  # answer like a server without Range support
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[self.path], 0
                if self.headers.get("Range") and not server.ignore_range:
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.truncate:
                    server.truncate.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def hits(self, path: str) -> int:
        return sum(requested == path for requested, _ in self.requests)


def serve_preset(server, monkeypatch, tmp_path, data: bytes, folder: str, name: str) -> str:
    """Serves `data` as open-mmlab's file `folder/name-<sha256 prefix>.pth` through
    $PSPNET_TF_DOWNLOAD_BASE, with the cache in tmp_path; returns the open-mmlab URL."""
    path = f"{folder}/{name}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    server.files[path] = data
    monkeypatch.setenv(BASE_ENV, server.base)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return OPENMMLAB + path
