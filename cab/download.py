"""`cab data`: list the real tasks' data sets, and download the public originals into the data directory.

    cab data list [--dir DIR]
    cab data download [NAME ...] [--dir DIR] [--url BASE] [--force] [--retries N]

Where: `--dir`, else $CAB_DATA_DIR, else the user cache (`cab.data.user_cache_dir()`), the same rule
the tasks read by, so a downloaded file is found with no setting. From where: each file's public
original at a fixed commit (`DataFile.url`), or, with `--url BASE` or $CAB_DATA_URL, a mirror: a web
folder laid out as the data directory (`BASE/ett/ETTh1.csv`, `BASE/tinyshakespeare/input.txt`), e.g.
`python -m http.server -d /path/to/data`.

How: the bytes go to `<file>.part` beside the target; a transfer that breaks off (connection closed
before the announced length, reset, timeout, HTTP 5xx) is retried, resuming from the bytes already
there with an HTTP Range request (a server that ignores the range sends the whole file again, which
is then written from the start). When the transfer is complete, the sha256 of the bytes must be one
`cab.data` pins for the file; only then is the part renamed over the target (atomic: a reader sees
the old file or the new one, never half a file). A file that does not verify is deleted and the
command fails with one line naming the file, the expected and the found checksum. A file already in
place and verified is not fetched again; one in place that does not verify is replaced only with
`--force`. Errors are one line each (`DownloadError`); nothing here imports torch or datasets.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from cab.data import (ENV_VAR, FILES, URL_ENV_VAR, DataError, DataFile, check_file, data_dir, data_spec, describe_dir,
                      download_command, sha256_of)

CHUNK = 1 << 16


class DownloadError(DataError):
    """A data file could not be fetched or did not verify. The message is one line."""


class _Broken(Exception):
    """A transfer that broke off and may be resumed."""


@dataclass
class Fetched:
    name: str
    path: Path
    action: str  # present | downloaded
    url: str | None = None
    bytes: int = 0
    tries: int = 0
    resumed_from: int = 0  # bytes already there when the last, successful request began


def file_url(spec: DataFile, base: str | None = None) -> str:
    """Where to fetch `spec` from: the mirror `base` (or $CAB_DATA_URL) if set, else its public original."""
    base = base if base else os.environ.get(URL_ENV_VAR)
    if base:
        return base.rstrip("/") + "/" + urllib.parse.quote(spec.path)
    return spec.url


def _user_agent() -> str:
    from cab import __version__

    return f"cab/{__version__} (+cab data download)"


def _transfer(url: str, part: Path, timeout: float) -> int:
    """One request for `url`, appended to `part` from its current size (HTTP Range). Returns the
    size `part` had when the request began (0: written from the start). Raises _Broken for a
    transfer that may be retried, DownloadError for one that may not."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) or file URLs by design
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after what we hold: the part is the whole file (verify it)
            return have
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Broken(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Broken(f"cannot reach {urllib.parse.urlsplit(url).netloc or url} ({reason})") from None
    with response:
        status = getattr(response, "status", 200)
        start = 0
        if have and status == 206:
            content_range = response.headers.get("Content-Range", "")
            try:
                start = int(content_range.split()[1].split("-")[0])
            except (IndexError, ValueError):
                start = -1
            if start != have:  # not the range we asked for: start again
                part.unlink(missing_ok=True)
                raise _Broken(f"server answered range {content_range!r} to a request from byte {have}")
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        received = 0
        with open(part, "ab" if start else "wb") as f:  # an error writing (no space, no permission) is not retried
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # reset, timeout, incomplete chunked read
                    raise _Broken(f"connection lost after {start + received:,} bytes ({type(exc).__name__})") from None
                if not block:
                    break
                f.write(block)
                received += len(block)
            f.flush()
            os.fsync(f.fileno())
        if length is not None and received < length:
            raise _Broken(f"connection closed after {start + received:,} of {start + length:,} bytes")
        return start


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (POSIX; elsewhere no lock): two downloads into the same
    directory take turns instead of writing one part file together."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(spec: DataFile, target: Path, url: str, retries: int = 3, timeout: float = 60.0, backoff: float = 1.0,
          sleep: Callable[[float], None] = time.sleep) -> Fetched:
    """Download `url` to `target`, resuming and retrying a broken transfer, and keep it only if its
    sha256 is one of `spec.accepted()`. Raises DownloadError (one line)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with _exclusive(target.parent / ".cab-download.lock"):
        tries, last_error = 0, ""
        while True:
            tries += 1
            try:
                resumed_from = _transfer(url, part, timeout)
                break
            except _Broken as exc:
                last_error = str(exc)
                if tries > retries:
                    held = part.stat().st_size if part.exists() else 0
                    kept = f"; {held:,} bytes kept in {part.name}, run the command again to resume" if held else ""
                    raise DownloadError(f"download of {spec.path} from {url} failed after {tries} "
                                        f"{'try' if tries == 1 else 'tries'}: "
                                        f"{last_error}{kept}") from None
                sleep(backoff * 2 ** (tries - 1))
        found = sha256_of(part)
        accepted = spec.accepted()
        if found not in accepted:
            size = part.stat().st_size
            part.unlink(missing_ok=True)
            copies = "".join(f" or {c.sha256} (an accepted copy, {c.size:,} bytes)" for c in spec.copies)
            raise DownloadError(f"{spec.path} downloaded from {url} has sha256 {found} ({size:,} bytes), expected "
                                f"{spec.sha256} (the public original, {spec.size:,} bytes){copies}; not kept")
        os.replace(part, target)
        _fsync_dir(target.parent)
        return Fetched(spec.name, target, "downloaded", url, target.stat().st_size, tries, resumed_from)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def download(names: list[str] | None = None, directory: str | os.PathLike | None = None, base_url: str | None = None,
             force: bool = False, retries: int = 3, timeout: float = 60.0, backoff: float = 1.0,
             report: Callable[[Fetched], None] | None = None) -> list[Fetched]:
    """Fetch the named data sets (all when none are named) into the data directory. A file already
    there and verified is left alone; one there that does not verify is replaced only with `force`."""
    specs = [data_spec(n) for n in dict.fromkeys(names or FILES)]
    done = []
    for spec in specs:
        state, path, found = check_file(spec.name, directory)
        if state == "verified":
            result = Fetched(spec.name, path, "present")
        else:
            if state == "altered" and not force:
                raise DownloadError(f"{path} exists with sha256 {found}, expected {spec.sha256}; "
                                    f"`{download_command(spec.name, directory)} --force` replaces it")
            try:
                result = fetch(spec, path, file_url(spec, base_url), retries=retries, timeout=timeout, backoff=backoff)
            except OSError as exc:  # the data directory: not writable, full, ...
                raise DownloadError(f"cannot write {spec.path} into {path.parent}: {exc.strerror or exc}; "
                                    f"choose another directory with --dir or ${ENV_VAR}") from None
        done.append(result)
        if report:
            report(result)
    return done


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:,} bytes"


def list_lines(directory: str | os.PathLike | None = None) -> list[str]:
    """What `cab data list` prints: every data set, what it is, its size, licence, source, where it
    is and whether it is there and verified."""
    root = data_dir(directory)
    mirror = os.environ.get(URL_ENV_VAR)
    lines = [f"data directory: {root} ({describe_dir(directory)}; --dir or ${ENV_VAR} chooses another)"]
    if mirror:
        lines.append(f"downloads from: {mirror} (${URL_ENV_VAR})")
    for name, spec in FILES.items():
        state, path, found = check_file(name, directory)
        if state == "verified":
            shown = "verified: " + spec.accepted()[found].split(" (")[0]
        elif state == "missing":
            shown = f"missing: {download_command(name, directory)}"
        else:
            shown = f"NOT VERIFIED (sha256 {found}): {download_command(name, directory)} --force"
        lines += [
            "",
            f"{name}  [{shown}]",
            f"  what:    {spec.description}",
            f"  size:    {_size(spec.size)};  licence: {spec.licence}",
            f"  source:  {spec.source}",
            f"  fetched: {file_url(spec)}  (sha256 {spec.sha256})",
            f"  where:   {path}",
        ]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cab data",
                                     description="The real tasks' data sets: list them, download them.")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="each data set: what, size, licence, source, where, present and verified")
    listing.add_argument("--dir", default=None, help=f"data directory (default: ${ENV_VAR}, else the user cache)")
    get = sub.add_parser("download", help="fetch the public originals, verify their sha256, store them")
    get.add_argument("names", nargs="*", metavar="NAME", help=f"data sets (default: all): {', '.join(FILES)}")
    get.add_argument("--dir", default=None, help=f"data directory (default: ${ENV_VAR}, else the user cache)")
    get.add_argument("--url", default=None,
                     help=f"a mirror's base URL, laid out as the data directory (or ${URL_ENV_VAR})")
    get.add_argument("--force", action="store_true", help="replace a file that is there but does not verify")
    get.add_argument("--retries", type=int, default=3, help="retries of a broken transfer, each resuming (default 3)")
    get.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a try fails (default 60)")
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(list_lines(args.dir)))
        return 0

    def report(result: Fetched) -> None:
        if result.action == "present":
            print(f"{result.name}: present and verified at {result.path}")
        else:
            how = f", resumed at byte {result.resumed_from:,}" if result.resumed_from else ""
            tries = f" in {result.tries} tries" if result.tries > 1 else ""
            print(f"{result.name}: downloaded {_size(result.bytes)} from {result.url}{tries}{how}; "
                  f"sha256 verified -> {result.path}", flush=True)

    try:
        download(args.names, args.dir, args.url, args.force, args.retries, args.timeout, report=report)
    except DownloadError as exc:
        print(f"cab: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
