"""`cab data`: the download path for real, against a local HTTP server on 127.0.0.1 serving copies of
the offline data folder (CAB_DATA_DIR, or ../shared/data beside the repository, or else the user
cache a `cab data download` filled). Nothing here reaches the internet: every URL is the local
server's, set through the base-URL override (CAB_DATA_URL or --url). The server misbehaves on
purpose under some prefixes:

    /good/...        the file, with HTTP Range support (206 for a range request)
    /truncated/...   the first half of the file, as a complete response
    /wrong/...       the file with one byte changed (wrong checksum)
    /drop-once/...   announces the whole length, sends half and closes, the first time only; then /good/
    /drop/...        always announces the whole length and closes after at most 64 KiB
    /error/...       HTTP 500
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cab.data import FILES, data_dir, user_cache_dir, verified_path
from cab.download import DownloadError, download, main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OFFLINE = Path(os.environ.get("CAB_DATA_DIR") or (SHARED if SHARED.is_dir() else user_cache_dir()))
HAVE_DATA = all((OFFLINE / spec.path).is_file() for spec in FILES.values())
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"no offline data at {OFFLINE} to serve (set CAB_DATA_DIR)")
FAST = dict(backoff=0.01, timeout=10)  # retries without the real back-off


class _Handler(BaseHTTPRequestHandler):
    root: Path
    log: list
    dropped: set
    timeout = 10  # a stuck client cannot hold a server thread for long

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        mode, _, rel = self.path.lstrip("/").partition("/")
        self.log.append((mode, rel, self.headers.get("Range")))
        path = self.root / rel
        if mode == "error":
            self.send_error(500, "broken on purpose")
            return
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        if mode == "truncated":
            body = body[: len(body) // 2]
        elif mode == "wrong":
            body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
        if mode == "drop" or (mode == "drop-once" and rel not in self.dropped):
            self.dropped.add(rel)
            start = self._range_start(len(body))
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            rest = body[start:]
            self.wfile.write(rest[: min(len(rest) // 2, 64 * 1024) if mode == "drop" else len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        start = self._range_start(len(body))
        if start is None:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def _range_start(self, size: int) -> int | None:
        """Start of a `bytes=N-` range (0 without one); None when N is past the end."""
        value = self.headers.get("Range")
        if not value or not value.startswith("bytes=") or not value.endswith("-"):
            return 0
        start = int(value[len("bytes="):-1])
        return None if start >= size else start


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A threaded HTTP server on 127.0.0.1 (a free port) serving a copy of the offline data folder."""
    if not HAVE_DATA:
        pytest.skip(f"no offline data at {OFFLINE} to serve")
    root = tmp_path_factory.mktemp("served")
    for spec in FILES.values():
        (root / spec.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OFFLINE / spec.path, root / spec.path)
    handler = type("Handler", (_Handler,), {"root": root, "log": [], "dropped": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """No CAB_DATA_DIR, no mirror, and an empty user cache (XDG_CACHE_HOME in tmp)."""
    monkeypatch.delenv("CAB_DATA_DIR", raising=False)
    monkeypatch.delenv("CAB_DATA_URL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = data_dir()
    if sys.platform.startswith("linux"):
        assert cache == tmp_path / "xdg" / "cab" / "data"
    assert not cache.exists()
    return cache


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("cab: error: ") and err.count("\n") == 1, err
    return err.strip()


# ------------------------------------------------------------------------------------------------


@needs_data
def test_every_data_set_downloads_verifies_and_runs_each_real_task_from_the_cache(served, empty_cache, monkeypatch,
                                                                                   tmp_path, capsys):
    from cab.data import clear_cache
    from cab.run.runner import run_job
    from conftest import compose

    base, handler = served
    monkeypatch.setenv("CAB_DATA_URL", f"{base}/good")
    assert main(["download"]) == 0
    out = capsys.readouterr().out
    for name, spec in FILES.items():
        assert f"{name}: downloaded" in out and "sha256 verified" in out
        assert verified_path(name) == empty_cache / spec.path
    assert not list(empty_cache.rglob("*.part"))
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("[verified: ") == len(FILES) and str(empty_cache) in listing

    clear_cache()
    cells = [("lstf", "noncausal_cross", ["task.dataset=ETTh1"]), ("lstf", "noncausal_self", ["task.dataset=ETTh2"]),
             ("lm", "causal_self", []), ("mlm", "noncausal_self", []), ("seq2seq", "causal_cross", [])]
    for task, pattern, extra in cells:
        config = compose([f"task={task}", f"pattern={pattern}", "attention=linear", "trainer=smoke", "trainer.steps=5",
                          "threads=1", f"results_dir={tmp_path / 'results'}", *extra])
        assert config["task"]["data_dir"] is None  # the default: CAB_DATA_DIR unset -> the user cache
        record = run_job(config)
        assert record["status"] == "ok", (task, record["error"])

    requests = len(handler.log)
    assert main(["download"]) == 0  # everything is there: nothing is fetched again
    assert len(handler.log) == requests and capsys.readouterr().out.count("present and verified") == len(FILES)


@needs_data
def test_truncated_file_is_refused_in_one_line(served, empty_cache, capsys):
    base, _ = served
    spec = FILES["tinyshakespeare"]
    err = _one_line_error(capsys, ["download", "tinyshakespeare", "--url", f"{base}/truncated"])
    assert spec.path in err and f"expected {spec.sha256}" in err and "has sha256 " in err
    found = err.split("has sha256 ")[1].split()[0]
    assert len(found) == 64 and found != spec.sha256
    assert not (empty_cache / spec.path).exists() and not list(empty_cache.rglob("*.part"))


@needs_data
def test_wrong_checksum_is_refused_in_one_line_and_nothing_is_kept(served, empty_cache, capsys):
    base, _ = served
    spec = FILES["ETTh2"]
    err = _one_line_error(capsys, ["download", "ETTh2", "--url", f"{base}/wrong"])
    assert spec.path in err and f"expected {spec.sha256}" in err and "not kept" in err
    assert not (empty_cache / spec.path).exists() and not list(empty_cache.rglob("*.part"))


@needs_data
def test_a_connection_dropped_halfway_is_resumed_with_a_range_request(served, empty_cache):
    base, handler = served
    spec = FILES["ETTh1"]
    [result] = download(["ETTh1"], base_url=f"{base}/drop-once", **FAST)
    assert result.action == "downloaded" and result.tries == 2 and result.resumed_from > 0
    ranges = [r for mode, rel, r in handler.log if mode == "drop-once" and rel == spec.path]
    assert ranges == [None, f"bytes={result.resumed_from}-"]
    assert verified_path("ETTh1") == empty_cache / spec.path and not list(empty_cache.rglob("*.part"))


@needs_data
def test_a_server_that_keeps_dropping_fails_in_one_line_and_the_next_run_resumes(served, empty_cache, capsys):
    base, handler = served
    spec = FILES["tinyshakespeare"]
    with pytest.raises(DownloadError) as failed:
        download(["tinyshakespeare"], base_url=f"{base}/drop", retries=2, **FAST)
    message = str(failed.value)
    assert "\n" not in message and spec.path in message and "3 tries" in message and "resume" in message
    part = empty_cache / (spec.path + ".part")
    held = part.stat().st_size
    assert 0 < held < spec.size and not (empty_cache / spec.path).exists()

    before = len(handler.log)
    [result] = download(["tinyshakespeare"], base_url=f"{base}/good", **FAST)
    assert result.resumed_from == held and handler.log[before][2] == f"bytes={held}-"
    assert verified_path("tinyshakespeare") == empty_cache / spec.path and not part.exists()


@needs_data
def test_server_errors_are_retried_then_one_line(served, empty_cache, capsys):
    base, handler = served
    with pytest.raises(DownloadError) as failed:
        download(["ETTh1"], base_url=f"{base}/error", retries=1, **FAST)
    assert "\n" not in str(failed.value) and "HTTP 500" in str(failed.value) and "2 tries" in str(failed.value)
    assert [m for m, *_ in handler.log].count("error") >= 2


@needs_data
def test_a_file_in_place_that_does_not_verify_is_replaced_only_with_force(served, empty_cache, capsys):
    base, _ = served
    spec = FILES["tinyshakespeare"]
    target = empty_cache / spec.path
    target.parent.mkdir(parents=True)
    target.write_text("not shakespeare")
    err = _one_line_error(capsys, ["download", "tinyshakespeare", "--url", f"{base}/good"])
    assert str(target) in err and "--force" in err and target.read_text() == "not shakespeare"
    assert main(["download", "tinyshakespeare", "--url", f"{base}/good", "--force"]) == 0
    assert verified_path("tinyshakespeare") == target


def test_unreachable_server_and_unknown_names_are_one_line(empty_cache, capsys, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused, as with no network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CAB_DATA_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("cab.download.time.sleep", lambda s: None)
    err = _one_line_error(capsys, ["download", "ETTh1", "--retries", "1"])
    assert "ett/ETTh1.csv" in err and "cannot reach 127.0.0.1" in err
    blocked = empty_cache.parent / "a-file"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a folder")
    err = _one_line_error(capsys, ["download", "ETTh2", "--dir", str(blocked)])
    assert "cannot write ett/ETTh2.csv" in err and "--dir" in err
    from cab.cli import main as cab_main

    assert cab_main(["data", "download", "ETTh9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown data set 'ETTh9'" in err and "tinyshakespeare" in err


def test_a_fresh_clone_without_data_says_how_to_get_it_and_still_runs_synthetic_tasks(tmp_path):
    """No ../shared, no CAB_DATA_DIR, an empty user cache, no network: the real tasks say in one line
    how to get their data; the synthetic ones run."""
    env = {k: v for k, v in os.environ.items() if k not in ("CAB_DATA_DIR", "CAB_DATA_URL")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    results = tmp_path / "results"
    real = subprocess.run(
        [sys.executable, "-m", "cab.cli", "run", "task=lm", "pattern=causal_self", "trainer=smoke", "threads=1",
         f"results_dir={results}"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    shown = (real.stdout + real.stderr).strip()
    lines = [line for line in shown.splitlines() if "tinyshakespeare" in line]
    assert len(lines) == 1 and "[failed]" in lines[0] and "`cab data download tinyshakespeare`" in lines[0], shown
    assert "Traceback" not in shown
    listing = subprocess.run([sys.executable, "-m", "cab.cli", "data", "list"], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=120)
    assert listing.returncode == 0 and listing.stdout.count("[missing: cab data download") == len(FILES)
    synthetic = subprocess.run(
        [sys.executable, "-m", "cab.cli", "run", "task=mqar", "attention=linear", "pattern=causal_self",
         "trainer=smoke", "threads=1", f"results_dir={results}"], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=300)
    assert synthetic.returncode == 0 and "[ok]" in synthetic.stdout, synthetic.stdout + synthetic.stderr
