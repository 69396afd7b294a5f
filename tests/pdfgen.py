"""Test inputs made on the spot: born-digital PDFs, scanned PDFs and images, hostile files.

Born-digital PDFs come from a tiny hand-written PDF writer, so every byte of them is known and no
PDF library's quirks leak into the tests. Scans are drawn with Pillow at a font size that
Tesseract reads well, on small pages so OCR stays fast.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

_FONT_SIZE_PT = 12
_LEADING_PT = 16
_MARGIN_PT = 72


# ---------------------------------------------------------------------------------------------
# Born-digital PDF


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi: backslash and parentheses escaped."""
    raw = text.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _text_matrix(rotate: int, width: float, height: float, u: float, v: float) -> tuple[float, ...]:
    """Where to put a line so that it reads upright once a viewer applies /Rotate.

    (u, v) is the line's origin in the displayed (rotated) page; the result maps it back into the
    unrotated user space, with the text axes turned accordingly (as a landscape page stored
    sideways with /Rotate 90 would be).
    """
    if rotate == 0:
        return (1, 0, 0, 1, u, v)
    if rotate == 90:
        return (0, 1, -1, 0, width - v, u)
    if rotate == 180:
        return (-1, 0, 0, -1, width - u, height - v)
    if rotate == 270:
        return (0, -1, 1, 0, v, height - u)
    raise ValueError(f"/Rotate must be 0, 90, 180 or 270, not {rotate}")


def _content_stream(lines: list[str], rotate: int, width: float, height: float) -> bytes:
    shown_height = width if rotate in (90, 270) else height
    ops = []
    for i, line in enumerate(lines):
        v = shown_height - _MARGIN_PT - i * _LEADING_PT
        matrix = b" ".join(b"%.2f" % n for n in _text_matrix(rotate, width, height, _MARGIN_PT, v))
        ops.append(b"BT /F1 %d Tf %s Tm %s Tj ET" % (_FONT_SIZE_PT, matrix, _pdf_string(line)))
    return b"\n".join(ops)


def _serialize(objects: list[bytes]) -> bytes:
    """Objects numbered from 1, then an xref table with exact byte offsets and the trailer."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    return bytes(out)


def text_pdf(
    path: Path,
    pages: list[list[str]],
    *,
    page_size: tuple[float, float] = (612, 792),
    rotate: int | Sequence[int] = 0,
) -> Path:
    """A PDF with a real text layer (Helvetica), one line of text per `Tj`.

    `rotate` is the /Rotate of every page, or one value per page; the text is laid out to read
    upright when a viewer honours /Rotate, and sideways when it does not.
    """
    rotations = [rotate] * len(pages) if isinstance(rotate, int) else list(rotate)
    width, height = page_size
    kids, objects = _head(len(pages), ["Helvetica"])
    for kid, lines, rotation in zip(kids, pages, rotations, strict=True):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %s %s] /Rotate %d"
            b" /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"
            % (_num(width), _num(height), rotation, kid + 1)
        )
        stream = _content_stream(lines, rotation, width, height)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    path.write_bytes(_serialize(objects))
    return path


def _head(pages: int, fonts: list[str]) -> tuple[list[int], list[bytes]]:
    """Object numbers of the pages (each followed by its content stream) and the first objects: the
    catalog (1), the page tree (2), then the fonts (3, 4, ...)."""
    kids = [3 + len(fonts) + 2 * i for i in range(pages)]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), pages),
        *(b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>" % f.encode() for f in fonts),
    ]
    return kids, objects


def _num(value: float) -> bytes:
    return (b"%d" % value) if float(value).is_integer() else (b"%.3f" % value)


# ---------------------------------------------------------------------------------------------
# Scans


def _font_px(dpi: int) -> int:
    """About 10 pt type: 28 px at 200 dpi, comfortably above Tesseract's sweet spot of ~20 px x-height/2."""
    return max(12, round(dpi * 0.14))


