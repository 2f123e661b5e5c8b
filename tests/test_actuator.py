"""Tests of the actuator: patches, Events, skip-on-change, errors (against kmock), dry run, plans to actions."""

from __future__ import annotations

import io
import json

import pytest

from inferno.actuator import ApplyError, DryRunActuator, KubeActuator, plan_actions, read_actions
from inferno.errors import ConfigError
from inferno.state import (
    Action,
    Allocation,
    Load,
    Metrics,
    ObservedServer,
    Plan,
    Snapshot,
    Variant,
    VariantAllocation,
)
from tests.support.kube import EVENTS, Emulator, deployment

NOW = 1767225600.0
"""2026-01-01T00:00:00Z"""
PATH = "/apis/apps/v1/namespaces/llm/deployments"


def _action(name: str = "chat-h100", server: str = "chat", **kw: object) -> Action:
    fields: dict[str, object] = {
        "namespace": "llm",
        "deployment": name,
        "server": server,
        "accelerator": "H100",
        "replicas_from": 1,
        "replicas_to": 3,
        "reason": "milp (optimal): 3 x H100",
        "resource_version": "100",
        "generation": 3,
    }
    return Action(**(fields | kw))  # type: ignore[arg-type]


def _actuator(emulator: Emulator) -> KubeActuator:
    return KubeActuator(emulator.kube(), clock=lambda: NOW)


