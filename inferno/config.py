"""Settings of the daemon: one typed object, filled from defaults, a config file and ``INFERNO_*`` env vars.

This module is the only reader of the process environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferno.errors import ConfigError, Problem

ENV_PREFIX = "INFERNO_"


class Settings(BaseSettings):
    """Every setting of inferno; each is also the env var ``INFERNO_<NAME>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    system: Path | None = Field(None, description="System file or directory (accelerators, models, classes, ...).")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log format; auto = JSON unless stderr is a terminal."
    )


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit ``overrides`` (e.g. CLI options) winning.

    Raises ConfigError naming the env var of each bad value.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            name = ".".join(str(p) for p in err["loc"])
            source = "option --" + name.replace("_", "-") if name in given else f"{ENV_PREFIX}{name.upper()}"
            problems.append(Problem("settings", source, err["msg"]))
        raise ConfigError(problems) from exc
