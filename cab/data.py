"""Real data for the real tasks: which files, where they live, checking them, loading them once.

The files are never committed. A task names a data set of `FILES` and a data directory (the config's
`task.data_dir`, whose default is `${oc.env:CAB_DATA_DIR,null}`); this module

  1. resolves the directory: the value given, else the environment variable `CAB_DATA_DIR`, else
     the user cache (`user_cache_dir()`: `$XDG_CACHE_HOME/cab/data`, by default `~/.cache/cab/data`
     on Linux; `~/Library/Caches/cab/data` on macOS; `%LOCALAPPDATA%\\cab\\Cache\\data` on Windows),
     where `cab data download` puts the files;
  2. verifies the file's sha256 against the one pinned here, so every result is known to come from
     the same bytes; a missing or altered file is one line (`DataError`) that says how to get the
     file (`cab data download NAME`);
  3. loads it through the `datasets` library's local loaders (`csv`, `text`), imported only here,
     lazily, so `cab --help` and `cab list` never pay for it;
  4. keeps the parsed arrays in memory, so the jobs of a sweep in one process parse each file once.

The pinned sha256 is that of the public original, fetched from `DataFile.url` (a fixed commit of the
original's repository); `cab.download` fetches and verifies it. `DataFile.copies` names other
byte-exact files that are accepted as well, each with the reason (the project's offline copies of
the ETT files print some numbers with other digits: the same float32 values, and the same inputs
to the model). Nothing is ever edited: a difference between a file and what a task expects is the
loader's business.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cab.registry import ChoiceError

ENV_VAR = "CAB_DATA_DIR"
URL_ENV_VAR = "CAB_DATA_URL"  # a mirror: a web folder laid out as the data directory (cab.download)


class DataError(ChoiceError):
    """A data file is missing or not the pinned one. The message is one line."""


@dataclass(frozen=True)
class Copy:
    """Another byte-exact file accepted for a data set, and why."""

    sha256: str
    size: int
    what: str


@dataclass(frozen=True)
class DataFile:
    name: str
    path: str  # relative to the data directory (and to a mirror's base URL)
    sha256: str  # of the public original's bytes, as served at `url`
    size: int  # bytes of the public original
    url: str  # the public original at a fixed commit: what `cab data download` fetches
    source: str  # the project that publishes it
    licence: str
    description: str
    copies: tuple[Copy, ...] = ()

    def accepted(self) -> dict[str, str]:
        """sha256 -> which bytes they are: the public original and every accepted copy."""
        return {self.sha256: "the public original", **{c.sha256: c.what for c in self.copies}}


# The ETT files: the public originals (ETDataset, commit 11ab373, the only version of ETT-small/ETTh*.csv
# there has ever been) and the project's offline copies in ../shared/data have the same header
# (date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT), dates and 17,420 rows, but 4.0% of ETTh1's values (4,829 of
# 121,940) and 1.4% of ETTh2's (1,763) are printed with other digits and parse to float64 values one
# ulp apart; all are equal as float32. The lstf loader's standardised float32 series, and a smoke
# run's metrics, are identical bit for bit from either file (checked when the copies were pinned), so
# both are accepted. The public checksums were computed from the originals' git blobs (a52c4925...,
# 6e376077...) and agree with the MD5s other loaders pin for the same files
# (8381763947c85f4be6ac456c508460d6, 51a229a3fc13579dd939364fefe9c7ab).
_ETT_COPY = ("the project's offline copy (../shared/data): the public file's header, dates and rows, some numbers "
             "printed with other digits (one float64 ulp apart, the same float32)")
_ETT_COMMIT = "11ab373cf9c9f5be7698e219a5a170e1b1c8a930"
_CHAR_RNN_COMMIT = "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e"

FILES: dict[str, DataFile] = {
    "ETTh1": DataFile(
        "ETTh1",
        "ett/ETTh1.csv",
        "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
        2_589_657,
        f"https://raw.githubusercontent.com/zhouhaoyi/ETDataset/{_ETT_COMMIT}/ETT-small/ETTh1.csv",
        "https://github.com/zhouhaoyi/ETDataset",
        "CC BY-ND 4.0",
        "Electricity Transformer Temperature, hourly, station 1 (Zhou et al., Informer, AAAI 2021), 17,420 rows",
        (Copy("4c242ce623043ab7fc8e747329e31c3bae8f54275b4f9ea76c4486cda4319a6b", 2_590_344, _ETT_COPY),),
    ),
    "ETTh2": DataFile(
        "ETTh2",
        "ett/ETTh2.csv",
        "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
        2_417_960,
        f"https://raw.githubusercontent.com/zhouhaoyi/ETDataset/{_ETT_COMMIT}/ETT-small/ETTh2.csv",
        "https://github.com/zhouhaoyi/ETDataset",
        "CC BY-ND 4.0",
        "Electricity Transformer Temperature, hourly, station 2 (Zhou et al., Informer, AAAI 2021), 17,420 rows",
        (Copy("cb7a30354c86fe69f5e9e4e133218daac6121312538990f127f6ae1ca6a068ae", 2_418_265, _ETT_COPY),),
    ),
    # the same bytes in the public original and the offline copy
    "tinyshakespeare": DataFile(
        "tinyshakespeare",
        "tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        1_115_394,
        f"https://raw.githubusercontent.com/karpathy/char-rnn/{_CHAR_RNN_COMMIT}/data/tinyshakespeare/input.txt",
        "https://github.com/karpathy/char-rnn",
        "MIT (char-rnn); the text is Shakespeare's, public domain",
        "Tiny Shakespeare (Karpathy, char-rnn), 1,115,394 characters",
    ),
}


def user_cache_dir() -> Path:
    """Where `cab data download` puts the files by default: the platform's per-user cache."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "cab" / "Cache" / "data"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "cab" / "data"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: a relative value is ignored
    return base / "cab" / "data"