def test_an_action_patches_replicas_labels_and_decision_in_one_patch(emulator: Emulator) -> None:
    """emulator: kmock. One JSON patch: resourceVersion test, replicas, accelerator label, decision annotation."""
    emulator.add(deployment("chat-h100", server="chat"))
    actuation = _actuator(emulator).apply([_action()])
    assert [r.outcome for r in actuation.results] == ["applied"] and actuation.complete
    (patch,) = emulator.requests("PATCH")

    def compact(value: object) -> str:
        return json.dumps(value, separators=(",", ":"))

    decision = {"time": "2026-01-01T00:00:00Z", "replicas": [1, 3], "maxNumSeqs": None, "reason": _action().reason}
    assert patch.data == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "100"},
        {"op": "add", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/inferno.server.allocation.accelerator", "value": "H100"},
        {"op": "add", "path": "/metadata/annotations", "value": {"inferno.server.decision": compact(decision)}},
    ]
    stored = emulator.get("llm", "chat-h100")
    assert stored["spec"]["replicas"] == 3
    assert stored["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "64"


def test_each_applied_action_records_an_event(emulator: Emulator) -> None:
    """emulator: kmock. A Normal 'Scaled' Event on the Deployment says what changed and why."""
    emulator.add(deployment("chat-h100", server="chat"))
    _actuator(emulator).apply([_action()])
    (event,) = emulator.objects(EVENTS)
    assert event["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": "llm",
        "name": "chat-h100",
        "uid": "uid-chat-h100",
    }
    assert (event["reason"], event["type"], event["source"]) == ("Scaled", "Normal", {"component": "inferno"})
    assert event["message"] == "llm/chat-h100: replicas 1->3: milp (optimal): 3 x H100"
    assert event["lastTimestamp"] == "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "m", "--max-num-seqs", "64"], ["--model", "m", "--max-num-seqs", "32"]),
        (["--model", "m", "--max-num-seqs=64"], ["--model", "m", "--max-num-seqs=32"]),
    ],
)
def test_max_num_seqs_is_rewritten_in_the_same_patch(emulator: Emulator, args: list[str], expected: list[str]) -> None:
    """emulator: kmock. A new --max-num-seqs keeps its form, sets the maxbatchsize label, and says 'Reconfigured'."""
    emulator.add(
        deployment("chat-h100", server="chat", args=args, annotations={"note": "kept"}),
        deployment("chat-a100", server="chat", accelerator="A100"),
    )
    action = _action(replicas_to=2, max_num_seqs_from=64, max_num_seqs_to=32)
    _actuator(emulator).apply([action])
    (patch,) = emulator.requests("PATCH")
    assert {"op": "add", "path": "/spec/template/spec/containers/0/args", "value": expected} in patch.data
    assert {"op": "add", "path": "/metadata/labels/inferno.server.allocation.maxbatchsize", "value": "32"} in patch.data
    stored = emulator.get("llm", "chat-h100")
    assert stored["spec"]["template"]["spec"]["containers"][0]["args"] == expected
    assert stored["metadata"]["annotations"]["note"] == "kept"
    assert json.loads(stored["metadata"]["annotations"]["inferno.server.decision"])["maxNumSeqs"] == [64, 32]
    assert emulator.get("llm", "chat-a100")["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "64"
    assert emulator.objects(EVENTS)[0]["reason"] == "Reconfigured"


def test_a_deployment_changed_since_collection_is_skipped(emulator: Emulator) -> None:
    """emulator: kmock. resourceVersion or replicas moved on: skipped, no patch; other servers still act."""
    emulator.add(
        deployment("chat-h100", server="chat", resource_version="101"),
        deployment("code-h100", server="code", replicas=2),
        deployment("docs-h100", server="docs"),
    )
    actions = [
        _action(),
        _action("code-h100", "code", resource_version=""),
        _action("docs-h100", "docs"),
    ]
    actuation = _actuator(emulator).apply(actions)
    assert [(r.action.deployment, r.outcome) for r in actuation.results] == [
        ("chat-h100", "skipped"),
        ("code-h100", "skipped"),
        ("docs-h100", "applied"),
    ]
    assert actuation.results[0].detail == "changed since collection: resourceVersion 100 -> 101"
    assert actuation.results[1].detail == "changed since collection: spec.replicas is 2, the action expects 1"
    assert not actuation.complete
    assert [r.url.path for r in emulator.requests("PATCH")] == [f"{PATH}/docs-h100"]


def test_a_conflict_reports_what_was_and_was_not_applied(emulator: Emulator) -> None:
    """emulator: kmock. 409 on one server: ApplyError lists it failed, its scale-down held, others applied."""
    emulator.add(
        deployment("chat-h100", server="chat"),
        deployment("chat-a100", server="chat", accelerator="A100", replicas=2),
        deployment("code-h100", server="code"),
    )
    emulator.fail("patch", f"{PATH}/chat-h100", 409, "the object has been modified")
    scale_down = _action("chat-a100", accelerator="A100", replicas_from=2, replicas_to=0)
    with pytest.raises(ApplyError) as info:
        _actuator(emulator).apply([scale_down, _action(), _action("code-h100", "code")])
    actuation = info.value.actuation
    assert [(r.action.deployment, r.outcome) for r in actuation.results] == [
        ("chat-h100", "failed"),
        ("code-h100", "applied"),
        ("chat-a100", "held"),
    ]
    assert actuation.having("applied") == (_action("code-h100", "code"),)
    assert str(info.value).splitlines() == [
        "not every action was applied (1 failed, 1 held, 1 applied)",
        "failed: llm/chat-h100: replicas 1->3: patch Deployment llm/chat-h100: HTTP 409: the object has been modified",
        "applied: llm/code-h100: replicas 1->3",
        "held: llm/chat-a100: replicas 2->0: not tried: llm/chat-h100 was failed",
    ]
    assert info.value.transient
    assert [r.url.path for r in emulator.requests("PATCH")] == [f"{PATH}/chat-h100", f"{PATH}/code-h100"]
    assert [e["involvedObject"]["name"] for e in emulator.objects(EVENTS)] == ["code-h100"]


def test_a_server_error_on_read_fails_the_action(emulator: Emulator) -> None:
    """emulator: kmock. 500 on the re-read: failed with the status, nothing patched."""
    emulator.add(deployment("chat-h100", server="chat"))
    emulator.fail("get", f"{PATH}/chat-h100", 500, "etcdserver: request timed out")
    with pytest.raises(ApplyError, match="HTTP 500: etcdserver: request timed out"):
        _actuator(emulator).apply([_action()])
    assert emulator.writes() == []


def test_a_lost_event_does_not_undo_an_applied_patch(emulator: Emulator) -> None:
    """emulator: kmock. The patch went through but the Event was refused: applied, with the reason noted."""
    emulator.add(deployment("chat-h100", server="chat"))
    emulator.fail("post", "/api/v1/namespaces/llm/events", 403, "events is forbidden")
    (result,) = _actuator(emulator).apply([_action()]).results
    assert result.outcome == "applied"
    assert result.detail == "the Event was not recorded: create Event in llm: HTTP 403: events is forbidden"


def test_dry_run_prints_a_table_and_writes_nothing(emulator: Emulator) -> None:
    """emulator: kmock. The dry run takes no client: no request at all reaches the API server."""
    emulator.add(deployment("chat-h100", server="chat"))
    out = io.StringIO()
    actuation = DryRunActuator(out).apply([_action(max_num_seqs_from=64, max_num_seqs_to=32)])
    assert actuation.dry_run and actuation.complete
    assert [r.outcome for r in actuation.results] == ["planned"]
    text = out.getvalue()
    assert "planned actions (dry run): 1" in text
    assert "llm/chat-h100" in text and "1 -> 3" in text and "64 -> 32" in text
    assert emulator.requests() == []


def test_dry_run_json_lines_read_back_as_actions() -> None:
    """--json prints one action per line, which read_actions turns back into the same actions."""
    actions = [_action(), _action("code-h100", "code", max_num_seqs_to=16)]
    out = io.StringIO()
    DryRunActuator(out, as_json=True).apply(actions)
    assert len(out.getvalue().splitlines()) == 2
    assert read_actions(out.getvalue(), "dry-run") == tuple(actions)


def test_actions_are_read_from_a_list_or_an_object() -> None:
    """A JSON list and {"actions": [...]} both load."""
    one = {
        "namespace": "llm",
        "deployment": "d",
        "server": "s",
        "accelerator": "H100",
        "replicas_from": 0,
        "replicas_to": 2,
    }
    assert read_actions(json.dumps([one]), "f") == read_actions(json.dumps({"actions": [one]}), "f")
    assert read_actions(json.dumps([one]), "f")[0].replicas_to == 2


def test_bad_actions_name_the_file_and_field() -> None:
    """Negative replicas, unknown keys and broken lines are ConfigErrors with their place."""
    bad = [
        {"namespace": "n", "deployment": "d", "server": "s", "accelerator": "a", "replicas_from": 1, "replicas_to": -1}
    ]
    with pytest.raises(ConfigError, match=r"plan.json: \[0\].replicas_to: Input should be greater than or equal to 0"):
        read_actions(json.dumps(bad), "plan.json")
    with pytest.raises(ConfigError, match=r"plan.json: \[0\].colour: Unexpected keyword argument"):
        read_actions(json.dumps([{**bad[0], "replicas_to": 1, "colour": "red"}]), "plan.json")
    with pytest.raises(ConfigError, match=r"plan\.json: line 2: invalid JSON"):
        read_actions('{"a": 1}\n{oops\n', "plan.json")


# --- plans to actions -------------------------------------------------------------------------


def _variant(server: str, accelerator: str, replicas: int, seqs: int | None = 64) -> Variant:
    return Variant("llm", f"{server}-{accelerator.lower()}", server, accelerator, replicas, replicas, replicas,
                   replicas, seqs, "vllm", "7", 2)  # fmt: skip


def _server(name: str, *variants: Variant, complete: bool = True) -> ObservedServer:
    load = Load(60.0, 100.0, 100.0, "prometheus")
    return ObservedServer(name, "m", "Premium", variants, Metrics(), load, () if complete else ("ITL missing",))


def _alloc(server: str, *variants: tuple[str, int, int]) -> Allocation:
    return Allocation(
        server,
        tuple(VariantAllocation(a, a, n, b, 1.0, n, 2.0 * n, 120.0, 18.5) for a, n, b in variants),
        demand_rps=2.0 * sum(n for _, n, _ in variants),
        unmet_rps=0.0,
    )


def test_a_plan_becomes_one_action_per_changed_variant() -> None:
    """New replicas and batch on the used variant, 0 on the unused one; unchanged variants get no action."""
    snapshot = Snapshot(
        0.0,
        "1m",
        (
            _server("chat", _variant("chat", "H100", 1), _variant("chat", "A100", 2)),
            _server("code", _variant("code", "L4", 2)),
            _server("docs", _variant("docs", "L4", 1), complete=False),
        ),
    )
    plan = Plan(
        {
            "chat": _alloc("chat", ("H100", 3, 32)),
            "code": _alloc("code", ("L4", 2, 64)),
            "docs": _alloc("docs", ("L4", 5, 64)),
        },
        solver="milp",
        status="optimal",
        solve_ms=3.0,
    )
    h100, a100 = plan_actions(plan, snapshot)
    assert (h100.deployment, h100.replicas_from, h100.replicas_to) == ("chat-h100", 1, 3)
    assert (h100.max_num_seqs_from, h100.max_num_seqs_to, h100.resource_version, h100.generation) == (64, 32, "7", 2)
    assert h100.reason == "milp (optimal): 3 x H100 for 6 of 6 req/s, TTFT 120 ms, ITL 18.5 ms"
    assert (a100.deployment, a100.replicas_to, a100.max_num_seqs_to) == ("chat-a100", 0, None)
    assert a100.reason == "milp (optimal): variant not used; 3 replicas serve 6 req/s"
