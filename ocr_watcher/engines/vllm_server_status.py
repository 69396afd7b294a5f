"""The managed vLLM server's decisions, pure: the restart back-off, what a line of vLLM's output says
about the n-gram logits processor (and at which level to log it), and what health() answers in each
phase. The supervisor that acts on them is vllm_server.py.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import Enum

LOGITS_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"


# -- back-off -------------------------------------------------------------------------------------
def backoff_delay(failures: int, initial: float = 5.0, maximum: float = 300.0) -> float:
    """Seconds to wait before restart number `failures` (1-based): initial, 2x, 4x, ... capped."""
    if failures <= 0:
        return 0.0
    return min(maximum, initial * 2 ** min(failures - 1, 30))


def backoff_schedule(count: int, initial: float = 5.0, maximum: float = 300.0) -> list[float]:
    return [backoff_delay(n, initial, maximum) for n in range(1, count + 1)]


# -- reading vLLM's log ---------------------------------------------------------------------------
class ProcessorSignal(Enum):
    CONFIGURED = "configured"  # the arguments line names the processor
    MISSING = "missing"  # the arguments line does not name it
    FAILED = "failed"  # an error line names it (import error, rejected by the model runner, ...)


_ERROR_WORDS = re.compile(r"error|exception|traceback|reject|not supported|unsupported|cannot|failed", re.IGNORECASE)
_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")


def processor_signal(line: str, processor: str = LOGITS_PROCESSOR) -> ProcessorSignal | None:
    """What one line of vLLM's output says about the logits processor, if anything."""
    class_name = processor.rpartition(":")[2] or processor
    if "non-default args:" in line:
        return ProcessorSignal.CONFIGURED if class_name in line else ProcessorSignal.MISSING
    if class_name in line and _ERROR_WORDS.search(line):
        return ProcessorSignal.FAILED
    return None


def line_level(line: str) -> int:
    """The logging level for one forwarded line: vLLM's own level word, else INFO."""
    match = _LEVEL.search(line[:80])
    if match is None:
        return logging.ERROR if line.startswith(("Traceback", "RuntimeError", "ValueError")) else logging.INFO
    return logging.getLevelName(match.group(1))


# -- what health() says ---------------------------------------------------------------------------
class Phase(Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    UP = "up"
    UNRESPONSIVE = "unresponsive"
    WAITING = "waiting"  # between a failure and the next start


@dataclass
class State:
    phase: Phase = Phase.STOPPED
    since: float = 0.0  # clock() when the phase began
    processor: ProcessorSignal | None = None
    processor_line: str = ""
    reason: str = ""  # why the last run ended, shown while WAITING
    retry_at: float = 0.0


def health_text(state: State, now: float, processor: str = LOGITS_PROCESSOR) -> str | None:
    """None when the server is up with the logits processor, else why not (pure)."""
    if state.phase is Phase.STOPPED:
        return "vLLM is not running"
    if state.phase is Phase.STARTING:
        return f"vLLM is starting ({now - state.since:.0f} s)"
    if state.phase is Phase.WAITING:
        return f"{state.reason}; restarting in {max(0.0, state.retry_at - now):.0f} s"
    if state.phase is Phase.UNRESPONSIVE:
        return f"vLLM does not answer /health ({now - state.since:.0f} s)"
    if state.processor is ProcessorSignal.CONFIGURED:
        return None
    if state.processor is ProcessorSignal.FAILED:
        return f"logits processor not loaded: {state.processor_line}"
    if state.processor is ProcessorSignal.MISSING:
        return f"logits processor not loaded: vLLM's arguments do not include {processor}"
    return f"logits processor not loaded: vLLM did not log its arguments naming {processor}"
