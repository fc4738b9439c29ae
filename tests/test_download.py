"""Downloads that meet a bad network or a bad cache folder: the real `fetch` against loopback
servers that never answer, stall half-way through a body, or fail with an HTTP status, with
short timeouts; each ends in one UserError line (or completes, resumed), never a hang."""

import hashlib
import http.server
import os
import threading

import cv2
import numpy as np
import pytest
from helpers import error_lines, run_command

from pspnet_tf.download import fetch
from pspnet_tf.download import CACHE_ENV, TIMEOUT_ENV
from pspnet_tf.models.presets import BASE_ENV, OPENMMLAB
from pspnet_tf.models.presets import PRESETS as CHECKPOINTS
from pspnet_tf.errors import EnvironmentFault, UserError

# How long a stalled response waits at most before its connection is closed, so that a client
# without a timeout gets an error instead of hanging the test session.
STALL_CAP_S = 30
TIMEOUT_S = 1.0  # the client's timeout: long enough for loopback, short for the tests' time


class FaultyServer:
    """Serves `files` ({url path: bytes}) on 127.0.0.1 with Range support. Each request takes
    the next action of `plan` (then "serve"): "serve" the (rest of the) file, stay "silent"
    (read the request, answer nothing), "stall" (headers and half the body, then nothing),
    or an HTTP status code to answer (404 for paths not in `files`). Records (path, Range
    header) of every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.plan: list[str | int] = []
        self.requests: list[tuple[str, str | None]] = []
        self.release = threading.Event()  # ends the silences and stalls
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get("Range")))
                action = server.plan.pop(0) if server.plan else "serve"
                if self.path not in server.files:
                    action = 404
                if isinstance(action, int):
                    self.send_error(action)
                    return
                if action == "silent":
                    server.release.wait(STALL_CAP_S)
                    self.close_connection = True
                    return
                body = server.files[self.path]
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) \
                    if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if action == "stall":
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    server.release.wait(STALL_CAP_S)
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client that timed out closed the connection; nothing to report

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, payload: bytes, stem: str = "resnet18_v1c") -> str:
        """Serves `payload` under a name ending in its sha256 prefix; returns its URL."""
        path = f"/weights/{stem}-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
        self.files[path] = payload
        return self.base + path


@pytest.fixture
def server():
    serving = FaultyServer()
    yield serving
    serving.release.set()
    serving.httpd.shutdown()
    serving.httpd.server_close()


PAYLOAD = bytes(range(256)) * 1024  # 256 KiB


def test_a_server_that_never_answers_fails_in_one_line_after_three_attempts(server, tmp_path,
                                                                           capsys):
    url = server.add(PAYLOAD)
    server.plan = ["silent"] * 3
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as raised:
        fetch(url, str(cache), timeout=TIMEOUT_S, backoff=0)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"could not download {url}: ")
    assert f"timed out after {TIMEOUT_S:g} s" in message and "(3 attempts)" in message
    assert f"raise ${TIMEOUT_ENV} for a slow server" in message
    assert f"set ${BASE_ENV} to a mirror of {OPENMMLAB}" in message
    assert len(server.requests) == 3
    assert os.listdir(cache) == []  # no empty .part left behind
    notes = capsys.readouterr().err.splitlines()
    assert [note for note in notes if "trying again" in note] == [
        f"{url}: timed out after {TIMEOUT_S:g} s without data; trying again in 0 s (attempt "
        f"{attempt} of 3)" for attempt in (2, 3)]


def test_the_timeout_comes_from_the_environment(server, tmp_path, monkeypatch):
    url = server.add(PAYLOAD)
    server.plan = ["silent"]
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    with pytest.raises(UserError, match=r"timed out after 0\.5 s without data"):
        fetch(url, str(tmp_path), attempts=1)
    assert len(server.requests) == 1


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_a_bad_timeout_is_refused_before_any_download(server, tmp_path, monkeypatch, value):
    url = server.add(PAYLOAD)
    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(UserError, match=rf"^\${TIMEOUT_ENV}='{value}' is not a number of "):
        fetch(url, str(tmp_path))
    with pytest.raises(UserError, match=r"^timeout=0 is not a number of seconds"):
        fetch(url, str(tmp_path), timeout=0)
    assert server.requests == []


def test_a_stalled_download_is_resumed_with_range_and_completes(server, tmp_path, capsys):
    url = server.add(PAYLOAD)
    path = url[len(server.base):]
    server.plan = ["stall"]  # half the body, then silence; the second request is served
    cached = fetch(url, str(tmp_path), timeout=TIMEOUT_S, backoff=0)
    assert open(cached, "rb").read() == PAYLOAD
    assert server.requests == [(path, None), (path, f"bytes={len(PAYLOAD) // 2}-")]
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    assert "trying again in 0 s (attempt 2 of 3)" in capsys.readouterr().err


def test_a_download_that_keeps_stalling_fails_and_the_next_call_resumes(server, tmp_path):
    url = server.add(PAYLOAD)
    path = url[len(server.base):]
    name = os.path.basename(path)
    server.plan = ["stall"] * 3  # each attempt gets half of what is left
    with pytest.raises(UserError) as raised:
        fetch(url, str(tmp_path), timeout=TIMEOUT_S, backoff=0)
    assert "timed out after" in str(raised.value) and "(3 attempts)" in str(raised.value)
    assert [ranged for _, ranged in server.requests] == [
        None, f"bytes={len(PAYLOAD) // 2}-", f"bytes={len(PAYLOAD) * 3 // 4}-"]
    part = tmp_path / f"{name}.part"
    assert part.read_bytes() == PAYLOAD[:len(PAYLOAD) * 7 // 8]  # kept for the next run
    assert os.listdir(tmp_path) == [part.name]

    cached = fetch(url, str(tmp_path), timeout=TIMEOUT_S, backoff=0)
    assert server.requests[-1] == (path, f"bytes={len(PAYLOAD) * 7 // 8}-")
    assert open(cached, "rb").read() == PAYLOAD and os.listdir(tmp_path) == [name]


def test_http_errors_are_retried_only_when_trying_again_can_help(server, tmp_path):
    url = server.add(PAYLOAD)
    server.plan = [503, 503]
    assert open(fetch(url, str(tmp_path / "a"), backoff=0), "rb").read() == PAYLOAD
    assert len(server.requests) == 3

    missing = server.base + "/weights/absent-01234567.pth"
    with pytest.raises(UserError) as raised:
        fetch(missing, str(tmp_path / "b"), backoff=0)
    assert str(raised.value).startswith(f"could not download {missing}: the server answered "
                                        "HTTP 404 Not Found; check the URL")
    assert len(server.requests) == 4 and os.listdir(tmp_path / "b") == []


@pytest.mark.parametrize("under", [False, True])
def test_a_cache_that_is_a_file_is_refused_in_one_line(server, tmp_path, monkeypatch, under):
    url = server.add(PAYLOAD)
    blocker = tmp_path / "cache"
    blocker.write_bytes(b"user data")
    cache = blocker / "sub" if under else blocker
    monkeypatch.setenv(CACHE_ENV, str(cache))
    with pytest.raises(EnvironmentFault) as raised:  # exit status 4 from the commands
        fetch(url)
    assert str(raised.value) == (f"the download cache {cache} is a file or lies under one, not "
                                 f"a folder; point ${CACHE_ENV} at a writable folder (or pass "
                                 "another cache_dir) and run again")
    assert blocker.read_bytes() == b"user data" and server.requests == []


def test_a_partial_download_that_cannot_be_written_is_refused_in_one_line(server, tmp_path):
    url = server.add(PAYLOAD)
    part = tmp_path / f"{os.path.basename(url)}.part"
    part.mkdir()  # a local fault, as a read-only or full cache is, but also for root
    with pytest.raises(UserError) as raised:
        fetch(url, str(tmp_path))
    assert str(raised.value) == (f"cannot write {part} (Is a directory); point ${CACHE_ENV} at "
                                 "a writable folder (or pass another cache_dir) and run again")
    assert server.requests == []  # not taken for a network fault, not retried


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_cache_that_cannot_be_written_is_refused_in_one_line(server, tmp_path):
    url = server.add(PAYLOAD)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(UserError, match=rf"^cannot write {tmp_path}/\S+\.part "
                                            r"\(Permission denied\); point"):
            fetch(url, str(tmp_path))
    finally:
        tmp_path.chmod(0o755)
    assert server.requests == []


def test_predict_with_a_published_name_and_a_stalled_server_exits_2_with_one_line(
        server, tmp_path, monkeypatch):
    """`predict.py --model=NAME` in this process, $PSPNET_TF_DOWNLOAD_BASE at a server that
    sends part of the checkpoint and stalls: `error: ...`, exit 2, a .part left to resume."""
    entry = next(c for c in CHECKPOINTS if c.name == "pspnet_r50-d8_512x1024_80k_cityscapes")
    path = entry.url[len(OPENMMLAB):]
    server.files[path] = PAYLOAD
    server.plan = ["stall"] * 3
    monkeypatch.setenv(BASE_ENV, server.base)
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    result = run_command("pspnet-predict", f"--model={entry.name}", f"--input={image}",
                         f"--output={tmp_path / 'out'}")
    assert result.returncode == 2
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        f"error: could not download {server.base + path}: timed out after 0.5 s")
    assert os.listdir(tmp_path / "cache") == [f"{entry.file_name}.part"]
    assert not (tmp_path / "out").exists()
