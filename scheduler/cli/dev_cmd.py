"""``gearshift dev``: developer tools, e.g. a tiny random-weight model real vLLM can serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.output import console_err, fail
from scheduler.errors import ConfigError

DEFAULT_TINY_MODEL = Path("~/.cache/gearshift/tiny-llama")

app = typer.Typer(help="Developer tools.", no_args_is_help=True)


@app.command("tiny-model")
def tiny_model(
    directory: Annotated[
        Path, typer.Argument(help="Where to write the checkpoint.")
    ] = DEFAULT_TINY_MODEL,
    force: Annotated[bool, typer.Option(help="Overwrite a directory that has files.")] = False,
) -> None:
    """Write a tiny random-weight Llama (2 layers, hidden 256) and its tokenizer.

    Real vLLM (the CPU build, `gearshift[cpu]`) loads it in about 35 s; it answers with random
    text. examples/cpu-vllm.yaml serves it from the default directory.

    Example: gearshift dev tiny-model
    """
    from nodes.engines.tiny_model import write_tiny_model

    target = directory.expanduser()
    if target.exists() and any(target.iterdir()) and not force:
        if (target / "config.json").is_file() and (target / "gearshift-tiny-model.json").is_file():
            console_err.print(f"{target} already holds a tiny model (use --force to rewrite it)")
            return
        fail(f"{target} is not empty; pass --force to write into it", code=2)
    try:
        with console_err.status(f"Writing a tiny random-weight Llama to {target} ..."):
            write_tiny_model(target)
    except ConfigError as exc:
        fail(str(exc), code=2)
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}", code=1)
    typer.echo(str(target))
