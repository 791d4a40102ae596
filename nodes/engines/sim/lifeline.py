"""Ends an engine whose owner is gone so engines never outlive the replica actor owning them."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a dead process nobody has reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no procfs here (not Linux), or it just went away: trust kill(0)
    state = stat.rpartition(")")[2].split()[:1]
    return state in (["Z"], ["X"])


async def watch_owner(
    owner_pid: int,
    original_ppid: int,
    on_gone: Callable[[], None],
    *,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Call ``on_gone`` once, when ``owner_pid`` has died or this process has been re-parented.

    Re-parenting (``os.getppid()`` no longer ``original_ppid``) means the process that started us
    died, even where the owner's pid has already been reused. Polls every ``poll_seconds``.
    """
    while os.getppid() == original_ppid and process_alive(owner_pid):
        await asyncio.sleep(poll_seconds)
    log.warning("owner process %d is gone; shutting down", owner_pid)
    on_gone()
