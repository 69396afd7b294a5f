"""How good result.md is on the CPU: the daemon against a PDF's bare text layer and bare Tesseract,
scored against ground truth that this benchmark makes itself.

    .venv/bin/python bench/quality.py [--quick]

Documents (drawn by tests/pdfgen.py): a born-digital report of three pages (running header, footer
and page number, a title, a bold heading, paragraphs with a hyphenated word, a bulleted list, a
table), the same report scanned (rendered at 200 dpi into an image-only PDF), a two-column page
whose text is given line by line across the columns, scans turned 90 and 180 degrees, scans set
askew by a degree or two, and a scan under an invisible garbage OCR layer. Systems: the text layer
(pypdfium2's text, pages joined), bare Tesseract (`tesseract page.png - --psm 3` on 300 dpi
renders), and the daemon with the embedded defaults (engine auto: hybrid on this machine), its
result.md.

Measures, each 0 to 1, higher better:
- words: the share of the ground truth's words found (repeats counted);
- absent: the share of running headers, footers and page numbers left out;
- order: the share of consecutive ground-truth paragraphs found whole (as one run of text: not cut
  by a line break's hyphen, not interleaved with another column) and in their order;
- structure: the share of headings found as Markdown headings, list items as list items, and
  table rows as Markdown table rows with the right cells.
Reported per document and system, and the mean per system. The daemon should lead on every measure.
"""

from __future__ import annotations

import re
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, print_figures, running, temp_root, wait_for_jobs  # noqa: E402

from ocr_watcher.engines.tesseract import resolve_tesseract, run_tesseract  # noqa: E402
from tests.pdfgen import Span, draw_page, flow, image_page_pdf, styled_pdf  # noqa: E402

NAME = "quality"
SYSTEMS = ("text layer", "tesseract", "daemon")
MEASURES = ("words", "absent", "order", "structure")


@dataclass
class Truth:
    paragraphs: list[str]
    running: list[str] = field(default_factory=list)  # must not be in the result
    headings: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


PARAS = [
    "In part {n} revenue grew in every region this quarter while the cost of running the storage service stayed level.",
    "Customers of part {n} moved their archives to the new service at twice the expected rate, and the "
    "support desk answered most questions within a day of receiving them.",
]
HYPHENATED = [
    "Customers of part {n} moved their archives to the new service at twice the",
    "expected rate, and the support desk answered most questions within a day of receiv-",
    "ing them.",
]
ITEMS = ["archives of scanned contracts", "mail of the legal department"]
REGIONS = {1: ("North", "South"), 2: ("East", "West"), 3: ("Central", "Coast")}  # each page its own rows


def table(n: int) -> list[list[str]]:
    first, second = REGIONS[n]
    return [["Region", "Revenue", "Cost"], [first, f"1,2{n}4", "310"], [second, "987", f"1,0{n}0"]]


def _wrap(text: str, width: int = 70) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line]


def report_page(n: int) -> tuple[list[Span], Truth]:
    spans = [Span("Storage Corporation Quarterly Report", 72, 40, 9), Span(f"Page {n}", 290, 760, 9)]
    spans.append(Span(f"Results of Part {n}", 72, 100, 22))
    y = 140.0
    first = _wrap(PARAS[0].format(n=n))
    spans.extend(flow(first, 72, y))
    y += 14 * len(first) + 20
    spans.append(Span("Where the growth came from", 72, y, bold=True))
    second = [line.format(n=n) for line in HYPHENATED]  # a word hyphenated at a line's end
    spans.extend(flow(second, 72, y + 22))
    y += 22 + 14 * len(second) + 20
    spans.extend(flow([f"\u2022 {item}" for item in ITEMS], 90, y))
    y += 48
    for r, row in enumerate(table(n)):
        for c, cell in enumerate(row):
            spans.append(Span(cell, 72 + 150 * c, y + 16 * r, bold=r == 0))
    truth = Truth(
        paragraphs=[f"Results of Part {n}", *(p.format(n=n) for p in PARAS)],
        running=["Storage Corporation Quarterly Report", f"Page {n}"],
        headings=[f"Results of Part {n}", "Where the growth came from"],
        items=ITEMS,
        rows=table(n),
    )
    return spans, truth


