"""Behaviour of the online tuner: bad data, gates, identifiability, persistence, merge and seeds."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inferno.errors import ConfigError, ModelError
from inferno.queueing import Workload, make_queue_model
from inferno.spec import SystemSpec
from inferno.state import Metrics, ObservedServer, PodMetrics, Snapshot, Variant
from inferno.system import load_system
from inferno.tuner import (
    STATE_VERSION,
    EKFTuner,
    JsonFileStore,
    Observation,
    Seed,
    TunerSettings,
    merge_estimates,
    observations_from_snapshot,
    seeds_from_spec,
)
from inferno.tuner.ekf import ParamFilter
from inferno.tuner.fit import Fit

from .conftest import SAMPLES

TRUE = {"alpha": 7.0, "beta": 0.06, "gamma": 4e-5}
MODEL = make_queue_model("iteration", TRUE)
KEY = ("llama-8b", "H100")
N, Q = 32, 320
POINTS = [
    (in_tokens, out_tokens, load) for in_tokens, out_tokens in ((256, 256), (1024, 128)) for load in (0.2, 0.5, 0.7)
]


def observe(in_tokens: float, out_tokens: float, load: float, *, scale: float = 1.0, replica: str = "") -> Observation:
    """An exact observation of the true model at ``load`` of capacity (latencies times ``scale``)."""
    workload = Workload(in_tokens, out_tokens)
    rate = load * MODEL.max_rate_rps(workload, N, Q)
    metrics = MODEL.analyze(rate, workload, N, Q)
    return Observation(
        *KEY, rate, in_tokens, out_tokens, N, Q, scale * metrics.ttft_ms, scale * metrics.itl_ms, replica
    )


def spread(cycle: int) -> list[Observation]:
    """One cycle of six replicas over two mixes and three loads, with 3% deterministic noise."""
    return [
        observe(*point, scale=1 + 0.03 * math.sin(7 * cycle + i), replica=f"pod-{i}") for i, point in enumerate(POINTS)
    ]


def tracking_tuner(cycles: int = 6) -> EKFTuner:
    """A tuner past its warm-up on spread observations."""
    tuner = EKFTuner(seeds={KEY: Seed(TRUE)})
    for cycle in range(cycles):
        tuner.update(spread(cycle))
    assert tuner.entries[KEY].phase == "tracking"
    return tuner


def test_bad_observations_are_skipped_and_counted_never_filtered() -> None:
    """NaN, zero rate, negative latency, no output tokens, no model: skipped with a reason, the filter untouched."""
    tuner = tracking_tuner()
    before = tuner.estimates()[KEY]
    good = observe(256, 256, 0.5)
    bad = [
        replace(good, rate_rps=math.nan, replica="nan-rate"),
        replace(good, rate_rps=0.0, replica="idle"),
        replace(good, ttft_ms=-3.0, replica="negative"),
        replace(good, itl_ms=math.inf, replica="inf"),
        replace(good, out_tokens=0.0, replica="no-output"),
        replace(good, max_batch=0, replica="no-batch"),
        replace(good, model="", replica="orphan"),
    ]
    report = tuner.update(bad)
    key = report.key(*KEY)
    assert key is not None and key.count("skipped") == 6 and key.count("accepted") == 0 and key.nis == ()
    reasons = {o.replica: o.reason for o in key.outcomes}
    assert "not a finite number" in reasons["nan-rate"] and "must be > 0" in reasons["idle"]
    assert "must be > 0" in reasons["negative"] and "token lengths" in reasons["no-output"]
    assert "max_batch" in reasons["no-batch"]
    assert [o.replica for o in report.skipped] == ["orphan"] and tuner.skipped == 1
    assert key.counters.skipped == 6 and tuner.estimates()[KEY] == before
    assert tuner.state()["filters"]["llama-8b/H100"]["counters"]["skipped"] == 6


def test_first_fit_starts_the_filter_in_warm_up() -> None:
    """Six spread observations are fitted at once; the filter then warms up for three cycles and tracks."""
    tuner = EKFTuner(seeds={KEY: Seed({"alpha": 14.0, "beta": 0.03, "gamma": 1e-4})})
    first = tuner.update(spread(0)).key(*KEY)
    assert first is not None and first.phase == "warmup" and first.tuned and first.identifiable
    assert first.counters.fits == 1 and first.count("collected") == 6
    assert first.configured == {"alpha": 14.0, "beta": 0.03, "gamma": 1e-4}
    assert first.params is not None and first.params["alpha"] == pytest.approx(7.0, rel=0.05)
    phases = [tuner.update(spread(c)).keys[0].phase for c in range(1, 5)]
    assert phases == ["warmup", "warmup", "tracking", "tracking"]
    assert tuner.estimates()[KEY]["beta"] == pytest.approx(0.06, rel=0.05)


def test_warm_up_has_no_nis_gate_tracking_has() -> None:
    """An observation 1.5x too slow is accepted during warm-up and rejected as an outlier afterwards."""
    tuner = EKFTuner(seeds={KEY: Seed(TRUE)})
    tuner.update(spread(0))
    outlier = observe(256, 256, 0.5, scale=1.5, replica="slow")
    warm = tuner.update([*spread(1), outlier]).key(*KEY)
    assert warm is not None and warm.phase == "warmup"
    slow = next(o for o in warm.outcomes if o.replica == "slow")
    assert slow.status == "accepted" and slow.nis is not None and slow.nis >= 7.378
    tuner = tracking_tuner()
    report = tuner.update([*spread(7), outlier]).key(*KEY)
    assert report is not None
    slow = next(o for o in report.outcomes if o.replica == "slow")
    assert slow.status == "rejected" and slow.nis is not None and slow.nis >= 7.378 and "outlier" in slow.reason


def test_an_update_making_a_parameter_non_positive_is_rolled_back() -> None:
    """With a very uncertain filter, a 5x too fast TTFT would push beta below 0: the update is rolled back."""
    x = np.array(list(TRUE.values()))
    filt = ParamFilter(MODEL, x, np.diag((10 * x) ** 2), TunerSettings())
    obs = observe(256, 256, 0.5)
    step = filt.update(replace(obs, ttft_ms=0.2 * obs.ttft_ms), gate=False)
    assert (step.accepted, step.gate) == (False, "positivity") and "beta" in step.reason
    assert np.array_equal(filt.x, x) and np.array_equal(filt.covariance, np.diag((10 * x) ** 2))


def test_an_update_is_clipped_to_the_bounds_around_the_previous_estimate() -> None:
    """Latencies 30x the prediction move alpha and beta ~4x; with bound_factor 2 they stop at 2x."""
    x = np.array(list(TRUE.values()))
    obs = observe(256, 256, 0.5)
    slow = replace(obs, ttft_ms=30 * obs.ttft_ms, itl_ms=30 * obs.itl_ms)
    free = ParamFilter(MODEL, x, np.diag((30 * x) ** 2), TunerSettings())
    assert not free.update(slow, gate=False).clipped and free.x[0] > 3 * x[0]
    bounded = ParamFilter(MODEL, x, np.diag((30 * x) ** 2), TunerSettings(bound_factor=2))
    step = bounded.update(slow, gate=False)
    assert step.accepted and step.clipped
    assert bounded.x[0] == pytest.approx(14.0) and bounded.x[1] == pytest.approx(0.12)


def test_one_operating_point_is_not_identifiable_and_keeps_the_configured_parameters() -> None:
    """Every replica at one rate and mix for 12 cycles: reported not identifiable, configured values kept."""
    seed = {"alpha": 9.0, "beta": 0.05, "gamma": 5e-5}
    tuner = EKFTuner(seeds={KEY: Seed(seed)})
    for cycle in range(12):
        obs = [observe(256, 256, 0.5, scale=1 + 0.03 * math.sin(cycle + i), replica=f"pod-{i}") for i in range(4)]
        report = tuner.update(obs).key(*KEY)
        assert report is not None and report.params == seed and not report.tuned
        if cycle == 0:
            assert report.phase == "collecting" and "4 of 6 observations" in report.notes[0]
            continue
        assert report.identifiable is False
        assert report.params == seed and report.condition is not None and report.condition > 1e10
        assert "not identifiable" in report.notes[-1] and "configured parameters stay" in report.notes[-1]
    assert tuner.estimates() == {} and report.counters.fits == 0 and report.counters.observations == 48


def test_a_running_filter_is_held_at_one_operating_point() -> None:
    """After tracking, 10 cycles at one point fill the window: the filter is held and the estimate kept."""
    tuner = tracking_tuner()
    steady = [observe(1024, 128, 0.5, scale=1 + 0.03 * math.sin(i), replica=f"pod-{i}") for i in range(6)]
    reports = [tuner.update(steady).key(*KEY) for _ in range(10)]
    held = [r for r in reports if r is not None and r.count("held") == 6]
    assert held and held[0].identifiable is False and "held" in held[0].notes[0]
    kept = held[0].params
    assert all(r.params == kept for r in held)
    assert kept is not None and all(kept[k] == pytest.approx(TRUE[k], rel=0.05) for k in ("alpha", "beta"))
    resumed = tuner.update(spread(20)).key(*KEY)  # spread returns: updates resume
    assert resumed is not None and resumed.count("held") == 0


def test_restart_from_persisted_state_resumes_without_warm_up(tmp_path: Path) -> None:
    """State saved to a JSON file and loaded into a new tuner: same estimates, tracking, gate on, no new fit."""
    tuner = tracking_tuner()
    store = JsonFileStore(tmp_path / "state" / "tuner.json")
    store.save(tuner.state())
    loaded = store.load()
    assert loaded is not None and loaded["version"] == STATE_VERSION
    resumed = EKFTuner(seeds={KEY: Seed(TRUE)}, state=loaded)
    assert resumed.estimates() == tuner.estimates()
    report = resumed.update([*spread(7), observe(256, 256, 0.5, scale=3.0, replica="slow")]).key(*KEY)
    assert report is not None and report.phase == "tracking" and report.counters.fits == 1
    assert report.count("accepted") == 6 and report.count("rejected") == 1
    fresh = EKFTuner(seeds={KEY: Seed(TRUE)}).update(spread(7)).key(*KEY)
    assert fresh is not None and fresh.phase == "warmup"


def test_store_reports_missing_and_broken_files(tmp_path: Path) -> None:
    """A missing file is no state; invalid JSON or a non-object is a ConfigError naming the file."""
    path = tmp_path / "tuner.json"
    assert JsonFileStore(path).load() is None
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"tuner\.json: line 1: invalid JSON"):
        JsonFileStore(path).load()
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        JsonFileStore(path).load()


def test_state_of_another_version_fails_another_queue_model_is_ignored() -> None:
    """A state with another version is a ConfigError; one of another queue model starts afresh."""
    state = tracking_tuner().state()
    with pytest.raises(ConfigError, match="version 99"):
        EKFTuner(state={**state, "version": 99})
    assert EKFTuner("mm1k", state=state).entries == {}
    broken = json.loads(json.dumps(state))
    broken["filters"]["llama-8b/H100"]["filter"]["x"] = [7.0, -1.0, 1e-5]
    with pytest.raises(ConfigError, match=r"llama-8b/H100.*non-positive"):
        EKFTuner(state=broken)


def test_report_is_json_ready() -> None:
    """The cycle report serialises to JSON with configured and tuned parameters, NIS and counters."""
    tuner = tracking_tuner()
    data = json.loads(json.dumps(tuner.update(spread(9)).to_dict()))
    (key,) = data["keys"]
    assert key["key"] == "llama-8b/H100" and key["configured"] == TRUE and key["tuned"] is True
    assert len(key["nis"]) == 6 and key["accepted"] == 6 and key["counters"]["fits"] == 1
    assert set(key["params"]) == {"alpha", "beta", "gamma"}


def test_unknown_queue_model_lists_the_choices() -> None:
    """An unknown queue model name is a ConfigError listing the valid ones."""
    with pytest.raises(ConfigError, match=r"unknown queue model 'mm2'.*iteration"):
        EKFTuner("mm2")


def test_fit_covariance_combines_the_jacobian_and_the_prior() -> None:
    """Cov(log x) = (J'J / sigma^2 + I / 4)^-1, scaled by x x'; a direction without data keeps log-variance 4."""
    x = np.array([2.0, 0.5])
    jac = np.array([[1.0, 0.0], [0.0, 0.0]])
    cov = Fit(x, 0.0, math.inf, False, 0, jac).covariance(0.1)
    assert cov is not None and np.allclose(cov, np.diag([4.0 / 100.25, 4 * 0.25]))
    assert Fit(x, 0.0, 2.0, True, 0).covariance(0.1) is None


@pytest.fixture
def spec() -> SystemSpec:
    """The small sample system (2026 perfParms and 2025 decode/prefill rows)."""
    return load_system(SAMPLES / "small.yaml").spec


def test_merge_replaces_only_the_tuned_rows(spec: SystemSpec) -> None:
    """Tuned iteration parameters replace perfParms of that (model, accelerator); everything else is kept."""
    row = next(r for r in spec.model_data.models if r.perf_parms is not None)
    tuned = {"alpha": 1.5, "beta": 0.25, "gamma": 3e-4}
    merged = merge_estimates(spec, {(row.name, row.acc): tuned, ("no-such-model", "H100"): tuned})
    new_row = next(r for r in merged.model_data.models if (r.name, r.acc) == (row.name, row.acc))
    assert new_row.perf_parms is not None and new_row.perf_parms.model_dump() == tuned
    assert new_row.decode_parms == row.decode_parms and new_row.max_batch_size == row.max_batch_size
    others = [r for r in merged.model_data.models if (r.name, r.acc) != (row.name, row.acc)]
    assert others == [r for r in spec.model_data.models if (r.name, r.acc) != (row.name, row.acc)]
    assert merged.server_data == spec.server_data and row.perf_parms != new_row.perf_parms
    assert merge_estimates(spec, {}) is spec


def test_merge_maps_inferno_2025_parameters_to_decode_and_prefill(spec: SystemSpec) -> None:
    """inferno-2025 estimates become decodeParms (alpha, beta) and prefillParms (gamma, delta)."""
    row = spec.model_data.models[0]
    tuned = {"alpha": 20.0, "beta": 0.4, "gamma": 30.0, "delta": 0.01}
    merged = merge_estimates(spec, {(row.name, row.acc): tuned}, "inferno-2025")
    new_row = merged.model_data.models[0]
    assert new_row.decode_parms is not None and new_row.prefill_parms is not None
    assert (new_row.decode_parms.alpha, new_row.decode_parms.beta) == (20.0, 0.4)
    assert (new_row.prefill_parms.gamma, new_row.prefill_parms.delta) == (30.0, 0.01)
    assert new_row.perf_parms == row.perf_parms
    with pytest.raises(ModelError, match="lacks delta"):
        merge_estimates(spec, {(row.name, row.acc): {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}}, "inferno-2025")


def test_seeds_come_from_the_rows_with_the_queue_models_form(spec: SystemSpec) -> None:
    """Seeds carry perfParms for iteration and decode/prefill for inferno-2025, with the token budget."""
    seeds = seeds_from_spec(spec, "iteration")
    rows = [r for r in spec.model_data.models if r.perf_parms is not None]
    assert len(seeds) == len(rows) > 0
    row = rows[0]
    assert row.perf_parms is not None
    assert seeds[(row.name, row.acc)] == Seed(row.perf_parms.model_dump(), row.max_num_batched_tokens)
    linear = seeds_from_spec(spec, "inferno-2025")
    assert all(set(s.params) == {"alpha", "beta", "gamma", "delta"} for s in linear.values())
    assert len(linear) == sum(r.decode_parms is not None for r in spec.model_data.models)


def test_observation_from_dict_names_bad_fields() -> None:
    """Missing, unknown or mistyped fields are ConfigErrors naming the field; NaN is accepted for skipping."""
    good = observe(256, 256, 0.5).to_dict()
    assert Observation.from_dict(good) == observe(256, 256, 0.5)
    assert math.isnan(Observation.from_dict({**good, "ttft_ms": math.nan}).ttft_ms)
    with pytest.raises(ConfigError, match="itl_ms"):
        Observation.from_dict({k: v for k, v in good.items() if k != "itl_ms"})
    with pytest.raises(ConfigError, match="colour"):
        Observation.from_dict({**good, "colour": "red"})
    with pytest.raises(ConfigError, match="max_batch"):
        Observation.from_dict({**good, "max_batch": "many"})


def test_observations_from_a_snapshot_use_the_optimizers_queue_bound(spec: SystemSpec) -> None:
    """One observation per pod; Q is maxQueueSize or 10 N; missing metrics and max-num-seqs are skipped later."""
    server = spec.server_data.servers[0]
    full = Metrics(arrival_rps=2.0, in_tokens=512.0, out_tokens=128.0, ttft_ms=80.0, itl_ms=12.0)
    pods = (PodMetrics("llm", "a", full), PodMetrics("llm", "b", replace(full, itl_ms=None)))
    variants = (
        Variant("llm", "d-h100", server.name, "H100", 2, 2, 2, 2, 64, "vllm", "1", 1, pods=pods),
        Variant("llm", "d-a100", server.name, "A100", 1, 1, 1, 1, None, "vllm", "1", 1, pods=pods[:1]),
    )
    observed = ObservedServer(server.name, server.model, server.class_name, variants, full, None)
    first, second, third = observations_from_snapshot(Snapshot(1.0, "1m", (observed,)), spec)
    queue = server.max_queue_size or 640
    assert first == Observation(server.model, "H100", 2.0, 512.0, 128.0, 64, queue, 80.0, 12.0, "llm/a", 1.0)
    assert math.isnan(second.itl_ms) and "itl_ms is not a finite number" in (second.problem() or "")
    assert third.max_batch == 0 and "max_batch" in (third.problem() or "")


def test_many_replicas_of_one_pair_use_a_spread_of_max_updates() -> None:
    """40 replicas of one pair: 16 spread over the rates (both extremes) are filtered, 24 reported unused."""
    tuner = tracking_tuner()
    loads = [0.1 + 0.7 * i / 39 for i in range(40)]
    report = tuner.update([observe(256, 256, load, replica=f"pod-{i:02d}") for i, load in enumerate(loads)])
    key = report.key(*KEY)
    assert key is not None
    used = [o.replica for o in key.outcomes if o.status in ("accepted", "rejected")]
    unused = [o for o in key.outcomes if o.status == "unused"]
    assert len(used) == 16 and len(unused) == 24
    assert {"pod-00", "pod-39"} <= set(used)
    assert unused[0].reason == "40 replicas: 16 spread over the rates are used"
    assert key.counters.observations == 6 * len(POINTS) + 40


def test_failed_first_fits_back_off_until_new_operating_points() -> None:
    """Fits judged not identifiable are retried after 1, 2, 4 cycles at the same points; a new mix retries at once."""
    tuner = EKFTuner(settings=TunerSettings(max_condition=10.0))  # the ~62 of these points fails every fit
    loads = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    attempts = []
    for cycle in range(9):
        report = tuner.update([observe(512, 256, load, replica=f"p{i}-{cycle}") for i, load in enumerate(loads)])
        assert report.keys[0].phase == "collecting" and report.keys[0].identifiable is False
        attempts.append(not any("next in" in n for n in report.keys[0].notes))
    assert attempts == [True, True, False, True, False, False, False, True, False]
    report = tuner.update([observe(2048, 64, load, replica=f"q{i}") for i, load in enumerate((0.2, 0.5, 0.8))])
    assert not any("next in" in n for n in report.keys[0].notes)
