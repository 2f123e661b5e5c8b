"""structlog set-up: JSON lines when stderr is not a terminal, a console renderer otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (it may be swapped, e.g. by test runners)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog once; ``fmt`` is ``auto``, ``json`` or ``console``."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A bound logger carrying the module name."""
    return structlog.get_logger(name)


def bind_cycle(cycle_id: str) -> None:
    """Attach ``cycle_id`` to every log line until :func:`unbind_cycle`."""
    structlog.contextvars.bind_contextvars(cycle_id=cycle_id)


def unbind_cycle() -> None:
    """Remove the cycle id from the log context."""
    structlog.contextvars.unbind_contextvars("cycle_id")
