"""Job ownership as lease files: `<job>/.lease-N` is created exclusively by the one process that
owns the job at epoch N (DESIGN.md section 2); the highest epoch owns it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

LeasePath = Callable[[int], Path]  # epoch -> that epoch's lease file in the job folder


def take_lease(lease: LeasePath, epoch: int) -> bool:
    """Become the owner at `epoch`: True for exactly one caller per epoch."""
    try:
        fd = os.open(lease(epoch), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def take_next_lease(lease: LeasePath, epoch: int, *, abandoned_after: float, max_steps: int = 16) -> list[int]:
    """Own the job at the first free epoch after `epoch`, stepping over leases a crash abandoned.

    A takeover writes metadata.json right after taking its lease; a lease older than
    `abandoned_after` seconds whose taker never did so belongs to a process that died in between,
    and would otherwise block the job for good. Returns the epochs touched, ours last; empty when
    another process holds a live lease (or the folder is gone).
    """
    touched: list[int] = []
    for candidate in range(epoch + 1, epoch + 1 + max_steps):
        try:
            taken = take_lease(lease, candidate)
        except FileNotFoundError:
            return []
        touched.append(candidate)
        if taken:
            return touched
        try:
            age = time.time() - lease(candidate).stat().st_mtime
        except FileNotFoundError:
            return []
        if age <= abandoned_after:
            return []
    return []


def touch_lease(lease: LeasePath, epoch: int) -> None:
    """Say that the lease at `epoch` is held, while its metadata.json cannot be written yet: a lease
    left untouched for a whole heartbeat lease is stepped over (take_next_lease)."""
    try:
        os.utime(lease(epoch))
    except OSError:
        pass  # no lease file (epoch 1), or a read-only outbox: then it ages, and may be stepped over
