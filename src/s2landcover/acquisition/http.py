"""Robust HTTP downloads: retries with back-off, resume of partial files, verification, atomic
rename.

Only the standard library (``urllib``) is used, so the behaviour on a broken connection is
explicit: every byte received is appended to ``<dest>.part`` at once, and the next attempt asks the
server for the rest with an HTTP ``Range`` request. Nothing is written to ``dest`` until the whole
file is there and its size (and checksum, where one is known) is right, so an interrupted or
corrupt download never leaves a file that looks complete.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from s2landcover.errors import AcquisitionError, InputError
from s2landcover.io.atomic import NoSpaceError, no_space_error, require_free_space
from s2landcover.io.documents import write_json

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # bytes read from the socket per write (bounds memory)
MAX_BACKOFF_S = 60.0
USER_AGENT = "s2-landcover (+https://github.com/; STAC downloader)"

# Multihash codes (https://github.com/multiformats/multicodec) used by the STAC file extension.
_MULTIHASH_ALGORITHMS = {0x11: "sha1", 0x12: "sha256", 0x13: "sha512", 0xD5: "md5"}
_MULTIHASH_ALGORITHMS_BLAKE = {0xB220: "blake2b"}  # 2-byte varint 0xb220 -> blake2b-256


class DownloadError(AcquisitionError):
    """A download that cannot be completed or whose file is corrupt; the message names the URL."""


class _TransientError(Exception):
    """An error worth retrying (connection reset, timeout, 5xx, 429, short read)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def parse_multihash(checksum: str) -> tuple[str, bytes]:
    """Split a STAC ``file:checksum`` (hex multihash, e.g. ``"1220" + sha256 hex``) into
    (hashlib algorithm name, digest bytes). Raises :class:`InputError` for an unknown code."""
    try:
        raw = bytes.fromhex(checksum.strip())
    except ValueError:
        raise InputError(f"checksum {checksum!r} is not a hexadecimal multihash") from None
    code, pos = _read_varint(raw, 0)
    length, pos = _read_varint(raw, pos)
    algorithm = _MULTIHASH_ALGORITHMS.get(code) or _MULTIHASH_ALGORITHMS_BLAKE.get(code)
    if algorithm is None:
        raise InputError(
            f"checksum {checksum!r}: multihash code 0x{code:x} is not supported "
            f"(expected sha1 0x11, sha256 0x12, sha512 0x13, md5 0xd5 or blake2b-256 0xb220)"
        )
    digest = raw[pos:]
    if len(digest) != length:
        raise InputError(
            f"checksum {checksum!r}: digest has {len(digest)} bytes, header says {length}"
        )
    return algorithm, digest


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(raw):
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise InputError(f"checksum {raw.hex()!r} is not a valid multihash (truncated varint)")


def _new_hash(algorithm: str) -> hashlib._Hash | hashlib.blake2b:
    if algorithm == "blake2b":
        return hashlib.blake2b(digest_size=32)
    return hashlib.new(algorithm)


