"""The OCR worker: a child process that keeps one Tesseract loaded and reads rendered pages with it.

Run as `python -m ocr_watcher.engines.tesseract_worker --tessdata DIR --language L --psm N --dpi D`;
spoken to only by `tesseract_pool.TesseractWorker`, in frames (`ocr_watcher.child`). libtesseract
(through tesserocr) runs here, never in the daemon, so a crash or hang in it costs one page. Loading
the model once and reading the rendered bitmap straight from the render worker's uncompressed file
is what makes it faster than one `tesseract` process per page. The parent sets OMP_THREAD_LIMIT=1
in this process's environment, where the library reads it when it loads.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from typing import Any, NamedTuple

from ocr_watcher.child import claim_stdout, encode_frame, serve_frames

# A binary 8-bit PGM (P5) or PPM (P6) header as Pillow writes it; one whitespace byte ends it.
_PNM_HEADER = re.compile(rb"P([56])\s+(\d+)\s+(\d+)\s+255\s")


class Bitmap(NamedTuple):
    width: int
    height: int
    bytes_per_pixel: int
    offset: int  # where the pixels start


def pnm_bitmap(data: bytes) -> Bitmap | None:
    """The raw pixels' layout in a PGM/PPM file's bytes; None for any other file (or a short one)."""
    header = _PNM_HEADER.match(data[:64])
    if header is None:
        return None
    bitmap = Bitmap(int(header[2]), int(header[3]), 1 if header[1] == b"5" else 3, header.end())
    size = bitmap.width * bitmap.height * bitmap.bytes_per_pixel
    return bitmap if size and len(data) - bitmap.offset == size else None


def missing_languages(language: str, installed: list[str]) -> list[str]:
    """The parts of `language` ("eng+deu") that have no traineddata among `installed`."""
    return [lang for lang in language.split("+") if lang not in installed]


def open_api(tessdata: str, language: str, psm: int, dpi: int) -> tuple[Any, dict[str, Any]]:
    """(the loaded API, the ready message); the API is None and the message says why when it cannot load."""
    try:
        import tesserocr
    except ImportError as exc:  # a broken wheel: the parent falls back to the command-line tool
        return None, {"ready": False, "error": f"tesserocr cannot be imported ({exc})"}
    _, installed = tesserocr.get_languages(tessdata)
    missing = missing_languages(language, installed)
    if missing:
        found = ", ".join(sorted(installed)) or "none"
        return None, {"ready": False, "error": f"no data for language {'+'.join(missing)} in {tessdata} ({found})"}
    try:
        api = tesserocr.PyTessBaseAPI(path=tessdata, lang=language, psm=psm)
    except RuntimeError as exc:
        return None, {"ready": False, "error": f"tesseract could not load {language} from {tessdata} ({exc})"}
    # What the command line's `--dpi` sets: the resolution PNM files do not carry.
    api.SetVariable("user_defined_dpi", str(dpi))
    # Its chatter ("Empty page!!", "Detected 12 diacritics") would land in the daemon's log, which the
    # command line's captured stderr kept out; what goes wrong with a page comes back in the answer.
    api.SetVariable("debug_file", os.devnull)
    ready = {
        "ready": True,
        "pid": os.getpid(),
        "version": tesserocr.tesseract_version(),
        "library": getattr(tesserocr, "tesserocr", tesserocr).__file__,  # the compiled binding
    }
    return api, ready


def handle(api: Any, request: dict[str, Any]) -> dict[str, Any]:
    """One page: its rendered image file → Tesseract's TSV (the same columns as the CLI's `tsv`)."""
    if request.get("op") != "ocr":
        return {"ok": False, "error": {"message": f"unknown operation {request.get('op')!r}"}}
    path = request["path"]
    try:
        set_image(api, path)
        tsv = api.GetTSVText(0)
    except Exception as exc:  # leptonica and then Pillow (tesserocr tries both) could not read it
        return {"ok": False, "error": {"message": f"tesseract could not read the image {path} ({exc})"}}
    finally:
        api.Clear()  # the page's results; the model stays loaded
    return {"ok": True, "result": {"tsv": tsv}}


def set_image(api: Any, path: str) -> None:
    """The render worker's PGM as raw pixels: leptonica's PNM reader takes a byte at a time (~80 ms
    for a letter page at 300 dpi), a read and a copy take ~15 ms. Any other file: leptonica reads it."""
    with open(path, "rb") as fh:
        data = fh.read()
    bitmap = pnm_bitmap(data)
    if bitmap is None:
        api.SetImageFile(path)
        return
    width, height, depth, offset = bitmap
    api.SetImageBytes(data[offset:], width, height, depth, width * depth)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tessdata", required=True)
    parser.add_argument("--language", required=True)
    parser.add_argument("--psm", type=int, required=True)
    parser.add_argument("--dpi", type=int, required=True)
    args = parser.parse_args(argv)
    protocol_out = claim_stdout()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    api, ready = open_api(args.tessdata, args.language, args.psm, args.dpi)
    if api is None:  # say why and leave: the parent reads the reason, not a timeout
        protocol_out.write(encode_frame(ready))
        protocol_out.flush()
        return 0
    serve_frames(protocol_out, ready, lambda request: handle(api, request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
