"""URL -> file in the cache directory: OpenAI's released GPT-2 files and the evaluation sets, fetched with
requests + tqdm.

Robust on bad networks: the HTTP status is checked (an error page is never saved as a model), connection
errors and 5xx answers are retried with backoff, a partial file is resumed with a Range request, the size is
verified against Content-Length, and a file only gets its final name (atomically) once complete. A complete
file is never downloaded, deleted or overwritten again.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

import requests
from tqdm import tqdm

from .config import canonical_name

OPENAI_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2"
# the seven files of each released model, as in OpenAI's download_model.py
MODEL_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
VOCAB_FILES = ("encoder.json", "vocab.bpe")  # the same in every size
RETRIES = 4  # attempts after the first, on connection errors, 5xx answers and short bodies
BACKOFF_SECONDS = 0.5  # wait before retry k: BACKOFF_SECONDS * 2**(k-1), 7.5 s in all: offline fails fast


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message names the URL and how to place the file by hand. `url` is
    the file's address and `reason` what went wrong, in a few words."""

    def __init__(self, message: str, url: str = "", reason: str = ""):
        super().__init__(message)
        self.url, self.reason = url, reason


def base_url() -> str:
    """Where the models are served: $MINIGPT2_BASE_URL, else OpenAI's public bucket."""
    return os.environ.get("MINIGPT2_BASE_URL", OPENAI_BASE_URL).rstrip("/")


def cache_dir() -> Path:
    """$MINIGPT2_HOME, else $XDG_CACHE_HOME/minigpt2, else ~/.cache/minigpt2."""
    if os.environ.get("MINIGPT2_HOME"):
        return Path(os.environ["MINIGPT2_HOME"]).expanduser()  # "~/models" as a shell would expand it
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "minigpt2"
    return Path.home() / ".cache" / "minigpt2"


def openai_dir(name: str) -> Path:
    """Cache directory for one model's original files: {cache}/models/{name}/ (as in OpenAI's URLs)."""
    return cache_dir() / "models" / canonical_name(name)


def download_openai_files(name: str, files: tuple[str, ...] = MODEL_FILES, progress: bool = True) -> Path:
    """Fetch OpenAI's files of model `name` ("124M", "gpt2-xl", ...) into the cache; return their directory.

    Files already complete in the cache are not fetched again (a second call makes no request).
    """
    name = canonical_name(name)
    dest = openai_dir(name)
    todo = [f for f in files if not (dest / f).is_file()]
    if todo:
        with requests.Session() as session:
            for f in todo:
                download_file(f"{base_url()}/models/{name}/{f}", dest / f, session=session, progress=progress)
    return dest


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    session: requests.Session | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, resuming `dest.part` if an earlier attempt left one. Returns `dest`."""
    dest = Path(dest)
    if dest.is_file():
        return dest  # complete earlier download: never touched again
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(dest.name + ".lock")):  # another process fetching it: wait for it
        if dest.is_file():
            return dest  # it finished while we waited
        return _download(url, dest, session, retries, backoff, timeout, progress)


@contextmanager
def file_lock(path: Path):
    """Hold an exclusive lock on `path` (created if needed) for the block: one process at a time.

    subtle: the lock file stays in place after use; removing it could let a waiter and a newcomer hold
    locks on two different files at once.
    """
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        else:  # Windows: lock the first byte, retrying while another process holds it
            while True:
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(0.1)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            else:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


def _download(url: str, dest: Path, session: requests.Session | None, retries: int | None, backoff: float | None,
              timeout: float, progress: bool) -> Path:
    """download_file's work, under the file's lock."""
    retries = RETRIES if retries is None else retries
    backoff = BACKOFF_SECONDS if backoff is None else backoff
    part = dest.with_name(dest.name + ".part")
    session = session or requests.Session()
    last_error, reason = "unknown error", ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            if _fetch_into(session, url, part, timeout, progress):
                os.replace(part, dest)  # atomic: the final name only ever holds a complete file
                return dest
            last_error = reason = "the connection ended before all bytes arrived"
        except _Retryable as e:
            last_error = reason = str(e)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            last_error = f"{type(e).__name__}: {e}"
            reason = type(e).__name__
    raise DownloadError(
        f"could not download {url} after {retries + 1} attempts ({last_error}); "
        f"without network, fetch that URL elsewhere and place the file at {dest} "
        f"(a partial download, if any, is kept at {part} and resumes next time).",
        url=url, reason=reason or last_error,
    )


class _Retryable(Exception):
    """A server answer worth retrying (5xx)."""


def _fetch_into(session: requests.Session, url: str, part: Path, timeout: float, progress: bool) -> bool:
    """One attempt: append the rest of `url` to `part`. True when `part` is now complete."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and have:  # nothing left to send: the part may already be whole
            total = _total_from_content_range(r.headers.get("Content-Range", ""))
            if total == have:
                return True
            part.unlink()  # the part does not match the file on the server: start over
            return False
        if r.status_code >= 500:
            raise _Retryable(f"HTTP {r.status_code} {r.reason}")
        if r.status_code not in (200, 206):
            raise DownloadError(
                f"{url} answered HTTP {r.status_code} {r.reason}; nothing was saved. "
                "Check the model name, or $MINIGPT2_BASE_URL if you set it.",
                url=url, reason=f"HTTP {r.status_code} {r.reason}",
            )
        if r.status_code == 200:  # full body (the server ignored or was not asked for a range)
            have, total = 0, _int_or_none(r.headers.get("Content-Length"))
        else:
            total = _total_from_content_range(r.headers.get("Content-Range", ""))
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name[: -len(".part")], disable=not progress, file=sys.stderr, leave=False)
        with open(part, "ab" if have else "wb") as f, bar:
            for block in r.iter_content(chunk_size=1 << 18):
                f.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is None:
        return True  # no announced size to check against (never the case for OpenAI's bucket)
    if size > total:
        part.unlink()
        return False
    return size == total


