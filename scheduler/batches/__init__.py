"""The OpenAI Batch API's core: batch life cycle, input validation and the durable store.

Pure: ``states`` (statuses, transitions with reasons, ``settle``), ``validation`` (an input
file's lines → errors with line numbers; the gateway's body check is injected) and
``objects`` (records and their OpenAI shapes). Edges: ``disk`` (atomic file bodies),
``sqlite`` (schema, WAL, transactions), ``store`` (``BatchStore``: files and batches per
tenant), ``leases`` (the dispatcher's leases and exactly-once results) and ``finalize``
(output and error files, terminal statuses). Nothing here knows about HTTP.
"""

from __future__ import annotations

from scheduler.batches.finalize import Finalizer
from scheduler.batches.leases import Leases, LineKey
from scheduler.batches.objects import (
    BatchError,
    BatchRecord,
    FileRecord,
    LeasedLine,
    LineError,
    LineResponse,
    LineResult,
    Page,
    Purpose,
    RequestCounts,
    parse_window,
)
from scheduler.batches.states import BatchStatus, IllegalTransition
from scheduler.batches.store import BatchStore
from scheduler.batches.validation import BodyCheck
from scheduler.errors import ObjectNotFound
from scheduler.tenants import OPEN_TENANT

__all__ = [
    "OPEN_TENANT",
    "BatchError",
    "BatchRecord",
    "BatchStatus",
    "BatchStore",
    "BodyCheck",
    "FileRecord",
    "Finalizer",
    "IllegalTransition",
    "LeasedLine",
    "Leases",
    "LineError",
    "LineKey",
    "LineResponse",
    "LineResult",
    "ObjectNotFound",
    "Page",
    "Purpose",
    "RequestCounts",
    "parse_window",
]
