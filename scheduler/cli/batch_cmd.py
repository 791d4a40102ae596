"""``gearshift batch submit|status|ls|cancel|results``: the OpenAI Batch API from the terminal.

Each command talks to a gateway's public endpoint (``/v1/files``, ``/v1/batches``) with the
official ``openai`` SDK, as any client would: the URL is the running serve's (session file)
unless ``--url`` names another, the key comes from ``--api-key`` or ``GEARSHIFT_API_KEY`` (needed
once the gateway requires keys). ``submit --wait`` follows the batch with a progress bar until
it ends, then says where its results are.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import openai
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scheduler.cli import session_file
from scheduler.cli.output import (
    OUTPUT_OPTION_HELP,
    OutputFormat,
    console_err,
    emit,
    fail,
    make_table,
)
from scheduler.errors import ControlPlaneError

app = typer.Typer(help="Submit and follow batches (the OpenAI Batch API).", no_args_is_help=True)

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
UNSUCCESSFUL = frozenset({"failed", "expired", "cancelled"})
API_KEY_ENV = "GEARSHIFT_API_KEY"

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The gateway's public URL (default: the running serve's, from its session file).",
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar=API_KEY_ENV, help="API key, when the gateway requires one."),
]
FormatOption = Annotated[OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)]


def openai_client(base_url: str, api_key: str | None) -> openai.OpenAI:
    """The SDK client for the gateway at ``base_url`` (tests replace this seam)."""
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key or "unused", max_retries=2)


def poll_pause(seconds: float) -> None:
    """Between two polls of ``submit --wait`` (tests replace this seam)."""
    time.sleep(seconds)


class _Target:
    """Where the commands send their requests, resolved lazily (``--url`` or session file)."""

    def __init__(self, url: str | None, api_key: str | None, session: Path) -> None:
        self.url = url
        self._api_key = api_key
        self._session = session

    def client(self) -> openai.OpenAI:
        if self.url is None:
            try:
                self.url = session_file.read(self._session).public_url
            except ControlPlaneError as exc:
                fail(f"{exc}; or pass --url")
        return openai_client(self.url.rstrip("/"), self._api_key)

    @contextlib.contextmanager
    def calls(self) -> Iterator[None]:
        """SDK errors as one line and an exit code (2: the request was refused as bad)."""
        try:
            yield
        except openai.APIConnectionError:
            fail(f"cannot reach the gateway at {self.url}: is `gearshift serve` running?")
        except openai.AuthenticationError as exc:
            fail(f"{_message(exc)} (pass --api-key or set {API_KEY_ENV})", code=2)
        except openai.APIStatusError as exc:
            fail(_message(exc), code=2 if exc.status_code < 500 else 1)


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {exc.status_code}: {message or exc.message}"


@app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help="JSONL input: one request per line.")],
    endpoint: Annotated[
        str, typer.Option(help="Endpoint every line calls (its `url`).")
    ] = "/v1/chat/completions",
    window: Annotated[
        str, typer.Option(help="completion_window: 24h, or on Gearshift e.g. 30m or 2h.")
    ] = "24h",
    metadata: Annotated[
        list[str] | None, typer.Option(help="A metadata pair k=v (repeat for more).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the batch with a progress bar until it ends.")
    ] = False,
    poll_interval: Annotated[float, typer.Option(hidden=True, min=0.01)] = 1.0,
    output: FormatOption = OutputFormat.TABLE,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    session: session_file.SessionOption = session_file.DEFAULT_PATH,
) -> None:
    """Upload FILE and create a batch from it.

    Example: gearshift batch submit requests.jsonl --metadata team=search --wait
    """
    pairs = _metadata(metadata or [])
    if not file.is_file():
        fail(f"no such file: {file}", code=2)
    target = _Target(url, api_key, session)
    client = target.client()
    with target.calls():
        with file.open("rb") as handle:
            uploaded = client.files.create(file=(file.name, handle), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint=cast(Any, endpoint),
            completion_window=cast(Any, window),
            metadata=pairs or None,
        )
        if wait and batch.status not in TERMINAL:
            batch = _follow(client, batch, poll_interval)
    document = batch.model_dump(mode="json")
    emit(document, output, lambda: _batch_tables(document))
    if batch.status == "failed":
        fail(f"batch {batch.id} failed validation: no line ran (errors above)")
    if wait:
        _say_where_results_are(document)
        if batch.status in UNSUCCESSFUL:
            raise typer.Exit(1)


@app.command("status")
def status(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    output: FormatOption = OutputFormat.TABLE,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    session: session_file.SessionOption = session_file.DEFAULT_PATH,
) -> None:
    """Show one batch: status, request counts, files, validation errors.

    Example: gearshift batch status batch_0123abcd -o json
    """
    target = _Target(url, api_key, session)
    client = target.client()
    with target.calls():
        document = client.batches.retrieve(batch_id).model_dump(mode="json")
    emit(document, output, lambda: _batch_tables(document))


@app.command("ls")
def list_batches(
    limit: Annotated[int, typer.Option(min=1, max=100, help="Most batches to show.")] = 20,
    after: Annotated[
        str | None, typer.Option(help="Show batches created before this batch id.")
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    session: session_file.SessionOption = session_file.DEFAULT_PATH,
) -> None:
    """List your batches, newest first.

    Example: gearshift batch ls --limit 5
    """
    target = _Target(url, api_key, session)
    client = target.client()
    with target.calls():
        page = client.batches.list(limit=limit, after=after or openai.omit)
        batches = [batch.model_dump(mode="json") for batch in page.data]
        has_more = bool(page.has_more)
    document = {"data": batches, "has_more": has_more}
    emit(document, output, lambda: _list_table(batches))
    if has_more and output is OutputFormat.TABLE:
        console_err.print(f"More: gearshift batch ls --after {batches[-1]['id']}", markup=False)


@app.command("cancel")
def cancel(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    output: FormatOption = OutputFormat.TABLE,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    session: session_file.SessionOption = session_file.DEFAULT_PATH,
) -> None:
    """Cancel a batch: lines in flight finish, the others go to the error file.

    Example: gearshift batch cancel batch_0123abcd
    """
    target = _Target(url, api_key, session)
    client = target.client()
    with target.calls():
        document = client.batches.cancel(batch_id).model_dump(mode="json")
    emit(document, output, lambda: _batch_tables(document))


@app.command("results")
def results(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    errors: Annotated[
        bool, typer.Option("--errors", help="The error file instead of the output file.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    session: session_file.SessionOption = session_file.DEFAULT_PATH,
) -> None:
    """Download a finished batch's output file (or with --errors its error file).

    One JSON line per request: custom_id, response (status_code, body) or error.

    Example: gearshift batch results batch_0123abcd -o results.jsonl
    """
    target = _Target(url, api_key, session)
    client = target.client()
    kind = "error" if errors else "output"
    with target.calls():
        batch = client.batches.retrieve(batch_id)
        if batch.status not in TERMINAL:
            fail(
                f"batch {batch_id} is {batch.status}: its files are written when it ends "
                f"(gearshift batch status {batch_id})"
            )
        file_id = batch.error_file_id if errors else batch.output_file_id
        if file_id is None:
            _no_file(batch_id, kind, batch.model_dump(mode="json"))
        data = client.files.content(file_id).read()
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    lines = data.count(b"\n")
    console_err.print(f"Wrote {lines} lines to {out}.", markup=False)


def _no_file(batch_id: str, kind: str, document: dict[str, Any]) -> NoReturn:
    counts = document.get("request_counts") or {}
    why = {
        "output": f"no line succeeded ({counts.get('failed', 0)} failed): try --errors",
        "error": "no line failed",
    }[kind]
    fail(f"batch {batch_id} ({document['status']}) has no {kind} file: {why}")


def _metadata(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"bad --metadata {pair!r}: use key=value", code=2)
        found[key] = value
    return found


def _follow(client: openai.OpenAI, batch: Any, poll_s: float) -> Any:
    """Poll until the batch ends, with a progress bar of its request counts on stderr."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console_err,
        transient=True,
    ) as progress:
        task = progress.add_task(batch.status, total=None, failed=0)
        try:
            while batch.status not in TERMINAL:
                counts = batch.request_counts
                if counts is not None:
                    progress.update(
                        task,
                        description=f"{batch.id} {batch.status}",
                        completed=counts.completed + counts.failed,
                        total=counts.total or None,
                        failed=counts.failed,
                    )
                poll_pause(poll_s)
                batch = client.batches.retrieve(batch.id)
        except KeyboardInterrupt:
            progress.stop()
            console_err.print(
                f"Stopped following; the batch keeps running (gearshift batch status {batch.id}).",
                markup=False,
            )
            raise typer.Exit(130) from None
    return batch