def data_dir(value: str | os.PathLike | None = None) -> Path:
    """The data directory: `value` if given, else $CAB_DATA_DIR, else the user cache."""
    chosen = value if value not in (None, "") else os.environ.get(ENV_VAR) or user_cache_dir()
    return Path(chosen).expanduser()


def _given(value: str | os.PathLike | None) -> bool:
    """A directory named explicitly, not by $CAB_DATA_DIR (which the config's default resolves to)."""
    return value not in (None, "") and str(value) != os.environ.get(ENV_VAR)


def describe_dir(value: str | os.PathLike | None = None) -> str:
    """Which rule chose the data directory, for messages."""
    if _given(value):
        return "given"
    if os.environ.get(ENV_VAR):
        return f"${ENV_VAR}"
    return "the user cache"


def download_command(name: str, directory: str | os.PathLike | None = None) -> str:
    """The command that fetches data set `name` into the directory `directory` resolves to."""
    return f"cab data download {name}" + (f" --dir {directory}" if _given(directory) else "")


def data_spec(name: str) -> DataFile:
    if name not in FILES:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(FILES)}")
    return FILES[name]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# (resolved path, size, mtime_ns) -> sha256: hash each file once per process
_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process for a given (path, size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_of(path)
    return _HASHES[key]


def check_file(name: str, directory: str | os.PathLike | None = None) -> tuple[str, Path, str | None]:
    """(state, path, sha256) of data set `name` under the data directory, without raising:
    state is `verified` (the sha256 is the public original's or an accepted copy's), `missing`,
    or `altered` (any other bytes)."""
    spec = data_spec(name)
    path = data_dir(directory) / spec.path
    if not path.is_file():
        return "missing", path, None
    found = file_sha256(path)
    return ("verified" if found in spec.accepted() else "altered"), path, found


def verified_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    """The path of data set `name` under the data directory, after checking its sha256."""
    spec = data_spec(name)
    state, path, found = check_file(name, directory)
    if state == "missing":
        raise DataError(
            f"data file {spec.path} not found in {data_dir(directory)} ({describe_dir(directory)}): get it with "
            f"`{download_command(name, directory)}`, or set {ENV_VAR} (or task.data_dir) to a folder that holds "
            f"{spec.path}")
    if state == "altered":
        raise DataError(
            f"data file {spec.path} at {path} has sha256 {found}, expected {spec.sha256} (the public original, "
            f"{spec.source}): it is not the pinned file; replace it with `{download_command(name, directory)} --force`")
    return path


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _source(name: str, directory: str | None, url: str | None, sha256: str | None) -> tuple[str, str]:
    """(the file or URL to hand to `datasets`, the sha256 of its bytes), checked: a local file against
    the pinned checksums; a `task.data_url` against `task.data_sha256` if given, else the pinned ones."""
    if not url:
        path = verified_path(name, directory)
        return str(path), file_sha256(path)
    datasets = _quiet_datasets()
    local = Path(datasets.DownloadManager().download(url))  # downloaded once, into datasets' cache
    got = file_sha256(local)
    accepted = {sha256: "task.data_sha256"} if sha256 else data_spec(name).accepted()
    if got not in accepted:
        raise DataError(f"data file downloaded from {url} has sha256 {got}, expected {' or '.join(accepted)}"
                        + ("" if sha256 else " (pinned for " + name + "; give task.data_sha256 to read other bytes)"))
    return str(local), got


# (kind, sha256 of the bytes) -> parsed content: each distinct file is parsed once per process
_CACHE: dict[tuple[str, str], Any] = {}


def load_csv_columns(name: str, directory: str | None = None, url: str | None = None,
                     sha256: str | None = None) -> dict[str, list]:
    """All columns of a CSV data file as {column: list}, via `datasets`' csv loader (cached)."""
    source, digest = _source(name, directory, url, sha256)
    key = ("csv", digest)
    if key not in _CACHE:
        datasets = _quiet_datasets()
        table = datasets.load_dataset("csv", data_files=source, split="train")
        _CACHE[key] = table.to_dict()
    return _CACHE[key]


def load_text(name: str, directory: str | None = None, url: str | None = None, sha256: str | None = None) -> str:
    """A text data file as one string, byte-exact, via `datasets`' text loader (cached)."""
    source, digest = _source(name, directory, url, sha256)
    key = ("text", digest)
    if key not in _CACHE:
        datasets = _quiet_datasets()
        # sample_by="document": the whole file is one row, newlines kept (line mode drops them)
        table = datasets.load_dataset("text", data_files=source, split="train", sample_by="document")
        _CACHE[key] = "".join(table["text"])
    return _CACHE[key]


def clear_cache() -> None:
    """Forget parsed files and checksums (tests)."""
    _CACHE.clear()
    _HASHES.clear()
