"""The render worker: a child process that opens PDFs and images and renders their pages.

Run as `python -m ocr_watcher.pipeline.render_worker --memory-mb N`; spoken to only by
`renderer.RenderWorker`, with length-prefixed JSON frames on stdin/stdout (`ocr_watcher.child`). It is the only place
PDFium runs. It limits its own address space (a hostile PDF gets a MemoryError here, not an OOM kill
of the daemon), guards Pillow against decompression bombs, and keeps the last PDF open so the pages
of one document are rendered without reopening it.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image, UnidentifiedImageError

from ocr_watcher.child import EXIT_OUT_OF_MEMORY, claim_stdout, serve_frames
from ocr_watcher.engines.text_trust import judge_text_layer
from ocr_watcher.pipeline.page_source import image_cover, text_spans
from ocr_watcher.pipeline.render_sizes import bitmap_size, fit_scale, image_dpi, scale_note, upright, upright_size
from ocr_watcher.pipeline.renderer import InputError as InputProblem  # sent to the parent as one
from ocr_watcher.pipeline.scan_pixels import own_pixels

MAX_IMAGE_PIXELS = 250_000_000  # ~15800 px square; beyond that an image is treated as a bomb
_PNM_SUFFIXES = {".pgm", ".ppm", ".pnm"}
_EXIF_ORIENTATION = 0x0112
_IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}


class OutputProblem(Exception):
    """The rendered page could not be written; becomes OSError in the parent."""


class BadRequest(Exception):
    """The parent asked for something impossible (a page that does not exist): a caller bug."""


# --- pure decisions ---------------------------------------------------------------------------


def sniff(head: bytes) -> str | None:
    """The file kind from its first bytes: "pdf", "png", "jpeg", "tiff", or None."""
    if b"%PDF-" in head[:1024]:  # PDF readers accept junk before the header, up to 1 KiB
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


_PDFIUM_ERRORS = {
    pdfium_c.FPDF_ERR_UNKNOWN: "Unknown error",
    pdfium_c.FPDF_ERR_FILE: "File access error",
    pdfium_c.FPDF_ERR_FORMAT: "Data format error",
    pdfium_c.FPDF_ERR_PASSWORD: "Incorrect password error",
    pdfium_c.FPDF_ERR_SECURITY: "Unsupported security scheme error",
}


def pdf_load_problem(*, opened: bool, err_code: int, pages: int) -> InputProblem | None:
    """What FPDF_LoadDocument said about one file → what is wrong with it (None: it has pages to render).

    `opened`: a document came back; `err_code`: FPDF_GetLastError() read just after; `pages`: its page count.
    The error code is one process-wide value that PDFium writes only when a load fails and never clears, so
    after a document that opened it still names whatever failed before it (the encrypted file before): it
    says something about this file only when this load failed.
    """
    if opened:
        if pages > 0:
            return None
        return InputProblem("no_pages", "the PDF has no pages: its page tree is empty or broken")
    if err_code == pdfium_c.FPDF_ERR_PASSWORD:
        return InputProblem(
            "password_required",
            "the PDF is encrypted and needs a password; remove the password and drop it again",
        )
    if err_code == pdfium_c.FPDF_ERR_SECURITY:
        return InputProblem(
            "unsupported_encryption",
            "the PDF uses an encryption scheme PDFium cannot open; save it unencrypted and drop it again",
        )
    reason = f"PDFium: {_PDFIUM_ERRORS.get(err_code, f'error {err_code}')}"
    if err_code == pdfium_c.FPDF_ERR_FILE:
        return InputProblem("unreadable", f"the file could not be read ({reason})")
    return InputProblem("corrupt_pdf", f"the PDF is damaged and cannot be opened ({reason})")


# --- documents --------------------------------------------------------------------------------


def _file_kind(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            head = fh.read(1024)
    except OSError as exc:
        raise InputProblem("unreadable", f"the file could not be read: {exc.strerror}") from exc
    if not head:
        raise InputProblem("empty_file", "the file is empty (0 bytes)")
    kind = sniff(head)
    if kind is None and path.suffix.lower() == ".pdf":
        raise InputProblem("not_a_pdf", "the file is named .pdf but its content is not a PDF")
    if kind is None:
        raise InputProblem("unsupported_type", "the file is not a PDF, PNG, JPEG or TIFF")
    return kind


@dataclass
class _OpenPdf:
    key: tuple[str, int, int, int]  # path, inode, size, mtime: a replaced file is reopened
    doc: pdfium.PdfDocument


class Documents:
    """Opens inputs; keeps the most recent PDF open for the next page of the same document."""

    def __init__(self) -> None:
        self._pdf: _OpenPdf | None = None

    def pdf(self, path: Path) -> pdfium.PdfDocument:
        st = path.stat()
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if self._pdf and self._pdf.key == key:
            return self._pdf.doc
        self.forget()
        doc = _load_pdf(path)
        self._pdf = _OpenPdf(key, doc)
        return doc

    def forget(self) -> None:
        if self._pdf:
            self._pdf.doc.close()
            self._pdf = None


def _load_pdf(path: Path) -> pdfium.PdfDocument:
    # FPDF_LoadDocument itself, not pdfium.PdfDocument(path): pypdfium2 also fails a document that opened with
    # no pages, labels that with FPDF_GetLastError (a code left by an earlier file) and never closes it.
    raw = pdfium_c.FPDF_LoadDocument(os.fsencode(path) + b"\0", None)
    opened = bool(raw)  # a NULL FPDF_DOCUMENT is falsy
    err_code = pdfium_c.FPDF_GetLastError()
    pages = pdfium_c.FPDF_GetPageCount(raw) if opened else 0
    problem = pdf_load_problem(opened=opened, err_code=err_code, pages=pages)
    if problem is not None:
        if opened:
            pdfium_c.FPDF_CloseDocument(raw)
        raise problem
    return pdfium.PdfDocument(raw)


def _open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputProblem(
            "image_too_large", f"the image is too large to process safely ({exc}); scale it down"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputProblem("corrupt_image", f"the image cannot be decoded ({exc})") from exc


def _check_page(page: int, pages: int) -> None:
    if not 1 <= page <= pages:
        raise BadRequest(f"page {page} is out of range: the document has {pages} page(s)")


# --- operations -------------------------------------------------------------------------------


def probe(docs: Documents, path: Path) -> dict[str, Any]:
    kind = _file_kind(path)
    if kind == "pdf":
        doc = docs.pdf(path)
        pages = len(doc)
        encrypted = pdfium_c.FPDF_GetSecurityHandlerRevision(doc) != -1
        info = {"kind": "pdf", "pages": pages, "encrypted": encrypted, "format": "PDF"}
    else:
        with _open_image(path) as image:
            pages = getattr(image, "n_frames", 1)
        info = {"kind": "image", "pages": pages, "encrypted": False, "format": _IMAGE_FORMATS[kind]}
    if pages < 1:
        raise InputProblem("no_pages", "the document has no pages")
    return info


def render(docs: Documents, path: Path, page: int, spec: dict[str, Any], out_path: Path) -> dict[str, Any]:
    kind = _file_kind(path)
    if kind == "pdf":
        if spec["kind"] == "text":
            return _pdf_text(docs.pdf(path), page)
        if spec["kind"] == "best":  # its own text layer where that can be trusted, else a bitmap to OCR
            found = _pdf_text(docs.pdf(path), page, best=True)
            if found["spans"] is not None:
                return found
            return {**_pdf_image(docs.pdf(path), page, spec, out_path), "source_reason": found["source_reason"]}
        return _pdf_image(docs.pdf(path), page, spec, out_path)
    if spec["kind"] == "text":
        return {"image_path": None, "text": "", "width": 0, "height": 0, "scale_note": None}
    page_image = _image_page(path, page, spec, out_path)
    return {**page_image, "source_reason": "an image file"} if spec["kind"] == "best" else page_image


def _load_page(doc: pdfium.PdfDocument, page: int) -> pdfium.PdfPage:
    _check_page(page, len(doc))
    try:
        return doc[page - 1]
    except pdfium.PdfiumError as exc:
        raise InputProblem("corrupt_pdf", f"page {page} of the PDF is damaged ({exc})") from exc


def _pdf_text(doc: pdfium.PdfDocument, page: int, *, best: bool = False) -> dict[str, Any]:
    """The page's text layer; `best`: judged (engines/text_trust.py), and where it is to be used,
    with its geometry (`spans`)."""
    pdf_page = _load_page(doc, page)
    try:
        textpage = pdf_page.get_textpage()
        text = textpage.get_text_bounded()
        width, height = (round(v) for v in pdf_page.get_size())
        found = {"image_path": None, "text": text, "width": width, "height": height, "scale_note": None}
        found["size_pt"] = list(pdf_page.get_size())
        if best:
            verdict = judge_text_layer(text, image_cover(pdf_page))
            found["source_reason"] = verdict.reason
            found["spans"] = text_spans(pdf_page, textpage) if verdict.use_text else None
        textpage.close()
    finally:
        pdf_page.close()
    return found


def _pdf_image(doc: pdfium.PdfDocument, page: int, spec: dict[str, Any], out_path: Path) -> dict[str, Any]:
    pdf_page = _load_page(doc, page)
    try:
        width_pt, height_pt = pdf_page.get_size()  # already turned by /Rotate, as render() is
        scale, reduced = fit_scale(width_pt, height_pt, spec["dpi"], spec["max_side_px"])
        scan = own_pixels(pdf_page, scale, grayscale=spec["grayscale"])  # a scan's page: no render needed
        if scan is not None:
            _save(scan, out_path)
            size = scan.size
        else:
            size = _render_to(pdf_page, page, scale, spec["grayscale"], out_path)
    finally:
        pdf_page.close()
    text = _pdf_text(doc, page)["text"] if spec.get("text_layer") else None
    note = None
    if reduced:
        full = (bitmap_size(width_pt, spec["dpi"] / 72), bitmap_size(height_pt, spec["dpi"] / 72))
        note = scale_note(full, size)
    found = {"image_path": str(out_path), "text": text, "width": size[0], "height": size[1], "scale_note": note}
    return {**found, "size_pt": [width_pt, height_pt]}


def _render_to(pdf_page: pdfium.PdfPage, page: int, scale: float, grayscale: bool, out_path: Path) -> tuple[int, int]:
    try:
        bitmap = pdf_page.render(scale=scale, grayscale=grayscale, rev_byteorder=True)
    except ValueError as exc:  # a page of zero area
        raise InputProblem("corrupt_pdf", f"page {page} cannot be rendered ({exc})") from exc
    try:
        _save(bitmap.to_pil(), out_path)  # the image shares the bitmap's buffer, no copy
        return (bitmap.width, bitmap.height)
    finally:
        bitmap.close()


def _image_page(path: Path, page: int, spec: dict[str, Any], out_path: Path) -> dict[str, Any]:
    cap = spec["max_side_px"]
    with _open_image(path) as source:
        _check_page(page, getattr(source, "n_frames", 1))
        try:
            source.seek(page - 1)
            full = upright_size(source.size, source.getexif().get(_EXIF_ORIENTATION))
            dpi = image_dpi(source.info.get("dpi"), spec["dpi"])
            if max(full) > cap:  # JPEG can decode at 1/2, 1/4 or 1/8 size directly: far less memory
                factor = cap / max(full)
                source.draft(None, (math.ceil(source.width * factor), math.ceil(source.height * factor)))
            image = upright(source, grayscale=spec["grayscale"])
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputProblem("corrupt_image", f"page {page} of the image cannot be decoded ({exc})") from exc
    note = None
    if max(image.size) > cap:
        image.thumbnail((cap, cap), Image.Resampling.LANCZOS)
    if max(full) > cap:
        note = scale_note(full, image.size)
    _save(image, out_path)
    found = {
        "image_path": str(out_path),
        "text": None,
        "width": image.width,
        "height": image.height,
        "scale_note": note,
    }
    return {**found, "size_pt": [v * 72 / dpi for v in full]}


def _save(image: Image.Image, out_path: Path) -> None:
    """Uncompressed PNM by default (fastest to write and for Tesseract to read); PNG when asked."""
    suffix = out_path.suffix.lower()
    try:
        if suffix in _PNM_SUFFIXES:
            image.save(out_path, "PPM")
        elif suffix == ".png":
            image.save(out_path, "PNG", compress_level=1)
        else:
            image.save(out_path)
    except OSError as exc:  # disk full, folder gone: our problem, not the input's
        raise OutputProblem(f"cannot write the rendered page to {out_path}: {exc}") from exc


# --- the process ------------------------------------------------------------------------------


def _limit_memory(memory_mb: int) -> None:
    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def handle(docs: Documents, request: dict[str, Any]) -> dict[str, Any]:
    """One request → one response frame. MemoryError is left to the caller: it ends the process."""
    try:
        path = Path(request["path"])
        if request["op"] == "probe":
            result = probe(docs, path)
        elif request["op"] == "render":
            result = render(docs, path, int(request["page"]), request["spec"], Path(request["out_path"]))
        else:
            raise BadRequest(f"unknown operation {request['op']!r}")
    except InputProblem as exc:
        return {"ok": False, "error": {"kind": "input", "type": exc.type, "message": exc.message}}
    except BadRequest as exc:
        return {"ok": False, "error": {"kind": "request", "message": str(exc)}}
    except OutputProblem as exc:
        return {"ok": False, "error": {"kind": "output", "message": str(exc)}}
    except MemoryError:
        raise
    except Exception as exc:  # anything else PDFium or Pillow throws is still about this input
        docs.forget()
        message = f"the file could not be processed ({type(exc).__name__}: {exc})"
        return {"ok": False, "error": {"kind": "input", "type": "unreadable", "message": message}}
    return {"ok": True, "result": result}


def serve(memory_mb: int) -> int:
    protocol_out = claim_stdout()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    _limit_memory(memory_mb)  # after imports: the limit is for documents, not for the interpreter
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)  # the limit is the limit, not 2x
    docs = Documents()
    try:
        serve_frames(protocol_out, {"ready": True, "pid": os.getpid()}, lambda request: handle(docs, request))
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)  # no cleanup: there may be no memory left to run it
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memory-mb", type=int, required=True)
    return serve(parser.parse_args(argv).memory_mb)


if __name__ == "__main__":
    sys.exit(main())