def _say_where_results_are(document: dict[str, Any]) -> None:
    batch_id = document["id"]
    if document.get("output_file_id"):
        console_err.print(
            f"Results: gearshift batch results {batch_id} -o results.jsonl "
            f"(file {document['output_file_id']})",
            markup=False,
        )
    if document.get("error_file_id"):
        console_err.print(
            f"Errors: gearshift batch results {batch_id} --errors "
            f"(file {document['error_file_id']})",
            markup=False,
        )


def _when(stamp: Any) -> str | None:
    if not isinstance(stamp, int | float):
        return None
    return datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


def _counts(document: dict[str, Any]) -> str:
    counts = document.get("request_counts") or {}
    return (
        f"{counts.get('completed', 0)} completed, {counts.get('failed', 0)} failed "
        f"of {counts.get('total', 0)}"
    )


def _batch_tables(document: dict[str, Any]) -> list[Table]:
    ended = next(
        (
            (name, _when(document.get(f"{name}_at")))
            for name in ("completed", "failed", "expired", "cancelled")
            if document.get(f"{name}_at")
        ),
        None,
    )
    rows: list[tuple[str, Any]] = [
        ("status", document["status"]),
        ("requests", _counts(document)),
        ("endpoint", document.get("endpoint")),
        ("model", document.get("model")),
        ("window", document.get("completion_window")),
        ("created", _when(document.get("created_at"))),
        ("expires", _when(document.get("expires_at"))),
        *([(ended[0], ended[1])] if ended else []),
        ("input file", document.get("input_file_id")),
        ("output file", document.get("output_file_id")),
        ("error file", document.get("error_file_id")),
    ]
    for key, value in sorted((document.get("metadata") or {}).items()):
        rows.append((f"metadata.{key}", value))
    tables = [make_table(f"Batch {document['id']}", ["field", "value"], rows)]
    errors = (document.get("errors") or {}).get("data") or []
    if errors:
        tables.append(
            make_table(
                f"Validation errors ({len(errors)})",
                ["line", "code", "param", "message"],
                [(e.get("line"), e.get("code"), e.get("param"), e.get("message")) for e in errors],
            )
        )
    return tables


def _list_table(batches: list[dict[str, Any]]) -> Table:
    table = make_table(
        f"Batches ({len(batches)})",
        ["id", "status", "created", "requests", "model", "endpoint"],
        [
            (
                b["id"],
                b["status"],
                _when(b.get("created_at")),
                _counts(b),
                b.get("model"),
                b.get("endpoint"),
            )
            for b in batches
        ],
    )
    table.columns[0].no_wrap = True  # ids are for copying
    return table