def file_digest(path: Path, algorithm: str) -> bytes:
    """Digest of a file, read in 1 MiB chunks."""
    digest = _new_hash(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest()


def download_file(
    url: str,
    dest: str | Path,
    expected_size: int | None = None,
    checksum: str | None = None,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest`` robustly and return ``dest``.

    - Retries: connection errors, timeouts (``timeout_s`` per socket operation), short reads,
      HTTP 5xx, 408 and 429 are retried up to ``retries`` times in a row, waiting
      ``backoff * 2**(n-1)`` seconds before retry n (capped at 60 s; ``Retry-After`` is honoured).
      An attempt that received bytes resets the count: a link that makes progress is not given up
      on. Other 4xx answers (404, 403...) fail at once.
    - Resume: bytes go to ``<dest>.part`` as they arrive; the next attempt (in this call or a later
      run) asks for the rest with ``Range: bytes=<size>-`` and ``If-Range: <ETag>`` (the ETag is
      kept in ``<dest>.part.json``). A server that answers 200 instead of 206 (it ignores ranges, or
      the file changed) restarts the file from its first byte.
    - Verification: the size must equal ``expected_size`` (e.g. STAC ``file:size``) and the length
      the server announced; ``checksum`` (STAC ``file:checksum``, a hex multihash such as
      ``"1220<sha256 hex>"``) must match. A resumed file that fails the checksum is fetched again
      from scratch once; any other mismatch removes the partial file and raises
      :class:`DownloadError`.
    - Atomic: ``<dest>.part`` is renamed to ``dest`` only after verification.

    Memory: one 1 MiB chunk at a time.
    """
    _require_http(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    state_path = dest.with_name(dest.name + ".part.json")
    expected_digest = parse_multihash(checksum) if checksum else None
    restarted_for_checksum = False
    while True:
        resumed = _fetch_with_retries(url, part, state_path, retries, timeout_s, backoff)
        size = part.stat().st_size
        if expected_size is not None and size != expected_size:
            _discard(part, state_path)
            raise DownloadError(
                f"download of {url} is corrupt: received {size} bytes, the catalogue says "
                f"{expected_size} bytes (file:size); nothing was kept"
            )
        if expected_digest is not None:
            algorithm, digest = expected_digest
            found = file_digest(part, algorithm)
            if found != digest:
                _discard(part, state_path)
                if resumed and not restarted_for_checksum:
                    log.warning(
                        "%s: checksum mismatch after resume; fetching again from scratch", url
                    )
                    restarted_for_checksum = True
                    continue
                raise DownloadError(
                    f"download of {url} is corrupt: {algorithm} is {found.hex()}, "
                    f"the catalogue says {digest.hex()} (file:checksum {checksum}); "
                    "nothing was kept"
                )
        break
    os.replace(part, dest)
    state_path.unlink(missing_ok=True)
    return dest


def _require_http(url: str) -> None:
    """urllib also opens ``file://`` and ``ftp://`` URLs: only HTTP(S) is downloaded here."""
    if not url.lower().startswith(("http://", "https://")):
        raise InputError(f"{url!r} is not an http:// or https:// URL; nothing was downloaded")


def _discard(part: Path, state_path: Path) -> None:
    part.unlink(missing_ok=True)
    state_path.unlink(missing_ok=True)


def _fetch_with_retries(
    url: str, part: Path, state_path: Path, retries: int, timeout_s: float, backoff: float
) -> bool:
    """Fill ``part`` with the whole body of ``url``; True when bytes came from a resumed range."""
    failures = 0
    resumed_any = False
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            resumed_any |= _fetch_once(url, part, state_path, timeout_s)
            return resumed_any
        except _TransientError as error:
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > retries:
                raise DownloadError(
                    f"download of {url} failed after {retries} retries: {error} "
                    f"({after} bytes kept in {part} for a later resume)"
                ) from None
            delay = min(MAX_BACKOFF_S, backoff * 2 ** max(failures - 1, 0))
            if error.retry_after_s is not None:
                delay = min(MAX_BACKOFF_S, max(delay, error.retry_after_s))
            log.warning("%s: %s; retry in %.1f s (%d bytes so far)", url, error, delay, after)
            time.sleep(delay)


def _fetch_once(url: str, part: Path, state_path: Path, timeout_s: float) -> bool:
    """One HTTP request that appends to ``part``; raises _TransientError on retryable failures."""
    offset = part.stat().st_size if part.exists() else 0
    state = _read_state(state_path)
    if offset and state.get("url") not in (None, url):
        offset = 0  # a partial file of another URL: start over
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = state.get("etag") or state.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            total = _total_from_content_range(error.headers.get("Content-Range", ""))
            if total == offset:
                return True  # the partial file was already complete
            part.unlink(missing_ok=True)  # stale partial file: start over
            raise _TransientError(f"HTTP 416 for a resume at byte {offset}") from None
        if error.code >= 500 or error.code in (408, 429):
            raise _TransientError(
                f"HTTP {error.code} {error.reason}", _retry_after(error.headers.get("Retry-After"))
            ) from None
        raise DownloadError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise _TransientError(f"connection error: {reason}") from None

    with response:
        if response.status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                raise _TransientError(
                    f"server answered a range from byte {start} to a request from byte {offset}"
                )
            mode, resumed = "ab", True
            announced = response.headers.get("Content-Range", "")
            total = _total_from_content_range(announced)
        else:  # 200: the whole file (the server ignored Range, or the file changed)
            if offset:
                log.warning("%s: server ignored the range request; restarting from byte 0", url)
            mode, resumed, offset = "wb", False, 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None:  # a full device: refused before any byte, partial file removed
            try:
                require_free_space(part.parent, total - offset)
            except NoSpaceError:
                _discard(part, state_path)
                raise
        _write_state(state_path, url, response.headers)
        received = offset
        try:
            with open(part, mode) as stream:
                while chunk := response.read(CHUNK_BYTES):
                    stream.write(chunk)
                    received += len(chunk)
        except (OSError, http.client.HTTPException) as error:
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                full = no_space_error(part.parent, (total or received) - offset)
                _discard(part, state_path)  # the partial file would keep the device full
                raise full from None
            raise _TransientError(f"connection lost at byte {received}: {error!r}") from None
    if total is not None and received < total:
        raise _TransientError(f"connection closed at byte {received} of {total}")
    if total is not None and received > total:
        part.unlink(missing_ok=True)
        raise _TransientError(f"server sent {received} bytes, more than the {total} it announced")
    return resumed


def _read_state(state_path: Path) -> dict:
    try:
        return json.loads(state_path.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(state_path: Path, url: str, headers: http.client.HTTPMessage) -> None:
    state = {"url": url, "etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}
    write_json(state, state_path)


def _start_from_content_range(value: str) -> int | None:
    match = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value.strip())
    return int(match.group(1)) if match else None


def _total_from_content_range(value: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", value.strip())
    return int(match.group(1)) if match else None


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def url_exists(url: str, timeout_s: float = 60.0, retries: int = 3, backoff: float = 1.0) -> bool:
    """True when a HEAD request for ``url`` succeeds, False on 404 (retrying 5xx and timeouts)."""
    _require_http(url)
    failures = 0
    while True:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                return True
        except urllib.error.HTTPError as error:
            error.close()
            if error.code in (403, 404):  # S3 answers 403 for a missing key without list rights
                return False
            if error.code < 500 and error.code not in (408, 429):
                raise DownloadError(
                    f"HEAD {url} failed: HTTP {error.code} {error.reason}"
                ) from None
            reason = f"HTTP {error.code}"
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = str(getattr(error, "reason", error))
        failures += 1
        if failures > retries:
            raise DownloadError(f"HEAD {url} failed after {retries} retries: {reason}")
        time.sleep(min(MAX_BACKOFF_S, backoff * 2 ** (failures - 1)))
