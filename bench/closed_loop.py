"""Closed-loop benchmark: every built-in scenario with every policy of ``inferno simulate``.

Prints one JSON row per (scenario, policy): SLO attainment overall and per class, cost (the system's
cost unit x hours), scaling actions, restarts, wall seconds, and for the inferno policy the control
cycle's mean/p95/max milliseconds.

    .venv/bin/python bench/closed_loop.py [--scenario config/scenarios/smoke.yaml ...] [--policy inferno ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inferno.logs import configure
from inferno.sim.closedloop import POLICIES, load_scenario, simulate_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "config" / "scenarios"
BUILT_IN = ("smoke.yaml", "capacity-short.yaml", "hetero-diurnal.yaml")


def main() -> None:
    """Run the scenarios and policies asked for (default: all), one JSON row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", type=Path, help="Scenario file (repeatable).")
    parser.add_argument("--policy", action="append", choices=list(POLICIES), help="Policy (repeatable).")
    args = parser.parse_args()
    configure("warning")
    for path in args.scenario or [SCENARIOS / name for name in BUILT_IN]:
        loaded = load_scenario(path)
        for policy in args.policy or list(POLICIES):
            result = simulate_scenario(loaded, policy)
            data = result.to_dict()
            row = {
                "scenario": data["scenario"],
                "policy": policy,
                "attainment": round(result.overall, 4),
                "per_class": {k: round(v, 4) for k, v in result.per_class.items()},
                "cost": round(result.cost, 1),
                "actions": result.actions,
                "restarts": result.restarts,
                "wall_s": round(result.wall_s, 2),
            }
            if "cycle_ms" in data:
                row["cycle_ms"] = {k: round(v, 1) for k, v in data["cycle_ms"].items()}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
