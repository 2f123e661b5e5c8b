"""Full control cycles: real Prometheus scraping fake vLLM pods, Deployments in the kmock emulator."""

from __future__ import annotations

import json
import signal
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferno.actuator import DryRunActuator, KubeActuator
from inferno.cli import app
from inferno.collector import Collector
from inferno.config import LimitSettings, Settings
from inferno.controller import Controller, serve
from inferno.optimizer import OptimizerOptions
from inferno.predictor import Forecast, Forecaster, History, Samples
from inferno.prometheus import connect
from inferno.system import load_system
from inferno.telemetry import HealthServer, Telemetry
from inferno.tuner import EKFTuner, JsonFileStore, key_name, read_observations, replay, seeds_from_spec
from tests.conftest import SAMPLES
from tests.support.kube import Emulator, deployment
from tests.support.prometheus import PrometheusServer
from tests.support.vllm_exporter import FakePod

pytestmark = pytest.mark.prometheus

NS = "ctl"
WINDOW_S = 5
SPEC = load_system(SAMPLES / "small.yaml").spec
GOOD = FakePod(NS, "chat-premium-h100-5d8f9c7b6-aaaaa", 12.0, 512, 256, 0.08, 0.012, running=6, model="llama-3.1-8b")
BAD = FakePod(
    NS,
    "chat-free-h100-5d8f9c7b6-bbbbb",
    3.0,
    256,
    256,
    0.1,
    0.02,
    model="llama-3.1-8b",
    nan=frozenset({"vllm:time_to_first_token_seconds"}),
)


def _deployments() -> list[dict[str, object]]:
    args = ("--model", "llama-3.1-8b", "--max-num-seqs", "64")
    return [
        deployment(
            "chat-premium-h100",
            namespace=NS,
            server="chat-premium",
            accelerator="H100",
            model="llama-3.1-8b",
            service_class="Premium",
            args=args,
        ),
        deployment(
            "chat-free-h100",
            namespace=NS,
            server="chat-free",
            accelerator="H100",
            model="llama-3.1-8b",
            service_class="Free",
            args=args,
        ),
    ]


@pytest.fixture(scope="module")
def fleet(prometheus: PrometheusServer) -> Iterator[PrometheusServer]:
    """The two fake pods, scraped long enough to fill a window."""
    prometheus.fleet.add(GOOD, BAD)
    prometheus.settle(NS, 2, WINDOW_S)
    yield prometheus
    prometheus.fleet.remove(NS, GOOD.pod)
    prometheus.fleet.remove(NS, BAD.pod)


def _settings(url: str, **kw: object) -> Settings:
    return Settings(prometheus_url=url, namespaces=(NS,), metrics_window=f"{WINDOW_S}s", **kw)  # type: ignore[arg-type]


def _controller(emulator: Emulator, url: str, *, dry_run: bool = False, log: object = None) -> Controller:
    settings = _settings(url)
    kube = emulator.kube()
    return Controller(
        system=SPEC,
        collector=Collector(kube, connect(settings), settings),
        actuator=DryRunActuator(open("/dev/null", "w")) if dry_run else KubeActuator(kube),
        options=OptimizerOptions(),
        limits=LimitSettings(),
        telemetry=Telemetry(),
        decision_log=log,  # type: ignore[arg-type]
    )


def test_nan_server_is_held_and_the_other_is_scaled(
    emulator: Emulator, fleet: PrometheusServer, tmp_path: Path
) -> None:
    """Emulator: kmock. A NaN TTFT holds chat-free untouched; chat-premium is scaled to the plan."""
    emulator.add(*_deployments())
    with (tmp_path / "decisions.jsonl").open("w") as log:
        record = _controller(emulator, fleet.url, log=log).cycle()
    assert record.outcome == "ok", record.reason
    assert "chat-free" in record.flagged
    assert record.plan is not None
    wanted = record.plan.allocations["chat-premium"]
    assert wanted.replicas >= 1 and wanted.accelerator == "H100"
    patched = [r for r in emulator.writes() if str(r.method.value).upper() == "PATCH"]
    assert patched and all("chat-premium-h100" in str(r.url) for r in patched)
    stored = emulator.get(NS, "chat-premium-h100")
    assert stored["spec"]["replicas"] == wanted.replicas
    assert emulator.get(NS, "chat-free-h100")["spec"]["replicas"] == 1
    line = json.loads((tmp_path / "decisions.jsonl").read_text().splitlines()[0])
    assert line["outcome"] == "ok" and line["flagged"]["chat-free"]


def test_prometheus_down_skips_the_cycle(emulator: Emulator) -> None:
    """Emulator: kmock. With Prometheus unreachable the cycle is skipped and nothing is written."""
    emulator.add(*_deployments())
    record = _controller(emulator, "http://127.0.0.1:9").cycle()
    assert record.outcome == "skipped"
    assert record.reason.startswith("collect:")
    assert emulator.writes() == []


@pytest.mark.parametrize("status", [409, 500])
def test_api_errors_are_not_recorded_as_applied(emulator: Emulator, fleet: PrometheusServer, status: int) -> None:
    """Emulator: kmock. A refused patch fails the cycle and its action is reported failed, not applied."""
    emulator.add(*_deployments())
    emulator.fail("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/chat-premium-h100", status, "injected")
    record = _controller(emulator, fleet.url).cycle()
    assert record.outcome == "failed"
    assert record.results and all(r.outcome != "applied" for r in record.results)


