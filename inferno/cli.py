"""The ``inferno`` command line: each command parses options, calls one layer and prints a table or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from inferno import __version__
from inferno.config import load_settings
from inferno.errors import InfernoError
from inferno.logs import configure
from inferno.spec import SCHEMAS
from inferno.system import LoadedSystem, load_system

app = typer.Typer(
    name="inferno",
    help="Cost-aware, SLO-driven autoscaling of LLM inference servers on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(error: InfernoError) -> NoReturn:
    """Print an error for a person (no traceback) and exit 1."""
    lines = str(error).splitlines() or [type(error).__name__]
    err.print(f"error: {lines[0]}", markup=False, highlight=False)
    for line in lines[1:]:
        err.print(f"  {line}", markup=False, highlight=False)
    raise typer.Exit(1)


def print_json(value: object) -> None:
    """JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


@app.callback()
def _root(
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
) -> None:
    try:
        settings = load_settings(log_level=log_level)
    except InfernoError as exc:
        fail(exc)
    configure(settings.log_level, settings.log_format)


@app.command()
def version() -> None:
    """Print the inferno version."""
    out.print(f"inferno {__version__}", highlight=False)


def _summary(loaded: LoadedSystem) -> str:
    spec = loaded.spec
    cards = sum(c.count for c in spec.capacity_data.count)
    models = {m.name for m in spec.model_data.models}
    return (
        f"{len(spec.accelerator_data.accelerators)} accelerators, "
        f"{len(spec.capacity_data.count)} card types ({cards} cards), "
        f"{len(models)} models ({len(spec.model_data.models)} performance rows), "
        f"{len(spec.service_class_data.service_classes)} service classes, "
        f"{len(spec.server_data.servers)} servers"
    )


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="System directory, system-data.json, or inferno YAML/JSON.")],
) -> None:
    """Check a system; exit 0 when valid, 1 with every problem listed otherwise."""
    try:
        loaded = load_system(path)
    except InfernoError as exc:
        problems = getattr(exc, "problems", ())
        err.print(f"invalid: {path} ({len(problems) or 1} problem(s))", markup=False, highlight=False)
        for line in str(exc).splitlines():
            err.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    out.print(f"valid: {path}: {_summary(loaded)}", markup=False, highlight=False)


@app.command()
def schema(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SCHEMAS)}.")] = "system",
    write: Annotated[
        Path | None, typer.Option(help="Write every schema as NAME.schema.json into this directory.")
    ] = None,
) -> None:
    """Print the JSON Schema of an input format (or write all of them)."""
    if write is not None:
        write.mkdir(parents=True, exist_ok=True)
        for key in SCHEMAS:
            (write / f"{key}.schema.json").write_text(json.dumps(json_schema(key), indent=2) + "\n")
        out.print(f"wrote {len(SCHEMAS)} schemas to {write}", markup=False, highlight=False)
        return
    if name not in SCHEMAS:
        err.print(f"error: unknown schema {name!r}; choose one of: {', '.join(SCHEMAS)}", markup=False)
        raise typer.Exit(1)
    print_json(json_schema(name))


def json_schema(name: str) -> dict[str, object]:
    """The JSON Schema of the input format ``name`` (with $schema and $id set)."""
    body = SCHEMAS[name].model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://inferno.dev/schema/{name}.schema.json",
        **body,
    }


def main() -> None:
    """Console-script entry point."""
    app()
