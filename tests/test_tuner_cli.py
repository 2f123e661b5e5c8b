"""Tests of ``inferno tune``: recorded observations replayed through the tuner from the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferno.cli import app
from inferno.queueing import Workload, make_queue_model

runner = CliRunner()
TRUE = {"alpha": 12.0, "beta": 0.05, "gamma": 5e-4}


def lines(cycles: int) -> list[dict[str, object]]:
    """Observations of two replicas per cycle of the true model, at loads and mixes that vary, 2% noise."""
    model = make_queue_model("iteration", TRUE)
    rows = []
    for cycle in range(cycles):
        for replica, (in_tokens, out_tokens, load) in enumerate(
            ((256, 256, 0.2 + 0.1 * (cycle % 5)), (1024, 128, 0.6 - 0.1 * (cycle % 4)), (512, 512, 0.4))
        ):
            workload = Workload(in_tokens, out_tokens)
            rate = load * model.max_rate_rps(workload, 32, 320)
            metrics = model.analyze(rate, workload, 32, 320)
            noise = 1 + 0.02 * math.sin(3 * cycle + replica)
            rows.append(
                {
                    "cycle": cycle,
                    "model": "llama",
                    "accelerator": "H100",
                    "replica": f"pod-{replica}",
                    "rate_rps": rate,
                    "max_batch": 32,
                    "max_queue": 320,
                    "in_tokens": in_tokens,
                    "out_tokens": out_tokens,
                    "ttft_ms": metrics.ttft_ms * noise,
                    "itl_ms": metrics.itl_ms / noise,
                }
            )
    return rows


def write(path: Path, rows: list[dict[str, object]], extra: tuple[str, ...] = ()) -> Path:
    """Write ``rows`` as JSON lines (then the raw ``extra`` lines) and return the path."""
    path.write_text("\n".join([*(json.dumps(r) for r in rows), *extra]) + "\n")
    return path


def test_tune_replays_observations_and_prints_json(tmp_path: Path) -> None:
    """--json gives the final estimate per pair (close to the truth) and one trajectory entry per cycle."""
    path = write(tmp_path / "obs.jsonl", lines(12))
    result = runner.invoke(app, ["tune", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    estimate = data["estimates"]["llama/H100"]
    assert estimate["tuned"] and estimate["identifiable"] and estimate["phase"] == "tracking"
    assert estimate["updates"] >= 30 and estimate["rejected"] == 0 and estimate["configured"] is None
    assert estimate["params"]["alpha"] == pytest.approx(12.0, rel=0.03)
    assert estimate["params"]["beta"] == pytest.approx(0.05, rel=0.03)
    assert [t["cycle"] for t in data["trajectory"]] == list(range(12))
    assert data["trajectory"][0]["notes"][0].startswith("collecting")
    assert data["queue_model"] == "iteration" and data["skipped"] == 0


def test_tune_with_init_prints_tables(tmp_path: Path) -> None:
    """--init seeds every pair; the table output shows the trajectory and configured vs tuned values."""
    path = write(tmp_path / "obs.jsonl", lines(6))
    result = runner.invoke(app, ["tune", str(path), "--init", "alpha=10,beta=0.04,gamma=0.001"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "tuner trajectory (iteration)" in result.output and "final estimates" in result.output
    assert "llama/H100" in result.output and "tracking" in result.output
    as_json = json.loads(
        runner.invoke(app, ["tune", str(path), "--init", "alpha=10,beta=0.04,gamma=0.001", "--json"]).stdout
    )
    assert as_json["estimates"]["llama/H100"]["configured"] == {"alpha": 10.0, "beta": 0.04, "gamma": 0.001}


def test_tune_skips_and_counts_unusable_values(tmp_path: Path) -> None:
    """Well-formed lines with NaN, a zero rate or a negative latency are skipped and counted, not errors."""
    rows = lines(6)
    rows[3] = {**rows[3], "ttft_ms": -1.0}
    rows[4] = {**rows[4], "rate_rps": 0.0}
    path = write(tmp_path / "obs.jsonl", rows, (json.dumps({**rows[0], "itl_ms": math.nan}),))
    result = runner.invoke(app, ["tune", str(path), "--json"])
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.stdout)["estimates"]["llama/H100"]
    assert estimate["skipped"] == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"cycle": 0}\nnot json\n', "line 2: invalid JSON"),
        ('{"cycle": 1, "model": "m"}\n', "line 1: accelerator: Field required"),
        ("[1, 2]\n", "line 1: expected a JSON object"),
        ('{"model": "m"}\n', "line 1: cycle: expected an integer"),
    ],
)
def test_tune_bad_lines_exit_1_with_the_line_number(tmp_path: Path, content: str, message: str) -> None:
    """Malformed lines exit 1 naming the file and line."""
    path = tmp_path / "obs.jsonl"
    path.write_text(content)
    result = runner.invoke(app, ["tune", str(path)])
    assert result.exit_code == 1 and message in result.stderr and str(path) in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--init", "alpha=x"], "--init 'alpha=x': expected NAME=VALUE"),
        (["--init", "alpha=1,beta=2"], "missing gamma"),
        (["--queue-model", "mm2"], "unknown queue model 'mm2'"),
    ],
)
def test_tune_bad_options_exit_1(tmp_path: Path, args: list[str], message: str) -> None:
    """A bad --init or queue model exits 1 with the problem."""
    path = write(tmp_path / "obs.jsonl", lines(1))
    result = runner.invoke(app, ["tune", str(path), *args])
    assert result.exit_code == 1 and message in result.stderr


def test_tune_missing_file_has_no_traceback(tmp_path: Path) -> None:
    """Run as a program, a missing file gives exit 1, the message and no Python traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "inferno", "tune", str(tmp_path / "none.jsonl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot read" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
