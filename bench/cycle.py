"""Control-cycle benchmark: 100 servers, real Prometheus, Kubernetes emulator, dry-run actuation.

Starts fake vLLM pods (one per server) scraped by a real Prometheus, Deployments in the kmock
emulator, and runs the daemon's cycle (collect + optimize + limits + dry-run actuate) repeatedly.
Prints JSON rows: per-cycle and per-stage milliseconds, and the process RSS before and after.

    PYTHONPATH=. .venv/bin/python bench/cycle.py [--servers 100] [--cycles 100]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import tempfile
from pathlib import Path

from inferno.actuator import DryRunActuator
from inferno.collector import Collector
from inferno.config import LimitSettings, Settings
from inferno.controller import Controller
from inferno.optimizer import OptimizerOptions
from inferno.prometheus import connect
from inferno.spec import ServerData, ServerSpec
from inferno.system import load_system
from inferno.telemetry import Telemetry
from inferno.tuner import EKFTuner, seeds_from_spec
from tests.support.kube import Emulator, deployment
from tests.support.prometheus import PrometheusServer
from tests.support.vllm_exporter import FakePod, FakeVllmFleet

REPO = Path(__file__).resolve().parents[1]
NS = "bench"
WINDOW_S = 5


def rss_mb() -> float:
    """Resident set size of this process now (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--no-tune", action="store_true", help="Run without the online tuner (default: on).")
    args = parser.parse_args()
    base = load_system(REPO / "config/samples/small.yaml").spec
    classes = ("Premium", "Free")
    servers = tuple(
        ServerSpec(name=f"s{i:03d}", class_name=classes[i % 2], model="llama-3.1-8b") for i in range(args.servers)
    )
    spec = base.model_copy(update={"server_data": ServerData(servers=servers)})
    fleet = FakeVllmFleet()
    emulator = Emulator()
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not installed (make prometheus)")
    with tempfile.TemporaryDirectory() as tmp:
        prom = PrometheusServer(binary, Path(tmp), fleet)
        try:
            for i, srv in enumerate(servers):
                name = f"{srv.name}-h100"
                emulator.add(
                    deployment(
                        name,
                        namespace=NS,
                        server=srv.name,
                        accelerator="H100",
                        model=srv.model,
                        service_class=srv.class_name,
                        args=("--max-num-seqs", "64"),
                    )
                )
                fleet.add(
                    FakePod(NS, f"{name}-5d8f9c7b6-a{i:04d}", 1.0 + (i % 7), 512, 256, 0.08, 0.015, model=srv.model)
                )
            prom.settle(NS, args.servers, WINDOW_S)
            settings = Settings(prometheus_url=prom.url, namespaces=(NS,), metrics_window=f"{WINDOW_S}s")
            controller = Controller(
                system=spec,
                collector=Collector(emulator.kube(), connect(settings), settings),
                actuator=DryRunActuator(io.StringIO()),
                options=OptimizerOptions(),
                limits=LimitSettings(),
                telemetry=Telemetry(),
                tuner=None if args.no_tune else EKFTuner(seeds=seeds_from_spec(spec, "iteration")),
            )
            first = controller.cycle()
            start_rss = rss_mb()
            totals, stages = [], {}
            for _ in range(args.cycles):
                record = controller.cycle()
                totals.append(sum(record.stage_ms.values()))
                for stage, ms in record.stage_ms.items():
                    stages.setdefault(stage, []).append(ms)
            print(
                json.dumps(
                    {
                        "bench": "cycle",
                        "servers": args.servers,
                        "cycles": args.cycles,
                        "tuner": not args.no_tune,
                        "first_outcome": first.outcome,
                        "outcome": record.outcome,
                        "held": len(record.flagged),
                        "cycle_ms_median": round(statistics.median(totals), 1),
                        "cycle_ms_max": round(max(totals), 1),
                        "stage_ms_median": {k: round(statistics.median(v), 1) for k, v in stages.items()},
                        "rss_mb_after_first": round(start_rss, 1),
                        "rss_mb_after_all": round(rss_mb(), 1),
                    }
                )
            )
        finally:
            prom.close()
            fleet.close()
            emulator.close()


if __name__ == "__main__":
    main()
