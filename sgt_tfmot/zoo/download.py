"""Downloads of zoo files: streamed to a temporary file, checked, then renamed into place.

`download(url, destination, sha256=..., size_bytes=...)` reads `url` in blocks into
`.NAME.XXXX.partial` beside `destination` (the naming rule of `sgt_tfmot._files`), hashing as
it goes. Only a file of exactly the expected size and sha256 is renamed to `destination`;
any failure (no network, an HTTP error, a transfer that ends early, a wrong hash, Ctrl-C)
removes the temporary file, so the cache never holds half a file under a real name.
`DownloadError` carries one line that says what went wrong.

While a file arrives, a progress bar on stderr shows its share (redrawn in place on a
terminal; one line per file otherwise).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

from sgt_tfmot._files import PARTIAL_SUFFIX

__all__ = ["DownloadError", "ProgressBar", "download"]

BLOCK = 1 << 16
TIMEOUT_SECONDS = 30
STALE_PARTIAL_SECONDS = 600  # a .partial untouched this long belongs to a killed download


class DownloadError(OSError):
    """A download that did not give the expected file; the message is one line."""


class ProgressBar:
    """`label [#####.....]  45%  0.6/1.3 MB` on `stream`, redrawn in place on a terminal.

    On a stream that is not a terminal (a log file, CI) it writes one line per download
    instead of a line per block.
    """

    WIDTH = 24

    def __init__(self, label: str, total: int, stream: TextIO | None = None):
        self.label = label
        self.total = max(int(total), 1)
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = -1
        if not self.live:
            self._write(f"downloading {label} ({_size(total)})\n")

    def update(self, done: int) -> None:
        if not self.live:
            return
        percent = min(100, done * 100 // self.total)
        if percent == self._shown:
            return
        self._shown = percent
        filled = self.WIDTH * percent // 100
        bar = "#" * filled + "." * (self.WIDTH - filled)
        amounts = f"{_megabytes(done)}/{_megabytes(self.total)} MB"
        self._write(f"\r{self.label} [{bar}] {percent:3d}%  {amounts}")

    def close(self) -> None:
        if self.live and self._shown >= 0:
            self._write("\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f}"


def _size(count: int) -> str:
    if count >= 100_000:
        return f"{_megabytes(count)} MB"
    return f"{count / 1e3:.1f} kB" if count >= 1_000 else f"{count} bytes"


def download(
    url: str,
    destination: Path,
    *,
    sha256: str,
    size_bytes: int,
    label: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Fetches `url` into `destination`, atomically, and only if it has the given hash.

    Args:
      url: An http(s) or file URL.
      destination: The final path; its directory is created.
      sha256: The expected hex digest of the whole file.
      size_bytes: The expected size.
      label: What the progress bar calls the file (default: its name).
      stream: Where the progress bar goes (default: stderr).

    Raises:
      DownloadError: one line: the URL could not be read, the transfer ended early or ran
        long, or the content's sha256 differs. Nothing is left at `destination`.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(destination)
    handle, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=PARTIAL_SUFFIX
    )
    try:
        with os.fdopen(handle, "wb") as file:
            digest, received = _stream(url, file, size_bytes, label or destination.name, stream)
        if received != size_bytes:
            raise DownloadError(
                f"{url}: the transfer ended after {received:,} of {size_bytes:,} bytes"
            )
        if digest != sha256:
            raise DownloadError(f"{url}: sha256 {digest}, the manifest says {sha256}")
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _stream(url: str, file, size_bytes: int, label: str, stream) -> tuple[str, int]:
    """Copies the body of `url` into `file`; (sha256, bytes received), at most size + 1."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            bar = ProgressBar(label, size_bytes, stream)
            try:
                while received <= size_bytes:
                    block = response.read(min(BLOCK, size_bytes + 1 - received))
                    if not block:
                        break
                    file.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(received)
            finally:
                bar.close()
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise DownloadError(f"{url}: {_reason(error.reason)}") from None
    except (OSError, ValueError, http.client.HTTPException) as error:  # timeouts, resets, bad URLs
        raise DownloadError(f"{url}: {_reason(error)}") from None
    if received > size_bytes:
        raise DownloadError(f"{url}: longer than the manifest's {size_bytes:,} bytes")
    return digest.hexdigest(), received


def _reason(error) -> str:
    if isinstance(error, BaseException):
        if isinstance(error, http.client.IncompleteRead):
            return "the connection closed before the end of the file"
        return (str(error).strip() or type(error).__name__).splitlines()[0]
    return str(error)


def _remove_stale_partials(destination: Path) -> None:
    """Removes what a killed download of `destination` left (never a live download's file)."""
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    for leftover in destination.parent.glob(f".{destination.name}.*{PARTIAL_SUFFIX}"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            pass  # another process removed or replaced it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
