"""Where the tuner's state lives between restarts: a Protocol and a JSON file (a ConfigMap in-cluster)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from inferno.errors import ConfigError, Problem


class TunerStore(Protocol):
    """Keeps the plain JSON-able state of :meth:`inferno.tuner.EKFTuner.state`."""

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when nothing was saved yet; ConfigError when it is unreadable."""
        ...

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the saved state."""
        ...


class JsonFileStore:
    """The state as one JSON file, replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        """The state in the file; None when the file does not exist."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError([Problem(str(self.path), "", f"cannot read: {exc.strerror or exc}")]) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([Problem(str(self.path), f"line {exc.lineno}", f"invalid JSON: {exc.msg}")]) from exc
        if not isinstance(data, dict):
            raise ConfigError([Problem(str(self.path), "", "expected a JSON object (the tuner state)")])
        return data

    def save(self, state: Mapping[str, Any]) -> None:
        """Write to a temporary file beside the target, then rename it over the target."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(state, handle, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
