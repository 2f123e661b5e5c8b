"""Replay of recorded observations (one JSON object per line) through a fresh tuner: `inferno tune`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from inferno.errors import ConfigError, Problem
from inferno.queueing import DEFAULT_QUEUE_MODEL, make_queue_model
from inferno.spec import DEFAULT_MAX_BATCHED_TOKENS
from inferno.tuner.observation import Observation, key_name
from inferno.tuner.settings import TunerSettings
from inferno.tuner.tuner import EKFTuner, Seed


def read_observations(text: str, source: str) -> list[tuple[int, Observation]]:
    """(cycle, observation) of every non-blank line; ConfigError naming the line of every malformed one.

    A line is an observation's fields plus ``"cycle": int``, or a line of the daemon's decision log (its
    ``observations``), so a production run replays as it ran. Well-formed but unusable values (NaN, a zero
    rate, a negative latency) are kept: the tuner skips and counts them.
    """
    rows: list[tuple[int, Observation]] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(source, where, f"invalid JSON: {exc.msg}"))
            continue
        if isinstance(data, dict) and isinstance(data.get("observations"), list):  # a decision-log line
            for index, entry in enumerate(data["observations"]):
                rows += _row(entry, source, f"{where}: observations.{index}", problems)
            continue
        rows += _row(data, source, where, problems)
    if problems:
        raise ConfigError(problems)
    return rows


def _row(data: object, source: str, where: str, problems: list[Problem]) -> list[tuple[int, Observation]]:
    """The (cycle, observation) of one observation object, or none with its problems added to ``problems``."""
    if not isinstance(data, dict):
        problems.append(Problem(source, where, "expected a JSON object"))
        return []
    data = dict(data)
    cycle = data.pop("cycle", None)
    if not isinstance(cycle, int) or isinstance(cycle, bool):
        problems.append(Problem(source, f"{where}: cycle", f"expected an integer (got {cycle!r})"))
        return []
    try:
        return [(cycle, Observation.from_dict(data))]
    except ConfigError as exc:
        problems += [Problem(source, f"{where}: {p.location}", p.message) for p in exc.problems]
        return []


def replay(
    observations: Sequence[tuple[int, Observation]],
    queue_model: str = DEFAULT_QUEUE_MODEL,
    init: Mapping[str, float] | None = None,
    *,
    max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS,
    settings: TunerSettings | None = None,
) -> dict[str, Any]:
    """Feed the observations cycle by cycle (ascending) to a new tuner seeded with ``init`` for every pair.

    Returns ``{"queue_model", "estimates": {"MODEL/ACCELERATOR": {...}}, "trajectory": [...], "skipped"}``:
    the final estimate of each pair and, per cycle and pair that had observations, its report.
    ModelError when ``init`` is not a valid parameter set of ``queue_model``.
    """
    seed = None
    if init is not None:
        model = make_queue_model(queue_model, init, max_batched_tokens=max_batched_tokens)
        seed = Seed(model.params, max_batched_tokens)
    seeds = {obs.key: seed for _, obs in observations if seed is not None}
    tuner = EKFTuner(queue_model, settings, seeds)
    trajectory = []
    for cycle in sorted({c for c, _ in observations}):
        report = tuner.update([obs for c, obs in observations if c == cycle])
        trajectory += [{"cycle": cycle, **k.to_dict()} for k in report.keys if k.outcomes]
    estimates = {
        key_name(k.key): {
            "params": k.params,
            "configured": k.configured,
            "tuned": k.tuned,
            "phase": k.phase,
            "identifiable": bool(k.identifiable),
            "updates": k.counters.updates,
            "rejected": k.counters.rejected,
            "skipped": k.counters.skipped,
            "fits": k.counters.fits,
        }
        for k in tuner.summary()
    }
    return {"queue_model": queue_model, "estimates": estimates, "trajectory": trajectory, "skipped": tuner.skipped}