def merged(truths: list[Truth]) -> Truth:
    out = Truth([])
    for t in truths:
        out.paragraphs += t.paragraphs
        out.running += t.running
        out.headings += t.headings
        out.items += t.items
        out.rows += t.rows
    return out


def scan_of(
    pdf: Path, out: Path, dpi: int = 200, turns: list[int] | None = None, skews: list[float] | None = None
) -> Path:
    """The PDF rendered as a scanner gives it: each page turned clockwise by its turn (degrees) and
    set askew by its skew (degrees anticlockwise, as a sheet slips in a feeder)."""
    doc = pdfium.PdfDocument(str(pdf))
    images = []
    for n in range(len(doc)):
        image = doc[n].render(scale=dpi / 72, grayscale=True).to_pil()
        image = image.rotate(-(turns or [0] * len(doc))[n], expand=True)
        skew = (skews or [0.0] * len(doc))[n]
        images.append(image.rotate(skew, Image.Resampling.BICUBIC, fillcolor=255) if skew else image)
    images[0].save(out, "PDF", save_all=True, append_images=images[1:], resolution=dpi)
    return out


def documents(folder: Path) -> dict[str, tuple[Path, Truth]]:
    folder.mkdir(parents=True, exist_ok=True)
    pages = [report_page(n) for n in (1, 2, 3)]
    report = styled_pdf(folder / "report.pdf", [spans for spans, _ in pages])
    truth = merged([t for _, t in pages])
    left = _wrap("The left column starts the article and goes on for a few lines of text before it ends.", 34)
    right = _wrap("The right column follows it and ends the article with lines of its own at the end.", 34)
    columns = [s for pair in zip(flow(left, 72, 100), flow(right, 330, 100), strict=False) for s in pair]
    col_truth = Truth([" ".join(left), " ".join(right)])
    garbage_lines = ["Tbq qnxk brwn fxjs jmps vr th lzy dgs", "wth grt spd nd prcsn rdng"] * 8
    body = [p.format(n=1) for p in PARAS]
    one = draw_page(_wrap(" ".join(body), 60), dpi=100, size_in=(8.5, 11.0)).convert("L")
    garbage = image_page_pdf(
        folder / "garbage.pdf", one.width, one.height, 8, zlib.compress(one.tobytes()), garbage_lines, invisible=True
    )
    return {
        "born-digital report": (report, truth),
        "scanned report": (scan_of(report, folder / "scanned.pdf"), truth),
        "two columns": (styled_pdf(folder / "columns.pdf", [columns]), col_truth),
        "turned scans": (scan_of(report, folder / "turned.pdf", turns=[90, 180, 270]), truth),
        "skewed scans": (scan_of(report, folder / "skewed.pdf", skews=[1.5, -2.5, 0.6]), truth),
        "garbage text layer": (garbage, Truth(body)),
    }


# -- the systems ------------------------------------------------------------------------------------
def text_layer(pdf: Path) -> str:
    doc = pdfium.PdfDocument(str(pdf))
    return "\n\n".join(doc[n].get_textpage().get_text_bounded() for n in range(len(doc)))


def bare_tesseract(pdf: Path, work: Path) -> str:
    binary = resolve_tesseract(None)
    assert binary is not None
    doc = pdfium.PdfDocument(str(pdf))
    texts = []
    for n in range(len(doc)):
        png = work / f"{pdf.stem}-{n}.png"
        doc[n].render(scale=300 / 72, grayscale=True).to_pil().save(png)
        texts.append(run_tesseract(binary, [str(png), "-", "--psm", "3"], timeout=300))
    return "\n\n".join(texts)


