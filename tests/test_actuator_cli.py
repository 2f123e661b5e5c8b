"""Tests of `inferno actuate PLAN.json [--dry-run]` against the kmock emulator (through a kubeconfig)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferno.cli import app
from inferno.logs import configure
from tests.support.kube import Emulator, deployment

runner = CliRunner()


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> Iterator[None]:
    """The CLI points the logs at the runner's stderr, closed afterwards: point them back."""
    yield
    configure()


ACTION = {
    "namespace": "llm",
    "deployment": "chat-h100",
    "server": "chat",
    "accelerator": "H100",
    "replicas_from": 1,
    "replicas_to": 2,
    "max_num_seqs_from": 64,
    "max_num_seqs_to": 48,
    "reason": "test",
}


def _plan(tmp_path: Path, *actions: dict[str, object]) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(list(actions or [ACTION])))
    return str(path)


def test_dry_run_prints_the_table_and_sends_no_request(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. --dry-run with a kubeconfig: the table is printed and the API server sees nothing."""
    emulator.add(deployment("chat-h100", server="chat"))
    config = str(emulator.kubeconfig(tmp_path / "k"))
    result = runner.invoke(app, ["actuate", _plan(tmp_path), "--dry-run", "--kubeconfig", config])
    assert result.exit_code == 0, result.output
    assert "planned actions (dry run): 1" in result.stdout and "64 -> 48" in result.stdout
    assert emulator.requests() == []


def test_dry_run_from_the_env_prints_json_lines(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. INFERNO_DRY_RUN=true with --json: one JSON action per line, no request."""
    config = str(emulator.kubeconfig(tmp_path / "k"))
    result = runner.invoke(
        app, ["actuate", _plan(tmp_path), "--json", "--kubeconfig", config], env={"INFERNO_DRY_RUN": "true"}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_num_seqs_to"] == 48
    assert emulator.requests() == []


def test_actuate_applies_the_actions(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. Without --dry-run the Deployment gets 2 replicas and --max-num-seqs 48."""
    emulator.add(deployment("chat-h100", server="chat"))
    result = runner.invoke(app, ["actuate", _plan(tmp_path), "--kubeconfig", str(emulator.kubeconfig(tmp_path / "k"))])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "applied: llm/chat-h100: replicas 1->2, max-num-seqs 64->48"
    stored = emulator.get("llm", "chat-h100")
    assert stored["spec"]["replicas"] == 2
    assert stored["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--max-num-seqs", "48"]


def test_actuate_reports_a_failed_patch(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. A 500 on the patch: exit 1 and the report says it was not applied."""
    emulator.add(deployment("chat-h100", server="chat"))
    emulator.fail("patch", "/apis/apps/v1/namespaces/llm/deployments/chat-h100", 500, "boom")
    result = runner.invoke(app, ["actuate", _plan(tmp_path), "--kubeconfig", str(emulator.kubeconfig(tmp_path / "k"))])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    error = lines.index("error: not every action was applied (1 failed)")
    assert lines[error + 1] == (
        "  failed: llm/chat-h100: replicas 1->2, max-num-seqs 64->48: patch Deployment llm/chat-h100: HTTP 500: boom"
    )


def test_actuate_reports_skipped_actions_with_exit_1(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. A Deployment that moved on is skipped; the command says so and exits 1."""
    emulator.add(deployment("chat-h100", server="chat", replicas=4))
    result = runner.invoke(app, ["actuate", _plan(tmp_path), "--kubeconfig", str(emulator.kubeconfig(tmp_path / "k"))])
    assert result.exit_code == 1
    assert "skipped: llm/chat-h100: replicas 1->2, max-num-seqs 64->48: changed since collection" in result.stdout
    assert emulator.writes() == []


def test_actions_outside_the_managed_namespaces_are_refused(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. -n other: the action in 'llm' is a config error and nothing is sent."""
    config = str(emulator.kubeconfig(tmp_path / "k"))
    result = runner.invoke(app, ["actuate", _plan(tmp_path), "--kubeconfig", config, "-n", "other"])
    assert result.exit_code == 1
    assert "[0].namespace: 'llm' is not a managed namespace (other)" in result.stderr
    assert emulator.requests() == []


def test_a_missing_plan_file_is_reported(tmp_path: Path) -> None:
    """No such file: exit 1 naming it."""
    result = runner.invoke(app, ["actuate", str(tmp_path / "nope.json"), "--dry-run"])
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'nope.json'}: cannot read: No such file or directory" in result.stderr
