"""Validate a batch input file line by line, before any line runs (pure: bytes in, errors out).

A line is ``{"custom_id", "method": "POST", "url", "body"}``. Each bad line yields one
``BatchError`` naming its 1-based line number: bad JSON, an unknown key, a missing or
duplicate ``custom_id``, a method other than POST, a ``url`` other than the batch's endpoint,
``stream: true``, a model other than the first line's, or a body the gateway itself would
refuse (``BodyCheck``, the gateway's own validator, injected). Whole-file errors (too large,
too many lines, empty) carry no line. Memory stays at one line plus the ``custom_id``s seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from scheduler.batches.objects import BatchError
from scheduler.errors import RequestError

BodyCheck = Callable[[str, Mapping[str, Any]], str]
"""``(endpoint, body) -> model``: the gateway's validation of one request body for the endpoint
(allowlist, caps, served model, context length, size), raising ``RequestError`` as it would
for a request sent to the endpoint directly."""

MAX_REPORTED_ERRORS = 100
"""Validation stops after this many errors (the file has failed; the list is a sample)."""

CUSTOM_ID_MAX_CHARS = 512
LINE_KEYS = ("custom_id", "method", "url", "body")


@dataclass(frozen=True, slots=True)
class InputLine:
    """One valid line: what the dispatcher will send."""

    line_no: int
    custom_id: str
    body: dict[str, Any]


class _LineInvalid(Exception):
    def __init__(self, error: BatchError) -> None:
        super().__init__(error.message)
        self.error = error


def _reject(line_no: int, code: str, message: str, param: str | None = None) -> NoReturn:
    raise _LineInvalid(BatchError(code, message, param, line_no))


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def read_line(line_no: int, raw: bytes, endpoint: str) -> InputLine:
    """The line's structure checked (not its body's fields); ``_LineInvalid`` otherwise."""
    try:
        item = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError):
        _reject(line_no, "invalid_json_line", "This line is not parseable as valid JSON.")
    if not isinstance(item, dict):
        _reject(line_no, "invalid_json_line", "Each line must be a JSON object.")
    for key in item:
        if key not in LINE_KEYS:
            _reject(
                line_no, "unknown_parameter", f"Unrecognized key in a batch line: {key[:64]}", key
            )
    for key in LINE_KEYS:
        if key not in item:
            _reject(line_no, "missing_required_parameter", f"Missing required key `{key}`.", key)
    custom_id = item["custom_id"]
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= CUSTOM_ID_MAX_CHARS:
        _reject(
            line_no,
            "invalid_value",
            f"`custom_id` must be a non-empty string of at most {CUSTOM_ID_MAX_CHARS} characters.",
            "custom_id",
        )
    if item["method"] != "POST":
        _reject(line_no, "invalid_method", "`method` must be POST.", "method")
    if item["url"] != endpoint:
        _reject(
            line_no,
            "invalid_url",
            f"The url {str(item['url'])[:100]!r} does not match the batch's endpoint {endpoint}.",
            "url",
        )
    if not isinstance(item["body"], dict):
        _reject(line_no, "invalid_value", "`body` must be a JSON object.", "body")
    return InputLine(line_no, custom_id, item["body"])


class InputValidator:
    """Feed the file's lines in order, then read ``errors``; stops early once ``done``."""

    def __init__(self, endpoint: str, check_body: BodyCheck, *, max_lines: int) -> None:
        self._endpoint = endpoint
        self._check_body = check_body
        self._max_lines = max_lines
        self._seen: set[str] = set()
        self._errors: list[BatchError] = []
        self.lines = 0
        """Non-blank lines fed so far."""
        self.model: str | None = None
        """The first valid line's model (every line must use it)."""
        self._model_line = 0
        self._over_limit = False

    @property
    def done(self) -> bool:
        """Nothing more to learn: too many errors, or too many lines."""
        return self._over_limit or len(self._errors) >= MAX_REPORTED_ERRORS

    @property
    def errors(self) -> tuple[BatchError, ...]:
        return tuple(self._errors)

    def feed(self, line_no: int, raw: bytes) -> InputLine | None:
        """Check one physical line (1-based); the valid line, or None (blank or invalid)."""
        if self.done or not raw.strip():
            return None
        self.lines += 1
        if self.lines > self._max_lines:
            self._over_limit = True
            self._errors.append(
                BatchError(
                    "too_many_requests",
                    f"The input file has more than {self._max_lines} requests.",
                    None,
                    line_no,
                )
            )
            return None
        try:
            return self._check(line_no, raw)
        except _LineInvalid as invalid:
            self._errors.append(invalid.error)
            return None

    def finish(self) -> tuple[BatchError, ...]:
        """All errors, with one for a file without a single request."""
        if self.lines == 0 and not self._errors:
            self._errors.append(BatchError("empty_file", "The input file has no requests."))
        return self.errors

    def _check(self, line_no: int, raw: bytes) -> InputLine:
        line = read_line(line_no, raw, self._endpoint)
        if line.custom_id in self._seen:
            _reject(
                line_no,
                "duplicate_custom_id",
                f"The custom_id {line.custom_id[:100]!r} is used by an earlier line; each "
                "request of a batch needs its own.",
                "custom_id",
            )
        self._seen.add(line.custom_id)
        if line.body.get("stream") is True:
            _reject(
                line_no,
                "stream_not_supported",
                "Batch requests cannot stream: remove `stream` or set it to false.",
                "body.stream",
            )
        model = line.body.get("model")
        if self.model is not None and isinstance(model, str) and model != self.model:
            _reject(
                line_no,
                "mixed_models",
                f"Every line of a batch must use the same model: line {self._model_line} uses "
                f"{self.model[:100]!r}, this line {model[:100]!r}.",
                "body.model",
            )
        try:
            checked = self._check_body(self._endpoint, line.body)
        except RequestError as exc:
            param = f"body.{exc.param}" if exc.param else "body"
            _reject(line_no, exc.code or "invalid_request", exc.message, param)
        if self.model is None:
            self.model, self._model_line = checked, line_no
        return line


def validate_input(
    lines: Iterable[bytes],
    *,
    size: int,
    endpoint: str,
    check_body: BodyCheck,
    max_bytes: int,
    max_lines: int,
) -> tuple[tuple[BatchError, ...], str | None, int]:
    """``(errors, model, requests)`` of a whole file of ``size`` bytes (lines read lazily)."""
    if size > max_bytes:
        error = BatchError(
            "file_too_large", f"The input file is {size} bytes; the limit is {max_bytes}."
        )
        return (error,), None, 0
    validator = InputValidator(endpoint, check_body, max_lines=max_lines)
    for line_no, raw in enumerate(lines, start=1):
        validator.feed(line_no, raw)
        if validator.done:
            break
    return validator.finish(), validator.model, validator.lines


def input_lines(lines: Iterable[bytes], endpoint: str) -> Iterator[InputLine]:
    """The lines of a file that passed ``validate_input`` (blank lines skipped)."""
    for line_no, raw in enumerate(lines, start=1):
        if raw.strip():
            yield read_line(line_no, raw, endpoint)