def _int_or_none(s: str | None) -> int | None:
    return int(s) if s and s.isdigit() else None


def _total_from_content_range(value: str) -> int | None:
    """ "bytes 100-199/1000" or "bytes */1000" -> 1000."""
    total = value.rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def download_checked(url: str, dest: str | os.PathLike, sha256: str, *, progress: bool = True) -> Path:
    """Download `url` to `dest` unless it is there, and give it that name only once its sha256 is `sha256`.

    For data files checked against a published hash (the evaluation sets): the bytes arrive as download_file
    fetches them, under a temporary name; on any failure (the network, an error page, a checksum that does not
    match) nothing is left in the cache, and the DownloadError names the URL.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    unchecked = dest.with_name(dest.name + ".unchecked")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file():
            return dest  # another process finished it while we waited
        try:
            try:
                _download(url, unchecked, None, None, None, 30.0, progress)  # under dest's lock already
            except DownloadError as e:
                raise DownloadError(f"could not download {url} ({e.reason}); without network, fetch it elsewhere and "
                                    f"place it at {dest} (sha256 {sha256})", url=url, reason=e.reason) from None
            digest = file_sha256(unchecked)
            if digest != sha256:
                raise DownloadError(f"{url} sent a file whose sha256 is {digest}, not the published {sha256}; it was "
                                    f"not kept (a changed or damaged copy; place the right file at {dest})", url=url,
                                    reason="checksum mismatch")
            os.replace(unchecked, dest)
        finally:
            for leftover in (unchecked, unchecked.with_name(unchecked.name + ".part")):
                leftover.unlink(missing_ok=True)
    return dest


def file_sha256(path: Path) -> str:
    """The file's SHA-256 as 64 hex digits, read a megabyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unavailable_message(name: str, error: DownloadError) -> str:
    """One line for a released model that is neither in the cache nor downloadable: what failed, and the three
    ways to get it (online, a mirror in $MINIGPT2_BASE_URL, or its seven files placed by hand)."""
    name = canonical_name(name)
    failed = f"{error.url}: {error.reason}" if error.url else str(error).splitlines()[0]
    return (f"GPT-2 {name} is not in the cache and could not be downloaded ({failed}); to get it, run once with "
            f"network, or set MINIGPT2_BASE_URL to a mirror of {OPENAI_BASE_URL}, or place its seven files "
            f"({', '.join(MODEL_FILES)}) in {openai_dir(name)}")
