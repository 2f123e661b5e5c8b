"""Error types of inferno.

Every error says what to do next: a *transient* error (Prometheus down, API
server conflict) means "skip this cycle, the next tick retries"; a permanent one
(a bad configuration) means "fix the input", and names the file and field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and what is wrong."""

    file: str
    location: str
    message: str

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.location) if part)
        return f"{where}: {self.message}" if where else self.message


class InfernoError(Exception):
    """Base of all errors inferno raises on purpose."""

    transient: bool = False


class ConfigError(InfernoError):
    """Invalid configuration or input data; carries every problem found."""

    def __init__(self, problems: Sequence[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(file="", location="", message=problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def merge(cls, errors: Iterable[ConfigError]) -> ConfigError:
        """Join the problems of several errors into one error."""
        return cls([p for e in errors for p in e.problems])


class ModelError(InfernoError):
    """A queue model was given parameters or inputs it cannot evaluate."""


class CollectError(InfernoError):
    """Metrics or cluster state could not be read; skip the cycle."""

    transient = True


class SolveError(InfernoError):
    """The optimizer could not produce a plan."""


class ActuateError(InfernoError):
    """Writing to the cluster failed; nothing is recorded as applied."""

    transient = True