def draw_page(lines: list[str], *, dpi: int = 200, size_in: tuple[float, float] = (4.25, 3.0)) -> Image.Image:
    """A white grayscale page with black text, as a flatbed scanner would give."""
    size_px = (round(size_in[0] * dpi), round(size_in[1] * dpi))
    image = Image.new("L", size_px, 255)
    draw = ImageDraw.Draw(image)
    font_px = _font_px(dpi)
    font = ImageFont.load_default(size=font_px)
    margin = dpi // 4
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * round(font_px * 1.5)), line, fill=0, font=font)
    return image


def scanned_pdf(
    path: Path, pages: list[list[str]], *, dpi: int = 200, size_in: tuple[float, float] = (4.25, 3.0)
) -> Path:
    """An image-only PDF (no text layer), one drawn page per entry of `pages`."""
    images = [draw_page(lines, dpi=dpi, size_in=size_in) for lines in pages]
    images[0].save(path, "PDF", save_all=True, append_images=images[1:], resolution=dpi)
    return path


def scanned_image(
    path: Path,
    lines: list[str],
    fmt: str = "PNG",
    dpi: int = 200,
    *,
    size_in: tuple[float, float] = (4.25, 3.0),
    exif_orientation: int | None = None,
) -> Path:
    """One drawn page as an image file. With `exif_orientation=6` the pixels are stored rotated and
    the EXIF tag says how to turn them upright, as phone cameras do."""
    image = draw_page(lines, dpi=dpi, size_in=size_in)
    kwargs: dict = {"dpi": (dpi, dpi)}
    if exif_orientation == 6:
        image = image.transpose(Image.Transpose.ROTATE_90)  # undone by exif_transpose's ROTATE_270
        exif = Image.Exif()
        exif[0x0112] = 6
        kwargs["exif"] = exif
    elif exif_orientation is not None:
        raise ValueError("only EXIF orientation 6 is supported by this generator")
    if fmt.upper() == "JPEG":
        kwargs["quality"] = 92
    image.save(path, fmt.upper(), **kwargs)
    return path


def multipage_tiff(path: Path, pages: list[list[str]], *, dpi: int = 200) -> Path:
    images = [draw_page(lines, dpi=dpi) for lines in pages]
    images[0].save(path, "TIFF", save_all=True, append_images=images[1:], dpi=(dpi, dpi))
    return path


# ---------------------------------------------------------------------------------------------
# Hostile files


def encrypted_pdf(src: Path, dst: Path, user_password: str = "secret") -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(src))
    writer.encrypt(user_password=user_password, owner_password=user_password + "-owner", algorithm="AES-128")
    with dst.open("wb") as fh:
        writer.write(fh)
    return dst


def pageless_pdf(path: Path, *, padding: int = 4096) -> Path:
    """A well-formed, unencrypted PDF whose page tree is empty (/Count 0, no /Kids), its objects padded with
    runs of newlines: the shape of pikepdf's newline-buffer-test.pdf, whose only problem is that it has no pages."""
    objects = [
        b"<< /Pages 2 0 R /Type /Catalog >>" + b"\n" * padding,
        b"<< /Count 0 /Kids [ ] /Type /Pages >>" + b"\n" * padding,
    ]
    path.write_bytes(_serialize(objects))
    return path


def dangling_pages_pdf(path: Path) -> Path:
    """An unencrypted PDF whose catalog names a page tree (object 9) that is not in the file."""
    path.write_bytes(_serialize([b"<< /Type /Catalog /Pages 9 0 R >>"]))
    return path


def slow_pdf(path: Path, shapes: int = 2000) -> Path:
    """A rendering bomb: a few kilobytes of compressed drawing operators that make PDFium fill the
    whole page `shapes` times (about 15 ms each at 300 dpi on one core)."""

    def circle(r: float, cx: float = 306, cy: float = 396) -> str:
        k = 0.5523 * r  # Bezier control distance for a quarter circle
        return (
            f"{cx + r} {cy} m {cx + r} {cy + k} {cx + k} {cy + r} {cx} {cy + r} c "
            f"{cx - k} {cy + r} {cx - r} {cy + k} {cx - r} {cy} c "
            f"{cx - r} {cy - k} {cx - k} {cy - r} {cx} {cy - r} c "
            f"{cx + k} {cy - r} {cx + r} {cy - k} {cx + r} {cy} c f"
        )

    ops = "\n".join(f"{(i % 10) / 10} g {circle(500 - i % 50)}" for i in range(shapes))
    stream = zlib.compress(ops.encode("ascii"))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    path.write_bytes(_serialize(objects))
    return path


