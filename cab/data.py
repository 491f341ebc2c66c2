"""Real data for the real tasks: where it lives, checking it, loading it once per process.

The files are never committed. A task names a file of `FILES` and a data directory (the config's
`task.data_dir`, whose default is `${oc.env:CAB_DATA_DIR,data}`); this module

  1. resolves the directory: the value given, else the environment variable `CAB_DATA_DIR`, else
     `data/` under the working directory;
  2. verifies the file's sha256 against the one pinned here, so every result is known to come from
     the same bytes; a missing or altered file is one line (`DataError`) that names the file, the
     expected checksum and where the public original lives;
  3. loads it through the `datasets` library's local loaders (`csv`, `text`), imported only here,
     lazily, so `cab --help` and `cab list` never pay for it;
  4. keeps the parsed arrays in memory, so the jobs of a sweep in one process parse each file once.

Users with a network can read the public original instead: set `task.data_url` to its address (see
docs/tasks-real.md). `datasets` downloads and caches it; the pinned checksum is then not checked
unless `task.data_sha256` is given (the public ETT files spell their header differently).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cab.registry import ChoiceError

ENV_VAR = "CAB_DATA_DIR"


class DataError(ChoiceError):
    """A data file is missing or not the pinned one. The message is one line."""


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data directory
    sha256: str
    source: str  # where the public original lives
    description: str


FILES: dict[str, DataFile] = {
    "ETTh1": DataFile(
        "ett/ETTh1.csv",
        "4c242ce623043ab7fc8e747329e31c3bae8f54275b4f9ea76c4486cda4319a6b",
        "https://github.com/zhouhaoyi/ETDataset/blob/main/ETT-small/ETTh1.csv",
        "Electricity Transformer Temperature, hourly, station 1 (Zhou et al., Informer, AAAI 2021)",
    ),
    "ETTh2": DataFile(
        "ett/ETTh2.csv",
        "cb7a30354c86fe69f5e9e4e133218daac6121312538990f127f6ae1ca6a068ae",
        "https://github.com/zhouhaoyi/ETDataset/blob/main/ETT-small/ETTh2.csv",
        "Electricity Transformer Temperature, hourly, station 2 (Zhou et al., Informer, AAAI 2021)",
    ),
    "tinyshakespeare": DataFile(
        "tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "Tiny Shakespeare (Karpathy, char-rnn), 1,115,394 characters",
    ),
}


def data_dir(value: str | os.PathLike | None = None) -> Path:
    """The data directory: `value` if given, else $CAB_DATA_DIR, else ./data."""
    chosen = value if value not in (None, "") else os.environ.get(ENV_VAR) or "data"
    return Path(chosen).expanduser()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# (resolved path, size, mtime_ns) -> sha256: hash each file once per process
_HASHES: dict[tuple[str, int, int], str] = {}


def verified_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    """The path of data file `name` under the data directory, after checking its sha256."""
    if name not in FILES:
        raise DataError(f"unknown data file {name!r}; known: {', '.join(sorted(FILES))}")
    spec = FILES[name]
    path = data_dir(directory) / spec.path
    where = f"set task.data_dir or ${ENV_VAR} to the folder that holds {spec.path}, or get the public original from {spec.source}"
    if not path.is_file():
        raise DataError(f"data file {spec.path} not found at {path} (expected sha256 {spec.sha256}); {where}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_of(path)
    if _HASHES[key] != spec.sha256:
        raise DataError(
            f"data file {spec.path} at {path} has sha256 {_HASHES[key]}, expected {spec.sha256}; "
            f"it is not the pinned file: restore it from {spec.source}"
        )
    return path


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _source(name: str, directory: str | None, url: str | None, sha256: str | None) -> str:
    """The file or URL to hand to `datasets`, checked where a checksum applies."""
    if url:
        if sha256:  # a checksum for the remote file: download it once and check the bytes
            datasets = _quiet_datasets()
            local = Path(datasets.DownloadManager().download(url))
            got = sha256_of(local)
            if got != sha256:
                raise DataError(f"data file downloaded from {url} has sha256 {got}, expected {sha256}")
        return url
    return str(verified_path(name, directory))


# (kind, source) -> parsed content; the per-process cache of the brief
_CACHE: dict[tuple[str, str], Any] = {}


def load_csv_columns(name: str, directory: str | None = None, url: str | None = None,
                     sha256: str | None = None) -> dict[str, list]:
    """All columns of a CSV data file as {column: list}, via `datasets`' csv loader (cached)."""
    source = _source(name, directory, url, sha256)
    key = ("csv", source)
    if key not in _CACHE:
        datasets = _quiet_datasets()
        table = datasets.load_dataset("csv", data_files=source, split="train")
        _CACHE[key] = table.to_dict()
    return _CACHE[key]


def load_text(name: str, directory: str | None = None, url: str | None = None, sha256: str | None = None) -> str:
    """A text data file as one string, byte-exact, via `datasets`' text loader (cached)."""
    source = _source(name, directory, url, sha256)
    key = ("text", source)
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
