"""The log format of the daemon's processes (the daemon, its delivery worker): one line each, on stderr."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str) -> None:
    # journald adds its own timestamps; a terminal or a file needs ours.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # its start/stop lines repeat ours
    # httpx logs every request at INFO: a line per page sent to vLLM would bury the journal.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level.lower() == "debug" else logging.WARNING)
