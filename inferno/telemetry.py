"""inferno's own observability: Prometheus metrics and the /metrics, /healthz and /readyz endpoints.

One registry per daemon (no global state), so tests and several controllers in one process do not
collide. The HTTP server runs in a daemon thread and serves the text exposition format.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Telemetry:
    """The daemon's metrics, all in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "inferno_cycle_stage_seconds",
            "Duration of each stage of a control cycle.",
            ["stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.cycles = Counter("inferno_cycles", "Control cycles by outcome.", ["outcome"], registry=r)
        self.forecast_rps = Gauge(
            "inferno_forecast_rps",
            "Request-rate forecast per server at the start-up horizon: the forecast and its upper bound (sized for).",
            ["server", "bound"],
            registry=r,
        )
        self.last_success = Gauge(
            "inferno_last_successful_cycle_timestamp_seconds", "Unix time of the last successful cycle.", registry=r
        )
        self.desired_replicas = Gauge(
            "inferno_desired_replicas",
            "Replicas the plan wants per variant.",
            ["namespace", "deployment", "server", "accelerator"],
            registry=r,
        )
        self.current_replicas = Gauge(
            "inferno_current_replicas",
            "Replicas observed per variant.",
            ["namespace", "deployment", "server", "accelerator"],
            registry=r,
        )
        self.desired_max_num_seqs = Gauge(
            "inferno_desired_max_num_seqs",
            "--max-num-seqs the plan wants per variant.",
            ["namespace", "deployment", "server", "accelerator"],
            registry=r,
        )
        self.current_max_num_seqs = Gauge(
            "inferno_current_max_num_seqs",
            "--max-num-seqs observed per variant.",
            ["namespace", "deployment", "server", "accelerator"],
            registry=r,
        )
        self.predicted_latency = Gauge(
            "inferno_predicted_latency_ms",
            "Mean latency the plan expects per server.",
            ["server", "metric"],
            registry=r,
        )
        self.observed_latency = Gauge(
            "inferno_observed_latency_ms", "Mean latency observed per server.", ["server", "metric"], registry=r
        )
        self.slo_target = Gauge("inferno_slo_target_ms", "SLO target per server.", ["server", "metric"], registry=r)
        self.unmet_demand = Gauge(
            "inferno_unmet_demand_rps", "Demand the plan cannot serve per server.", ["server"], registry=r
        )
        self.total_cost = Gauge("inferno_plan_cost_cents_per_hour", "Total accelerator cost of the plan.", registry=r)
        self.cards = Gauge("inferno_cards", "Cards per accelerator type.", ["type", "kind"], registry=r)
        self.tuner_parameter = Gauge(
            "inferno_tuner_parameter", "Tuned queue-model parameter.", ["model", "accelerator", "parameter"], registry=r
        )
        self.tuner_updates = Counter(
            "inferno_tuner_updates", "Tuner updates by result.", ["model", "accelerator", "result"], registry=r
        )
        self.actions = Counter("inferno_actions", "Actions by kind and result.", ["kind", "result"], registry=r)
        self.leader = Gauge(
            "inferno_leader",
            "1 while this replica acts (leads, or runs without leader election), 0 on standby.",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)


class HealthServer:
    """Serves /metrics, /healthz (process alive) and /readyz (``ready()`` is true) on ``port``."""

    def __init__(
        self, telemetry: Telemetry, ready: Callable[[], bool], host: str = "0.0.0.0", port: int = 8080
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._reply(200, outer.telemetry.exposition(), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    self._reply(200, b"ok\n", "text/plain")
                elif self.path.startswith("/readyz"):
                    ok = outer.ready()
                    self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.telemetry = telemetry
        self.ready = ready
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="inferno-http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
