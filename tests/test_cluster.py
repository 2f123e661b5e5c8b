"""Tests of the in-memory cluster: JSON patches, selectors, API semantics, the pod controller, the stages on it."""

from __future__ import annotations

from typing import Any

import pytest

from inferno.actuator import KubeActuator
from inferno.collector import Collector
from inferno.config import Settings
from inferno.k8s import Deployment, KubeError
from inferno.sim.cluster import Cluster, Kubelet, PatchError, apply_json_patch, managed_deployment, selector_matches
from inferno.state import Action


def _deployment(name: str = "chat-h100", replicas: int = 1, **kwargs: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "namespace": "llm",
        "server": "chat",
        "model": "m",
        "accelerator": "H100",
        "service_class": "Premium",
        "max_num_seqs": 64,
    }
    return managed_deployment(name, **(fields | kwargs), replicas=replicas)


def test_json_patch_follows_rfc_6902() -> None:
    """add/remove/replace/move/copy/test on objects and arrays, '-' appends, ~1 and ~0 escape; input untouched."""
    doc = {"a": {"b/c": 1, "d~e": [1, 2]}, "list": [1, 2, 3]}
    ops = [
        {"op": "add", "path": "/a/new", "value": {"x": 1}},
        {"op": "replace", "path": "/a/b~1c", "value": 5},
        {"op": "add", "path": "/list/1", "value": 9},
        {"op": "add", "path": "/list/-", "value": 4},
        {"op": "remove", "path": "/list/0"},
        {"op": "move", "from": "/a/d~0e", "path": "/moved"},
        {"op": "copy", "from": "/a/new", "path": "/copied"},
        {"op": "test", "path": "/copied/x", "value": 1},
    ]
    result = apply_json_patch(doc, ops)
    assert result == {"a": {"b/c": 5, "new": {"x": 1}}, "list": [9, 2, 3, 4], "moved": [1, 2], "copied": {"x": 1}}
    assert doc == {"a": {"b/c": 1, "d~e": [1, 2]}, "list": [1, 2, 3]}


@pytest.mark.parametrize(
    "op",
    [
        {"op": "test", "path": "/a", "value": 2},
        {"op": "remove", "path": "/missing"},
        {"op": "replace", "path": "/missing", "value": 1},
        {"op": "add", "path": "/list/5", "value": 1},
        {"op": "add", "path": "/nope/x", "value": 1},
        {"op": "jump", "path": "/a"},
        {"op": "add", "path": "a", "value": 1},
    ],
)
def test_json_patch_errors(op: dict[str, Any]) -> None:
    """A failed test, a missing target, an index out of range, an unknown op or a bad pointer is a PatchError."""
    with pytest.raises(PatchError):
        apply_json_patch({"a": 1, "list": [1]}, [op])


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=chat", True),
        ("app==chat,tier=gpu", True),
        ("app!=chat", False),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("app in (chat, batch),tier notin (cpu)", True),
        ("app in (batch)", False),
        ("missing notin (x)", True),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    """Equality, inequality, existence and set-based requirements, ANDed."""
    assert selector_matches(selector, {"app": "chat", "tier": "gpu"}) is expected


def test_writes_bump_versions_and_patches_apply_all_or_nothing() -> None:
    """A patch bumps resourceVersion (and generation when the spec changes); a failed test changes nothing (422)."""
    cluster = Cluster()
    created = cluster.add(_deployment())
    assert (created.generation, created.replicas) == (1, 1)
    labelled = cluster.patch_deployment("llm", "chat-h100", [{"op": "add", "path": "/metadata/labels/x", "value": "y"}])
    assert labelled.generation == 1 and int(labelled.resource_version) > int(created.resource_version)
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": labelled.resource_version},
        {"op": "add", "path": "/spec/replicas", "value": 3},
    ]
    scaled = cluster.patch_deployment("llm", "chat-h100", ops)
    assert (scaled.replicas, scaled.generation) == (3, 2)
    with pytest.raises(KubeError) as stale:
        cluster.patch_deployment("llm", "chat-h100", ops)
    assert stale.value.status == 422 and cluster.get_deployment("llm", "chat-h100").replicas == 3
    with pytest.raises(KubeError) as missing:
        cluster.get_deployment("llm", "nope")
    assert missing.value.status == 404
    with pytest.raises(KubeError) as renamed:
        cluster.patch_deployment("llm", "chat-h100", [{"op": "replace", "path": "/metadata/name", "value": "x"}])
    assert renamed.value.status == 422


def test_lists_filter_by_namespace_and_selector() -> None:
    """list_deployments honours namespaces and the selector; a bad selector is a 400."""
    cluster = Cluster()
    cluster.add(_deployment("a-h100"))
    cluster.add(_deployment("b-h100", namespace="other"))
    unmanaged = _deployment("c-h100")
    unmanaged["metadata"]["labels"]["inferno.server.managed"] = "false"
    cluster.add(unmanaged)
    names = [d.name for d in cluster.list_deployments((), "inferno.server.managed=true")]
    assert names == ["a-h100", "b-h100"]
    assert [d.name for d in cluster.list_deployments(("llm",), "")] == ["a-h100", "c-h100"]
    with pytest.raises(KubeError) as bad:
        cluster.list_deployments((), "a in b")
    assert bad.value.status == 400


