"""`ocr-watcher doctor`: does the configured engine read? A built-in page of known text goes through
it, and fewer than `MIN_RECALL` of its words coming back is a failure, so a broken vLLM release, a
wrong model or random weights show in the first minute, not after a night of jobs. For the vllm
engine it also reports what each server says of itself.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageFont

from .config import Config
from .engines.base import Engine, EngineUnavailable, PageError, PageInput
from .engines.registry import build_engine, job_settings, resolve_engine_name

MIN_RECALL = 0.9
KNOWN_TEXT = (
    "Quarterly report of the northern warehouse",
    "Deliveries arrived on time in April and May,",
    "while the June shipment of copper wire was late",
    "because the harbour cranes were being repaired.",
    "Stock of printer paper fell to twelve boxes;",
    "the order for forty more was placed on Monday.",
    "Please send questions to the logistics office",
    "before the end of the month. Thank you.",
)
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> Counter[str]:
    return Counter(_WORD.findall(text.lower()))


def word_recall(expected: str, found: str) -> float:
    """The share of the expected words (with repeats) that the answer has."""
    want = words(expected)
    return sum((want & words(found)).values()) / max(1, sum(want.values()))


def render_known_page(folder: Path, dpi: int, image_format: str, grayscale: bool, max_side_px: int) -> PageInput:
    """The known text on a Letter page at `dpi` (smaller where the engine caps the longer side, as
    the renderer does), in the format the engine asks for."""
    dpi = min(dpi, max_side_px * 2 // 22)  # 11 inches to the longer side
    width, height = round(8.5 * dpi), round(11 * dpi)
    image = Image.new("L" if grayscale else "RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, dpi // 5))  # about 14 pt
    margin, line = dpi, round(dpi / 3)
    for number, text in enumerate(KNOWN_TEXT):
        draw.text((margin, margin + number * line), text, fill="black", font=font)
    path = folder / ("page.png" if image_format == "png" else ("page.pgm" if grayscale else "page.ppm"))
    image.save(path)
    return PageInput(job_id="doctor", page=1, image_path=path, width=width, height=height)


def server_facts(url: str, model: str) -> dict[str, Any]:
    """What a vLLM server says of itself: its version and the model's context."""
    facts: dict[str, Any] = {"url": url}
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        for path, key in (("/version", "version"), ("/v1/models", "models")):
            try:
                answer = client.get(f"{url}{path}")
                answer.raise_for_status()
                facts[key] = answer.json()
            except httpx.HTTPStatusError as exc:
                facts[key] = f"unknown (HTTP {exc.response.status_code})"
            except (httpx.HTTPError, ValueError) as exc:
                facts[key] = f"unknown ({type(exc).__name__})"
    if isinstance(facts.get("version"), dict):
        facts["version"] = facts["version"].get("version")
    cards = facts.pop("models") if isinstance(facts.get("models"), dict) else {}
    facts["max_model_len"] = next((c.get("max_model_len") for c in cards.get("data", []) if c.get("id") == model), None)
    return facts


def examine(config: Config, profile: str = "default") -> dict[str, Any]:
    """The report: the engine, the recall on the known page, what it read, and for vllm the servers."""
    name = resolve_engine_name(config.profile(profile).engine or config.engine, config)
    report: dict[str, Any] = {"engine": name, "profile": profile, "min_recall": MIN_RECALL}
    if name == "text":
        report["ok"] = True
        report["note"] = "the text engine reads a PDF's own text layer and recognises nothing: nothing to check"
        return report
    try:
        engine: Engine = build_engine(name, config, job_settings(name, config, config.profile(profile)))
    except EngineUnavailable as exc:
        return report | {"ok": False, "problem": f"engine {name!r} cannot run: {exc}"}
    try:
        if name == "vllm":
            report["servers"] = _vllm_servers(engine, config)
            report["max_in_flight"] = config.vllm.max_in_flight
        report |= _read_known_page(engine)
    finally:
        engine.close()
    return report


def _vllm_servers(engine: Any, config: Config) -> list[dict[str, Any]]:
    servers = []
    for state in engine.pool.describe():
        facts = server_facts(state["url"], engine.model or "")
        facts["processor"] = state["processor"]
        facts["problem"] = state["processor_reason"] if state["processor"] is False else state["reason"]
        servers.append(facts)
    return servers


def _read_known_page(engine: Engine) -> dict[str, Any]:
    spec = engine.render_spec
    with tempfile.TemporaryDirectory(prefix="ocr-watcher-doctor-") as folder:
        page = render_known_page(Path(folder), spec.dpi, spec.image_format, spec.grayscale, spec.max_side_px)
        started = time.monotonic()
        try:
            output = engine.recognize(page)
        except PageError as exc:
            return {"ok": False, "problem": f"the page failed: {exc}", "recall": 0.0}
    recall = word_recall("\n".join(KNOWN_TEXT), output.markdown)
    result = {
        "recall": round(recall, 3),
        "seconds": round(time.monotonic() - started, 2),
        "read": output.markdown[:400],
        "warnings": output.warnings,
        "ok": recall >= MIN_RECALL,
    }
    if recall < MIN_RECALL:
        result["problem"] = (
            f"only {recall:.0%} of the known page's words came back (at least {MIN_RECALL:.0%} expected): "
            "the engine does not read; for vllm check the model, its weights and the vLLM release"
        )
    return result


def format_report(report: dict[str, Any]) -> str:
    lines = [f"engine: {report['engine']} (profile {report['profile']})"]
    for server in report.get("servers", []):
        lines.append(
            f"server {server['url']}: vLLM {server.get('version')}, max_model_len {server.get('max_model_len')}, "
            f"n-gram processor {'loaded' if server.get('processor') else server.get('processor')}"
            + (f" ({server['problem']})" if server.get("problem") else "")
        )
    if "max_in_flight" in report:
        lines.append(
            f"vllm.max_in_flight {report['max_in_flight']}: keep it near the servers' --max-num-seqs "
            "(vLLM's default: 1024 on H100/H200, 256 on smaller GPUs)"
        )
    if "recall" in report:
        lines.append(f"known page: {report['recall']:.0%} of its words read in {report.get('seconds', 0):g} s")
        lines.extend(f"warning: {warning}" for warning in report.get("warnings", []))
    if report.get("note"):
        lines.append(report["note"])
    lines.append(f"FAILED: {report['problem']}" if not report["ok"] else "OK")
    return "\n".join(lines)
