"""What a real vLLM server's own /metrics say, as the tier's tests read them."""

from __future__ import annotations

import re

import requests


def metrics(base: str) -> dict[str, float]:
    """vllm:* samples by name and labels, e.g. 'vllm:request_success_total{finished_reason="length"}'."""
    text = requests.get(base + "/metrics", timeout=30).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(vllm:[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if match:
            labels = re.sub(r',?(engine|model_name)="[^"]*"', "", match.group(2) or "").replace("{,", "{")
            samples[match.group(1) + ("" if labels in ("", "{}") else labels)] = float(match.group(3))
    return samples


def requests_succeeded(samples: dict[str, float]) -> float:
    """vllm:request_success_total over every finished_reason."""
    return sum(value for name, value in samples.items() if name.startswith("vllm:request_success_total"))
