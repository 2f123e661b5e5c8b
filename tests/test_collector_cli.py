"""Tests of `inferno collect` against the kmock emulator (through a kubeconfig)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferno.cli import app
from inferno.logs import configure
from inferno.state import Snapshot
from tests.support.kube import Emulator, deployment

runner = CliRunner()


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> Iterator[None]:
    """The CLI points the logs at the runner's stderr, closed afterwards: point them back."""
    yield
    configure()


LOAD = {"inferno.server.load.rpm": "30", "inferno.server.load.intokens": "100", "inferno.server.load.outtokens": "50"}


def test_collect_json_prints_a_replayable_snapshot(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. --json prints the snapshot; it loads back; the load came from the labels."""
    emulator.add(
        deployment("chat-h100", server="chat", labels=LOAD), deployment("chat-a100", server="chat", accelerator="A100")
    )
    config = emulator.kubeconfig(tmp_path / "kubeconfig")
    result = runner.invoke(app, ["collect", "--json", "--kubeconfig", str(config)])
    assert result.exit_code == 0, result.output
    snapshot = Snapshot.from_dict(json.loads(result.stdout))
    (chat,) = snapshot.servers
    assert [v.accelerator for v in chat.variants] == ["A100", "H100"]
    assert chat.load is not None and chat.load.arrival_rpm == 30.0


def test_collect_honours_namespace_options_and_env(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. -n and INFERNO_NAMESPACES choose the namespaces that are listed."""
    emulator.add(deployment("a", namespace="n1", labels=LOAD), deployment("b", namespace="n2", labels=LOAD))
    config = str(emulator.kubeconfig(tmp_path / "kubeconfig"))
    by_option = runner.invoke(app, ["collect", "--json", "--kubeconfig", config, "-n", "n2"])
    by_env = runner.invoke(app, ["collect", "--json"], env={"INFERNO_NAMESPACES": "n1", "INFERNO_KUBECONFIG": config})
    assert [s["name"] for s in json.loads(by_option.stdout)["servers"]] == ["b"]
    assert [s["name"] for s in json.loads(by_env.stdout)["servers"]] == ["a"]


def test_collect_table_lists_variants_and_problems(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. The table shows each variant; problems go to stderr, exit 0."""
    emulator.add(deployment("chat-h100", server="chat", replicas=2, ready=1))
    result = runner.invoke(app, ["collect", "--kubeconfig", str(emulator.kubeconfig(tmp_path / "k"))])
    assert result.exit_code == 0
    assert "llm/chat-h100" in result.stdout and "2 (1)" in result.stdout
    assert "problem: chat: no metrics: INFERNO_PROMETHEUS_URL is not set" in result.stderr


def test_collect_fails_cleanly_when_prometheus_is_down(emulator: Emulator, tmp_path: Path) -> None:
    """emulator: kmock. An unreachable Prometheus: exit 1, one error line, no traceback."""
    emulator.add(deployment("a"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = runner.invoke(
        app,
        ["collect", "--kubeconfig", str(emulator.kubeconfig(tmp_path / "k")), "--prometheus-url", url],
        env={"INFERNO_PROMETHEUS_RETRIES": "0"},
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: Prometheus at {url} failed the requests query 1 times")
    assert "Traceback" not in result.output