def scan_with_slow_page(path: Path, before: int, after: int = 0, *, shapes: int = 700) -> Path:
    """`before` scanned pages of a few lines, one page that takes seconds to render (`shapes` 700:
    about 6 s at 300 dpi; 6000: as long at 100 dpi), then `after` more scanned pages. The OCR workers
    read such a scanned page in ~40 ms, faster than a test's signal or command lands: the slow page
    keeps the job running until then."""
    parts = [scanned_pdf(path.with_name(f"{path.stem}-a.pdf"), [sample_lines(4, seed=s) for s in range(before)])]
    parts.append(slow_pdf(path.with_name(f"{path.stem}-slow.pdf"), shapes=shapes))
    if after:
        lines = [sample_lines(4, seed=s) for s in range(before, before + after)]
        parts.append(scanned_pdf(path.with_name(f"{path.stem}-b.pdf"), lines))
    concat_pdfs(path, parts)
    for part in parts:
        part.unlink()
    return path


def truncated(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def png_bomb(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A PNG whose header claims a gigapixel bitmap: a decompression bomb as image decoders see it.

    Only the header is real (that is all a size guard may read); no pixel data is written.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------------------------------------
# Text to draw, and how to score OCR of it

_WORD_LIST = (
    "about after again almost always animal answer around became before began better between black "
    "bring brought building called carry change children city close common country course cover "
    "different during early earth enough every example family father field figure final follow "
    "found friend garden general given great ground group happen heard horse house important inside "
    "island kitchen known large later learn letter light little market matter measure money morning "
    "mother mountain music notice number object often order other paper party people picture place "
    "plant point power present problem question quickly rather reason record remember river round "
    "school science second several short should simple since small sound special spring station "
    "still story strong study summer table taken thought through together travel under until "
    "usually village water weather window winter without wonder world written young"
)
_WORDS = _WORD_LIST.split()


def sample_lines(n: int, seed: int = 0, *, max_chars: int = 34) -> list[str]:
    """`n` deterministic lines of real English words, short enough to fit a small test page."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(_WORDS).capitalize()]
        while True:
            word = rng.choice(_WORDS)
            if len(" ".join(words)) + 1 + len(word) > max_chars:
                break
            words.append(word)
        lines.append(" ".join(words))
    return lines


def normalise(text: str) -> str:
    return " ".join(text.split())


def cer(expected: str, actual: str) -> float:
    """Character error rate: edit distance over the expected length, whitespace runs counted as one."""
    want, got = normalise(expected), normalise(actual)
    return Levenshtein.distance(want, got) / max(1, len(want))


# ---------------------------------------------------------------------------------------------
# More hostile files (reliability tests)


def huge_image_pdf(path: Path, side_px: int = 40000) -> Path:
    """A one-page PDF whose page is a `side_px` square 1-bit image: about 100 KB on disk, hundreds
    of megabytes once PDFium decodes it (a decompression bomb inside a PDF)."""
    raw_row = b"\x00" * ((side_px + 7) // 8)
    compressor = zlib.compressobj(9)
    body = bytearray()
    for _ in range(side_px):
        body += compressor.compress(raw_row)
    body += compressor.flush()
    return image_page_pdf(path, side_px, side_px, 1, bytes(body))


def image_page_pdf(
    path: Path,
    width: int,
    height: int,
    bits: int,
    flate: bytes,
    caption: str | list[str] | None = None,
    *,
    invisible: bool = False,
) -> Path:
    """A one-page Letter PDF filled by one gray image (`flate`: its Flate-compressed samples), with
    optional lines of real text over it (so the text engine finds some); `invisible`: drawn in text
    render mode 3, as OCR tools lay their text layer over a scan."""
    content = b"q 612 0 0 792 0 0 cm /Im1 Do Q"
    font = b""
    if caption is not None:
        lines = [caption] if isinstance(caption, str) else caption
        shown = b" T* ".join(b"(%s) Tj" % line.encode("latin-1") for line in lines)
        content += b" BT /F1 12 Tf 14 TL %s72 720 Td %s ET" % (b"3 Tr " if invisible else b"", shown)
        font = b" /Font << /F1 6 0 R >>"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /XObject << /Im1 5 0 R >>%s >> /Contents 4 0 R >>" % font,
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
        b" /BitsPerComponent %d /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream"
        % (width, height, bits, len(flate), flate),
    ]
    if caption is not None:
        objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    path.write_bytes(_serialize(objects))
    return path


def jpeg_page_pdf(path: Path, image: Image.Image, stated: tuple[int, int]) -> Path:
    """A one-page Letter PDF filled by `image` as a gray JPEG whose dictionary states `stated` as its
    width and height: where that is not the JPEG's own size, the dictionary lies (PDFium decodes
    the JPEG's own size and the render scales it to the page)."""
    buffer = io.BytesIO()
    image.convert("L").save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    content = b"q 612 0 0 792 0 0 cm /Im1 Do Q"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /XObject << /Im1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
        b" /BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n%s\nendstream" % (*stated, len(jpeg), jpeg),
    ]
    path.write_bytes(_serialize(objects))
    return path


def concat_pdfs(path: Path, sources: Sequence[Path]) -> Path:
    """The pages of `sources`, in order, as one PDF (e.g. a hanging page among good ones)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for source in sources:
        writer.append(PdfReader(source))
    with path.open("wb") as fh:
        writer.write(fh)
    return path


def mutations(sources: Sequence[bytes], count: int, seed: int) -> list[tuple[str, bytes]]:
    """`count` deterministic variants of valid PDFs: byte flips, truncations, splices, junk runs.

    Each is (how it was made, bytes); the same seed gives the same list.
    """
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    for index in range(count):
        data = bytearray(rng.choice(sources))
        kind = ("flip", "truncate", "splice", "junk", "delete")[index % 5]
        if kind == "flip":
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "truncate":
            data = data[: rng.randrange(1, len(data))]
        elif kind == "splice":
            other = rng.choice(sources)
            data = data[: rng.randrange(len(data))] + other[rng.randrange(len(other)) :]
        elif kind == "junk":
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 500))
        else:
            at = rng.randrange(len(data))
            del data[at : at + rng.randint(1, 200)]
        out.append((f"{index:03d}-{kind}", bytes(data)))
    return out


def content_bomb_pdf(path: Path, megabytes: int = 300) -> Path:
    """A one-page PDF whose content stream inflates to `megabytes` MB of blanks (~300 KB on disk):
    PDFium holds the whole decoded stream in memory to parse the page."""
    compressor = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    body = bytearray()
    for _ in range(megabytes):
        body += compressor.compress(chunk)
    body += compressor.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(body), bytes(body)),
    ]
    path.write_bytes(_serialize(objects))
    return path


@dataclass(frozen=True)
class Span:
    """A run of real text on a page: `x`, `y` in points from the page's top left (its baseline)."""

    text: str
    x: float
    y: float
    size: float = 11.0
    bold: bool = False


def styled_pdf(path: Path, pages: list[list[Span]], *, page_size: tuple[float, float] = (612, 792)) -> Path:
    """A PDF of placed text in Helvetica and Helvetica-Bold at any size: headings, columns, running
    headers, as born-digital reports have them."""
    width, height = page_size
    kids, objects = _head(len(pages), ["Helvetica", "Helvetica-Bold"])
    for kid, spans in zip(kids, pages, strict=True):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %s %s] /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >>"
            b" /Contents %d 0 R >>" % (_num(width), _num(height), kid + 1)
        )
        stream = b"\n".join(
            b"BT /F%d %s Tf 1 0 0 1 %s %s Tm %s Tj ET"
            % (2 if s.bold else 1, _num(s.size), _num(s.x), _num(height - s.y), _pdf_string(s.text))
            for s in spans
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    path.write_bytes(_serialize(objects))
    return path


def flow(lines: list[str], x: float, y: float, size: float = 11.0, leading: float = 14.0) -> list[Span]:
    """Lines set one under the other from baseline `y`."""
    return [Span(line, x, y + n * leading, size) for n, line in enumerate(lines)]