class FakeRuntime:
    """Pods that become ready when the test says so."""

    def __init__(self) -> None:
        self.running: dict[str, Deployment] = {}
        self.ready_pods: set[str] = set()
        self.stopped: list[str] = []

    def start(self, deployment: Deployment, pod: str) -> None:
        """Record the pod."""
        self.running[pod] = deployment

    def stop(self, namespace: str, pod: str) -> None:
        """Forget the pod."""
        self.running.pop(pod)
        self.stopped.append(pod)

    def ready(self, namespace: str, pod: str) -> bool:
        """Ready when marked."""
        return pod in self.ready_pods


def test_kubelet_scales_rolls_and_reports_status() -> None:
    """Pods follow spec.replicas; status counts ready ones; a new template replaces pods as new ones get ready."""
    cluster, runtime = Cluster(), FakeRuntime()
    cluster.add(_deployment(replicas=2))
    kubelet = Kubelet(cluster, runtime)
    kubelet.reconcile()
    first = kubelet.pods("llm", "chat-h100")
    assert len(first) == 2 and all(p.startswith("chat-h100-") and len(p.split("-")) == 4 for p in first)
    assert cluster.get_deployment("llm", "chat-h100").ready_replicas == 0
    runtime.ready_pods |= set(first)
    kubelet.reconcile()
    status = cluster.get_deployment("llm", "chat-h100")
    assert (status.ready_replicas, status.available_replicas, status.updated_replicas) == (2, 2, 2)
    args = ["m", "--max-num-seqs", "32"]
    cluster.patch_deployment(
        "llm", "chat-h100", [{"op": "add", "path": "/spec/template/spec/containers/0/args", "value": args}]
    )
    kubelet.reconcile()
    pods = kubelet.pods("llm", "chat-h100")
    new = [p for p in pods if p not in first]
    assert len(pods) == 4 and len(new) == 2, "surge: old pods serve until new ones are ready"
    assert cluster.get_deployment("llm", "chat-h100").updated_replicas == 2
    runtime.ready_pods.add(new[0])
    kubelet.reconcile()
    assert len(kubelet.pods("llm", "chat-h100")) == 3 and len(runtime.stopped) == 1
    runtime.ready_pods.add(new[1])
    kubelet.reconcile()
    assert kubelet.pods("llm", "chat-h100") == new and sorted(runtime.stopped) == sorted(first)
    assert runtime.running[new[0]].containers[0]["args"] == args
    cluster.patch_deployment("llm", "chat-h100", [{"op": "add", "path": "/spec/replicas", "value": 1}])
    kubelet.reconcile()
    assert len(kubelet.pods("llm", "chat-h100")) == 1
    cluster.patch_deployment("llm", "chat-h100", [{"op": "add", "path": "/spec/replicas", "value": 3}])
    kubelet.reconcile()
    cluster.patch_deployment("llm", "chat-h100", [{"op": "add", "path": "/spec/replicas", "value": 1}])
    kubelet.reconcile()
    assert kubelet.pods("llm", "chat-h100") == [new[1]] or kubelet.pods("llm", "chat-h100") == [new[0]]
    assert all(p in runtime.ready_pods for p in kubelet.pods("llm", "chat-h100")), "not-ready pods go first"


def test_collector_and_actuator_run_on_the_in_memory_cluster() -> None:
    """The real Collector reads the Deployments and the real KubeActuator patches replicas and --max-num-seqs."""
    cluster = Cluster()
    cluster.add(_deployment(replicas=1))
    snapshot = Collector(cluster, None, Settings(namespaces=("llm",))).collect()
    (variant,) = snapshot.servers[0].variants
    assert (variant.deployment, variant.replicas, variant.max_num_seqs) == ("chat-h100", 1, 64)
    action = Action(
        namespace="llm",
        deployment="chat-h100",
        server="chat",
        accelerator="H100",
        replicas_from=1,
        replicas_to=3,
        max_num_seqs_from=64,
        max_num_seqs_to=48,
        reason="test",
        resource_version=variant.resource_version,
        generation=variant.generation,
    )
    result = KubeActuator(cluster, clock=lambda: 1_700_000_000.0).apply([action])
    assert [r.outcome for r in result.results] == ["applied"]
    after = cluster.get_deployment("llm", "chat-h100")
    assert after.replicas == 3 and after.containers[0]["args"] == ["m", "--max-num-seqs", "48"]
    assert after.labels["inferno.server.allocation.maxbatchsize"] == "48"
    assert len(cluster.events) == 1 and cluster.events[0]["reason"] == "Reconfigured"
    again = KubeActuator(cluster).apply([action])
    assert [r.outcome for r in again.results] == ["skipped"], "the Deployment changed since collection"
