"""Batch API records and their OpenAI shapes: file and batch objects, output and error lines.

Pure values: the store builds them from its rows, the gateway renders them with ``to_openai``.
Timestamps are unix seconds (floats here, whole seconds in the OpenAI shapes).
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from scheduler.batches.states import BatchStatus, Fill
from scheduler.errors import InvalidRequest

WINDOW_24H = "24h"
"""The only ``completion_window`` OpenAI accepts; shorter ones are a Gearshift extension."""


class Purpose(enum.StrEnum):
    """File purposes this deployment stores: uploads for batches, and the files batches write."""

    BATCH = "batch"
    BATCH_OUTPUT = "batch_output"


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def new_request_id() -> str:
    """The ``id`` of one output or error line."""
    return f"batch_req_{secrets.token_hex(16)}"


_WINDOW = re.compile(r"^([1-9][0-9]{0,6})([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


def parse_window(text: object, *, minimum_s: float, maximum_s: float) -> float:
    """Seconds of a ``completion_window`` (``24h``, ``30m``, ``90s``) within the configured
    bounds; ``InvalidRequest`` naming ``completion_window`` otherwise."""
    match = _WINDOW.match(text) if isinstance(text, str) else None
    seconds = int(match[1]) * _UNIT_S[match[2]] if match else None
    if seconds is None or not minimum_s <= seconds <= maximum_s:
        raise InvalidRequest(
            f"`completion_window` must be `24h`, or on this deployment a duration like `90s`, "
            f"`30m` or `2h` between {minimum_s:g} and {maximum_s:g} seconds; got {text!r:.40}.",
            param="completion_window",
            code="invalid_value",
        )
    return float(seconds)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One stored file (an upload, or a batch's output or error file)."""

    id: str
    tenant: str
    filename: str
    purpose: Purpose
    bytes: int
    created_at: float

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose.value,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass(frozen=True, slots=True)
class BatchError:
    """One entry of a batch's ``errors.data``: why the input file failed validation."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None
    """1-based line of the input file; None for the file as a whole."""

    def to_openai(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True, slots=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0

    @property
    def unfinished(self) -> int:
        return self.total - self.completed - self.failed


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch as stored. ``stamps`` maps a status to when the batch entered it."""

    id: str
    tenant: str
    key_id: str | None
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: float
    expires_at: float
    model: str | None = None
    errors: tuple[BatchError, ...] = ()
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: RequestCounts = RequestCounts()
    metadata: Mapping[str, str] | None = None
    stamps: Mapping[BatchStatus, float] = field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        def stamp(status: BatchStatus) -> int | None:
            at = self.stamps.get(status)
            return None if at is None else int(at)

        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": (
                {"object": "list", "data": [error.to_openai() for error in self.errors]}
                if self.errors
                else None
            ),
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": stamp(BatchStatus.IN_PROGRESS),
            "expires_at": int(self.expires_at),
            "finalizing_at": stamp(BatchStatus.FINALIZING),
            "completed_at": stamp(BatchStatus.COMPLETED),
            "failed_at": stamp(BatchStatus.FAILED),
            "expired_at": stamp(BatchStatus.EXPIRED),
            "cancelling_at": stamp(BatchStatus.CANCELLING),
            "cancelled_at": stamp(BatchStatus.CANCELLED),
            "request_counts": {
                "total": self.counts.total,
                "completed": self.counts.completed,
                "failed": self.counts.failed,
            },
            "metadata": dict(self.metadata) if self.metadata is not None else None,
        }


@dataclass(frozen=True, slots=True)
class LineResponse:
    """What the engine answered for one line (any status; 2xx lines go to the output file)."""

    status_code: int
    request_id: str
    body: Any
    """The response's JSON body."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that got no engine response (expired, cancelled, attempts exhausted, ...)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class LineResult:
    """One line's outcome for ``Leases.record_results``: exactly one of response and error."""

    batch_id: str
    line_no: int
    response: LineResponse | None = None
    error: LineError | None = None

    def __post_init__(self) -> None:
        if (self.response is None) == (self.error is None):
            raise ValueError("a line result has exactly one of response and error")


FILL_ERRORS: Mapping[Fill, LineError] = {
    Fill.EXPIRED: LineError(
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    Fill.CANCELLED: LineError(
        "batch_cancelled", "This request was not executed because the batch was cancelled."
    ),
}
"""The error record of every line without a result when a batch expires or is cancelled."""


def attempts_exhausted(attempts: int) -> LineError:
    return LineError(
        "attempts_exhausted",
        f"This request was started {attempts} times without producing a result.",
    )


def result_line(
    request_id: str, custom_id: str, response: LineResponse | None, error: LineError | None
) -> dict[str, Any]:
    """One line of an output or error file, in OpenAI's shape."""
    return {
        "id": request_id,
        "custom_id": custom_id,
        "response": (
            None
            if response is None
            else {
                "status_code": response.status_code,
                "request_id": response.request_id,
                "body": response.body,
            }
        ),
        "error": None if error is None else {"code": error.code, "message": error.message},
    }


@dataclass(frozen=True, slots=True)
class LeasedLine:
    """One input line handed to a dispatcher worker until ``lease_expires_at``."""

    batch_id: str
    line_no: int
    custom_id: str
    endpoint: str
    model: str
    body: dict[str, Any]
    tenant: str
    key_id: str | None
    attempts: int
    """Times this line has been leased, this lease included."""
    lease_expires_at: float
    batch_expires_at: float

    @property
    def key(self) -> tuple[str, int]:
        return self.batch_id, self.line_no


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: OpenAI's ``{"object": "list", "data", "first_id", "last_id",
    "has_more"}``."""

    items: tuple[T, ...]
    has_more: bool