def test_dry_run_once_prints_actions_and_writes_nothing(
    emulator: Emulator, fleet: PrometheusServer, tmp_path: Path
) -> None:
    """Emulator: kmock. `inferno run --dry-run --once --kubeconfig K` prints the table and sends no write."""
    emulator.add(*_deployments())
    kubeconfig = emulator.kubeconfig(tmp_path / "kubeconfig")
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--dry-run",
            "--once",
            "--kubeconfig",
            str(kubeconfig),
            "--system",
            str(SAMPLES / "small.yaml"),
            "--prometheus-url",
            fleet.url,
            "--namespace",
            NS,
        ],
        env={"INFERNO_METRICS_WINDOW": f"{WINDOW_S}s"},
    )
    assert result.exit_code == 0, result.output
    assert "chat-premium-h100" in result.output
    assert "held: chat-free" in result.output
    assert emulator.writes() == []
    assert all(str(r.method.value).upper() == "GET" for r in emulator.requests())


def test_serve_stops_cleanly_on_sigterm_and_metrics_are_served(emulator: Emulator, fleet: PrometheusServer) -> None:
    """Emulator: kmock. The loop runs cycles until SIGTERM, then exits; /metrics counts the cycles."""
    emulator.add(*_deployments())
    controller = _controller(emulator, fleet.url, dry_run=True)
    health = HealthServer(controller.telemetry, ready=lambda: controller.last is not None, host="127.0.0.1", port=0)
    health.start()
    try:
        timer = threading.Timer(2.5, lambda: signal.raise_signal(signal.SIGTERM))
        timer.start()
        last = serve(controller, period_s=1.0)
        assert last is not None and last.outcome in ("ok", "idle")
        body = urllib.request.urlopen(f"http://127.0.0.1:{health.port}/metrics").read().decode()
        assert 'inferno_cycles_total{outcome="ok"}' in body or 'inferno_cycles_total{outcome="idle"}' in body
        assert urllib.request.urlopen(f"http://127.0.0.1:{health.port}/readyz").status == 200
    finally:
        health.stop()
    assert emulator.writes() == []


def test_tuner_is_fed_each_cycle_and_its_state_persists(
    emulator: Emulator, fleet: PrometheusServer, tmp_path: Path
) -> None:
    """Emulator: kmock. The cycle feeds the tuner the pods' observations and saves its state for a restart."""
    emulator.add(*_deployments())
    store = JsonFileStore(tmp_path / "tuner.json")
    controller = _controller(emulator, fleet.url, dry_run=True)
    controller.tuner = EKFTuner("iteration", seeds=seeds_from_spec(SPEC, "iteration"))
    controller.tuner_store = store
    record = controller.cycle()
    assert record.outcome in ("ok", "idle"), record.reason
    assert isinstance(record.tuner, dict)
    keys = {k["key"]: k for k in record.tuner["keys"]}
    assert key_name(("llama-3.1-8b", "H100")) in keys
    assert keys[key_name(("llama-3.1-8b", "H100"))]["configured"]["alpha"] > 0
    state = store.load()
    assert state is not None and state["version"] == 1
    resumed = EKFTuner("iteration", seeds=seeds_from_spec(SPEC, "iteration"), state=state)
    assert resumed.state() == controller.tuner.state()


def test_the_decision_log_replays_with_inferno_tune(emulator: Emulator, fleet: PrometheusServer) -> None:
    """Emulator: kmock. Each decision-log line carries the cycle's observations; `read_observations` reads them back."""
    emulator.add(*_deployments())
    controller = _controller(emulator, fleet.url, dry_run=True)
    controller.tuner = EKFTuner("iteration", seeds=seeds_from_spec(SPEC, "iteration"))
    lines = [json.dumps(controller.cycle().to_dict()) for _ in range(2)]
    rows = read_observations("\n".join(lines), "decisions.jsonl")
    assert [cycle for cycle, _ in rows] == sorted(cycle for cycle, _ in rows)
    assert {cycle for cycle, _ in rows} == {1, 2}
    first = json.loads(lines[0])["observations"]
    assert len(first) > 0 and len(rows) == len(first) + len(json.loads(lines[1])["observations"])
    assert ("llama-3.1-8b", "H100") in {o.key for _, o in rows}
    assert any(o.rate_rps > 0 and o.ttft_ms > 0 for _, o in rows)
    assert key_name(("llama-3.1-8b", "H100")) in replay(rows)["estimates"]


class _Doubling:
    """A predictor whose forecast is twice the last sample, its bound three times (a steep ramp ahead)."""

    name = "doubling"
    quantile = 0.9

    def forecast(self, samples: Samples | None, horizon_s: float) -> Forecast | None:
        """2x and 3x the last observed value."""
        if samples is None:
            return None
        last = float(samples.values[-1])
        return Forecast(2 * last, 3 * last, horizon_s, self.name)


def test_the_optimizer_sizes_for_the_forecast_upper_bound(emulator: Emulator, fleet: PrometheusServer) -> None:
    """Emulator: kmock. With a forecaster the plan serves the bound (3x the observed rate); the record shows it."""
    emulator.add(*_deployments())
    reactive = _controller(emulator, fleet.url, dry_run=True).cycle()
    controller = _controller(emulator, fleet.url, dry_run=True)
    controller.forecaster = Forecaster(_Doubling(), History(60.0, 100), 180.0)
    record = controller.cycle()
    assert reactive.plan is not None and record.plan is not None
    f = record.forecasts["chat-premium"]
    assert f["upper_rps"] == pytest.approx(3 * f["observed_rps"]) and f["method"] == "doubling"
    assert 180.0 <= f["horizon_s"] < 240.0  # start-up + period, plus the time since the last grid sample
    assert "chat-free" not in record.forecasts  # held (NaN): not forecast
    base, ahead = reactive.plan.allocations["chat-premium"], record.plan.allocations["chat-premium"]
    assert ahead.replicas >= 2 * base.replicas > 0
    exported = controller.telemetry.exposition().decode()
    assert 'inferno_forecast_rps{bound="upper",server="chat-premium"}' in exported