def daemon_results(root: Path, docs: dict[str, tuple[Path, Truth]]) -> dict[str, str]:
    found = {}
    with running(root, {"intake": {"settle_seconds": 0.2, "poll_interval_seconds": 0.2}}) as daemon:
        for name, (pdf, _) in docs.items():
            before = {p.name for p in daemon.outbox.iterdir()}
            hidden = daemon.inbox / f".{pdf.name}"  # written under a hidden name, then renamed
            hidden.write_bytes(pdf.read_bytes())
            hidden.rename(daemon.inbox / pdf.name)
            (meta,) = wait_for_jobs(daemon.outbox, 1, timeout=600, daemon=daemon, ignore=before).values()
            found[name] = (daemon.outbox / meta["job_id"] / "result.md").read_text()
    return found


# -- the measures ------------------------------------------------------------------------------------
def words(text: str) -> Counter[str]:
    return Counter(re.findall(r"[a-z0-9]+", text.lower().replace("-\n", "")))


def score(output: str, truth: Truth) -> dict[str, float]:
    output = re.sub(r"<!--.*?-->", "", output)  # result.md's page separators are not text
    want = words(" ".join(truth.paragraphs + truth.items + [c for row in truth.rows for c in row]))
    got = words(output)
    flat = " ".join(output.lower().split())
    starts = [flat.find(" ".join(p.lower().split())) for p in truth.paragraphs]  # whole, as one run of text
    pairs = list(zip(starts, starts[1:], strict=False))
    lines = output.splitlines()
    headings = sum(any(re.match(r"#+ " + re.escape(h), line) for line in lines) for h in truth.headings)
    items = sum(any(re.match(r"(- |\d+\. )" + re.escape(i), line) for line in lines) for i in truth.items)
    rows = sum(
        any(line.startswith("|") and [c.strip() for c in line.strip("|").split("|")] == r for line in lines)
        for r in truth.rows
    )
    wanted = len(truth.headings) + len(truth.items) + len(truth.rows)
    return {
        "words": sum((want & got).values()) / max(1, sum(want.values())),
        "absent": sum(1 for r in truth.running if r.lower() not in output.lower()) / len(truth.running)
        if truth.running
        else 1.0,
        "order": sum(1 for a, b in pairs if 0 <= a < b) / max(1, len(pairs)),
        "structure": (headings + items + rows) / wanted if wanted else 1.0,
    }


def main() -> int:
    bench = Bench(NAME, __doc__, whole_doc=True)
    bench.add("--show", action="store_true", help="print the daemon's result.md of each document")
    bench.parse()
    started = time.monotonic()
    with temp_root(NAME) as root:
        docs = documents(root / "stage")
        work = root / "work"
        work.mkdir()
        outputs = {"text layer": {n: text_layer(p) for n, (p, _) in docs.items()}}
        outputs["tesseract"] = {n: bare_tesseract(p, work) for n, (p, _) in docs.items()}
        outputs["daemon"] = daemon_results(root, docs)
    scores = {s: {n: score(outputs[s][n], docs[n][1]) for n in docs} for s in SYSTEMS}
    if bench.args.show:
        for name, markdown in outputs["daemon"].items():
            print(f"--- {name}\n{markdown}")
    rows = [[n, s, *(scores[s][n][m] for m in MEASURES)] for n in docs for s in SYSTEMS]
    means = {s: {m: sum(scores[s][n][m] for n in docs) / len(docs) for m in MEASURES} for s in SYSTEMS}
    rows += [["mean", s, *(means[s][m] for m in MEASURES)] for s in SYSTEMS]
    print_figures(f"quality of result.md on {len(docs)} documents made here", ["document", "system", *MEASURES], rows)
    print(f"({time.monotonic() - started:.0f} s)")
    return bench.finish({"scores": scores, "means": means})


if __name__ == "__main__":
    sys.exit(main())
