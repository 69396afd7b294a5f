"""Receiving an upload: a multipart/form-data body streamed straight into one file, within a size limit.

The body is never held in memory, and it is written once: into a hidden file on the inbox's own
filesystem, from which the claim takes it with one rename, like any inbox file. When the limit is
passed, writing stops but the rest of the body is still read (up to `DRAIN_LIMIT`): an HTTP client
that is still sending would otherwise see a broken connection instead of the 413 that explains it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from anyio.to_thread import run_sync
from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELD = "file"
MAX_FIELD_BYTES = 1024  # small form fields (profile); anything longer is cut
DRAIN_LIMIT = 1 << 30  # bytes read past the limit before the connection is simply dropped
WRITE_BYTES = 1 << 20  # parsed bytes handed to a worker thread per write


class UploadError(Exception):
    """The request is not an upload we can take; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Received:
    filename: str | None = None  # the client's name for the file, when it sent one
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    too_large: bool = False
    digest: Any = field(default_factory=hashlib.sha256)  # of the bytes written, as they are written

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    @property
    def has_file(self) -> bool:
        return self.filename is not None


def boundary_of(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(415, "send the file as multipart/form-data with the field 'file' (curl -F file=@doc.pdf)")
    return params[b"boundary"]


class _PartWriter:
    """python-multipart callbacks: the `file` part's bytes collect in `pending`, small fields are kept."""

    def __init__(self, limit: int, received: Received) -> None:
        self.pending = bytearray()  # file bytes parsed but not written yet
        self.limit = limit
        self.received = received
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._is_file = False
        self._value = bytearray()

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == FILE_FIELD:
            if self.received.has_file:
                raise UploadError(400, "send one file per request")
            self._is_file = True
            self.received.filename = params.get(b"filename", b"").decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.received.size += end - start
            if self.received.size > self.limit:
                self.received.too_large = True
            elif not self.received.too_large:
                self.pending.extend(data[start:end])
        elif len(self._value) < MAX_FIELD_BYTES:
            self._value.extend(data[start : min(end, start + MAX_FIELD_BYTES - len(self._value))])

    def on_part_end(self) -> None:
        if self._name and not self._is_file:
            self.received.fields[self._name] = self._value.decode("utf-8", "replace").strip()


async def receive_upload(
    body: AsyncIterator[bytes], content_type: str | None, content_length: int | None, destination: Path, limit: int
) -> Received:
    """Stream the multipart body's `file` part into `destination` (created, fsynced); raises
    UploadError for a body that is not a usable upload. The caller removes `destination` on error."""
    boundary = boundary_of(content_type)
    received = Received()
    if content_length is not None and content_length > limit + MAX_FIELD_BYTES * 64:
        received.too_large = True  # the declared size already says so: read it without parsing
        await _drain(body, 0)
        raise _too_large(limit)
    # Parsing runs on the event loop; writes (in WRITE_BYTES batches) and the fsync run on worker
    # threads, so that a slow disk never stalls the other requests.
    out = await run_sync(open, destination, "wb")
    try:
        writer = _PartWriter(limit, received)
        parser = MultipartParser(boundary, writer.callbacks())
        seen = 0
        async for chunk in body:
            seen += len(chunk)
            if received.too_large:
                await _drain(body, seen - limit)
                break
            try:
                parser.write(chunk)
            except UploadError:
                raise
            except Exception as exc:  # python-multipart's parse errors
                raise UploadError(400, f"the multipart body is malformed: {exc}") from exc
            if len(writer.pending) >= WRITE_BYTES:
                try:
                    await run_sync(_write, out, writer)
                except OSError:  # a full or read-only inbox: still read the body, so the answer arrives
                    await _drain(body, 0)
                    raise
        if received.too_large:
            raise _too_large(limit)
        try:
            parser.finalize()
        except Exception as exc:
            raise UploadError(400, f"the multipart body is malformed: {exc}") from exc
        await run_sync(_write, out, writer, True)  # the client gets a job id: the bytes must be on disk
    finally:
        out.close()
    if not received.has_file:
        raise UploadError(400, "no file in the request: send it in the multipart field 'file'")
    return received


def _write(out: BinaryIO, writer: _PartWriter, sync: bool = False) -> None:
    writer.received.digest.update(writer.pending)  # hashlib releases the GIL for large buffers
    out.write(writer.pending)
    writer.pending.clear()
    if sync:
        out.flush()
        os.fsync(out.fileno())


async def _drain(body: AsyncIterator[bytes], already: int) -> None:
    past = already
    async for chunk in body:
        past += len(chunk)
        if past > DRAIN_LIMIT:
            break


def _too_large(limit: int) -> UploadError:
    return UploadError(413, f"the file is larger than the upload limit of {limit / 2**20:g} MiB (http.max_upload_mb)")


def sweep_stale_uploads(folder: Path, max_age_seconds: float = 3600.0) -> int:
    """Remove upload files a crash left behind. Another daemon on the same inbox may be receiving
    one right now, so only files untouched for `max_age_seconds` go."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.name.endswith(".part") and time.time() - entry.stat().st_mtime > max_age_seconds:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed
