"""One attempt of a delivery: a webhook's POST, or the profile's command. I/O only; what an answer
means and what comes next is policy.py's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass

import httpx

from .policy import Answer, body_bytes, headers, parse_retry_after
from .records import Pending

OUTPUT_TAIL_CHARS = 4000
ENV_PREFIX = "OCRW_"
# The daemon's own settings (API tokens, webhook secrets among them) are not the command's business.
_PRIVATE_ENV = "OCR_WATCHER_"


def post(client: httpx.Client, url: str, pending: Pending, secret: str | None, timeout: float) -> Answer:
    body = body_bytes(pending.body)
    sent = headers(pending.delivery_id, str(pending.body.get("event")), body, int(time.time()), secret)
    try:
        response = client.post(url, content=body, headers=sent, timeout=timeout)
    except httpx.HTTPError as exc:  # refused, reset, timed out, bad address: the receiver's trouble
        return Answer(error=f"{type(exc).__name__}: {exc}"[:500])
    return Answer(status=response.status_code, retry_after=parse_retry_after(response.headers.get("Retry-After")))


@dataclass(frozen=True)
class CommandRun:
    outcome: str  # "ok", "failed" (non-zero exit, or it could not start) or "timeout"
    exit_code: int | None
    output_tail: str
    seconds: float


def command_env(pending: Pending) -> dict[str, str]:
    body = pending.body
    env = {name: value for name, value in os.environ.items() if not name.startswith(_PRIVATE_ENV)}
    error = body.get("error") or {}
    env.update(
        {
            f"{ENV_PREFIX}DELIVERY_ID": pending.delivery_id,
            f"{ENV_PREFIX}EVENT": str(body.get("event", "")),
            f"{ENV_PREFIX}JOB_ID": pending.job_id,
            f"{ENV_PREFIX}JOB_STATUS": str(body.get("status", "")),
            f"{ENV_PREFIX}JOB_DIR": str(body.get("job_dir", "")),
            f"{ENV_PREFIX}SOURCE_NAME": str(body.get("source_name", "")),
            f"{ENV_PREFIX}PROFILE": pending.profile,
            f"{ENV_PREFIX}PAGES_TOTAL": str(body.get("pages_total") or 0),
            f"{ENV_PREFIX}PAGES_FAILED": str(body.get("pages_failed") or 0),
            f"{ENV_PREFIX}RESULT_MD": str((body.get("files") or {}).get("markdown", "")),
            f"{ENV_PREFIX}ERROR": str(error.get("message", "")) if isinstance(error, dict) else "",
            f"{ENV_PREFIX}BODY": json.dumps(body, sort_keys=True),
        }
    )
    return env


def run_command(argv: list[str], pending: Pending, timeout: float) -> CommandRun:
    """Run it in a session of its own, so that a timeout ends what it started too."""
    started = time.monotonic()
    try:
        child = subprocess.Popen(
            argv,
            env=command_env(pending),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return CommandRun("failed", None, f"could not start {argv[0]}: {exc}", 0.0)
    try:
        output, _ = child.communicate(timeout=timeout)
        outcome = "ok" if child.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output, _ = child.communicate()
        outcome = "timeout"
    tail = output.decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:]
    return CommandRun(outcome, child.returncode, tail, time.monotonic() - started)
