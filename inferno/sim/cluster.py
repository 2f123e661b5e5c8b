"""An in-memory cluster: the Deployment API that the collector and the actuator use, and pods behind it.

:class:`Cluster` implements :class:`~inferno.k8s.DeploymentApi` the way the API server behaves where
inferno relies on it: label selectors (equality and set-based), JSON patches (RFC 6902: add, remove,
replace, move, copy, test) applied all or nothing, a resourceVersion bumped by every write (so the
actuator's ``test`` of it guards against races), a generation bumped by spec changes, Events kept in a
list, and errors as :class:`~inferno.k8s.KubeError` with the API server's status codes (404 unknown,
422 a patch that does not apply). It is thread-safe.

:class:`Kubelet` plays the Deployment controller and the kubelets: it keeps, for every Deployment,
``spec.replicas`` pods of its current pod template running through a :class:`PodRuntime` (the demo's
emulated vLLM pods), replaces pods when the template changes (a ``--max-num-seqs`` change rolls every
pod: old pods go as new ones become ready), and writes ``status`` (replicas, ready, updated, available)
back. Pods are named ``<deployment>-<template hash>-<id>`` as a ReplicaSet names them.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from inferno.k8s import (
    ACCELERATOR_LABEL,
    CLASS_LABEL,
    MANAGED_LABEL,
    MODEL_LABEL,
    SERVER_LABEL,
    Deployment,
    KubeError,
)

__all__ = ["Cluster", "Kubelet", "PodRuntime", "apply_json_patch", "managed_deployment", "selector_matches"]


def managed_deployment(
    name: str,
    *,
    namespace: str,
    server: str,
    model: str,
    accelerator: str,
    service_class: str,
    replicas: int,
    max_num_seqs: int,
    ready: int = 0,
) -> dict[str, Any]:
    """A vLLM Deployment manifest carrying inferno's label contract (``ready`` pods reported ready)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app": name,
                MANAGED_LABEL: "true",
                SERVER_LABEL: server,
                MODEL_LABEL: model,
                CLASS_LABEL: service_class,
                ACCELERATOR_LABEL: accelerator,
            },
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:emulated",
                            "command": ["vllm", "serve"],
                            "args": [model, "--max-num-seqs", str(max_num_seqs)],
                        }
                    ]
                },
            },
        },
        "status": {"replicas": ready, "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": ready},
    }


class PatchError(ValueError):
    """A JSON patch that does not apply."""


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"{pointer!r} is not a JSON pointer")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, appending: bool) -> int:
    if appending and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"{token!r} is not an array index")
    index = int(token)
    if index > len(container) or (index == len(container) and not appending):
        raise PatchError(f"index {index} is out of range")
    return index


def _parent(document: Any, pointer: str) -> tuple[Any, str]:
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchError("the whole document cannot be the target")
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"{pointer}: {token!r} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, appending=False)]
        else:
            raise PatchError(f"{pointer}: {token!r} is inside a scalar")
    return node, tokens[-1]


def _get(document: Any, pointer: str) -> Any:
    node = document
    for token in _tokens(pointer):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, appending=False)]
        else:
            raise PatchError(f"{pointer} does not exist")
    return node


def _add(document: Any, pointer: str, value: Any) -> None:
    parent, token = _parent(document, pointer)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, appending=True), value)
    else:
        raise PatchError(f"{pointer}: the parent is a scalar")


def _remove(document: Any, pointer: str) -> Any:
    parent, token = _parent(document, pointer)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"{pointer} does not exist")
        return parent.pop(token)
    if isinstance(parent, list):
        return parent.pop(_index(parent, token, appending=False))
    raise PatchError(f"{pointer}: the parent is a scalar")


def apply_json_patch(document: Any, ops: Sequence[Mapping[str, Any]]) -> Any:
    """``document`` with the RFC 6902 patch ``ops`` applied (a new object); PatchError when any op fails."""
    result = copy.deepcopy(document)
    for number, op in enumerate(ops):
        kind, path = op.get("op"), op.get("path")
        if not isinstance(path, str):
            raise PatchError(f"op {number}: no path")
        try:
            if kind == "add":
                _add(result, path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                _remove(result, path)
            elif kind == "replace":
                _remove(result, path)
                _add(result, path, copy.deepcopy(op["value"]))
            elif kind in ("move", "copy"):
                source = op["from"]
                value = _remove(result, source) if kind == "move" else copy.deepcopy(_get(result, source))
                _add(result, path, value)
            elif kind == "test":
                if _get(result, path) != op["value"]:
                    raise PatchError(f"{path} is not {op['value']!r}")
            else:
                raise PatchError(f"unknown op {kind!r}")
        except KeyError as exc:
            raise PatchError(f"op {number} ({kind}) misses {exc}") from None
        except PatchError as exc:
            raise PatchError(f"op {number} ({kind}): {exc}") from None
    return result


_REQUIREMENT = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*(?:(==|=|!=)\s*([\w.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy a label selector (``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a)``).

    ValueError on a selector this cannot read.
    """
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    for part in (p for p in parts if p.strip()):
        match = _REQUIREMENT.match(part)
        if match is None:
            raise ValueError(f"cannot read the label selector requirement {part.strip()!r}")
        negated, key, op, value, set_op, values = match.groups()
        if negated and (op or set_op):
            raise ValueError(f"cannot read the label selector requirement {part.strip()!r}")
        if negated:
            ok = key not in labels
        elif op in ("=", "=="):
            ok = labels.get(key) == value
        elif op == "!=":
            ok = labels.get(key) != value
        elif set_op:
            choices = {v.strip() for v in values.split(",") if v.strip()}
            ok = labels.get(key) in choices if set_op == "in" else labels.get(key) not in choices
        else:
            ok = key in labels
        if not ok:
            return False
    return True


Listener = Callable[[str, str], None]


class Cluster:
    """Deployments and Events in memory, behind the :class:`~inferno.k8s.DeploymentApi` methods."""

    def __init__(self, gpus: Mapping[str, int] | None = None, clock: Callable[[], float] = time.time) -> None:
        self._deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self._gpus = dict(gpus or {})
        self._clock = clock
        self._lock = threading.RLock()
        self._version = itertools.count(1)
        self._listeners: list[Listener] = []
        self.events: list[dict[str, Any]] = []
        """Events recorded, oldest first."""

    def watch(self, listener: Listener) -> None:
        """Call ``listener(namespace, name)`` after every write to a Deployment (outside the lock)."""
        self._listeners.append(listener)

    def _notify(self, namespace: str, name: str) -> None:
        for listener in list(self._listeners):
            listener(namespace, name)

    def add(self, manifest: Mapping[str, Any]) -> Deployment:
        """Create a Deployment; KubeError 409 when it exists."""
        body = copy.deepcopy(dict(manifest))
        meta = body.setdefault("metadata", {})
        key = (str(meta.get("namespace") or "default"), str(meta["name"]))
        with self._lock:
            if key in self._deployments:
                raise KubeError(f"create Deployment {key[0]}/{key[1]}", 409, "already exists")
            meta["namespace"] = key[0]
            meta.setdefault("uid", hashlib.sha1(f"{key}".encode()).hexdigest()[:32])
            meta["resourceVersion"] = str(next(self._version))
            meta["generation"] = 1
            body.setdefault("spec", {}).setdefault("replicas", 1)
            body.setdefault("status", {})
            self._deployments[key] = body
            created = Deployment.from_manifest(body)
        self._notify(*key)
        return created

    def manifest(self, namespace: str, name: str) -> dict[str, Any]:
        """A copy of the stored Deployment; KubeError 404 when there is none."""
        with self._lock:
            return copy.deepcopy(self._stored(namespace, name, "read"))

    def _stored(self, namespace: str, name: str, verb: str) -> dict[str, Any]:
        found = self._deployments.get((namespace, name))
        if found is None:
            raise KubeError(f"{verb} Deployment {namespace}/{name}", 404, f'deployments.apps "{name}" not found')
        return found

    def names(self) -> list[tuple[str, str]]:
        """(namespace, name) of every Deployment, sorted."""
        with self._lock:
            return sorted(self._deployments)

    # --- DeploymentApi ------------------------------------------------------------------------

    def list_deployments(self, namespaces: Sequence[str], selector: str) -> list[Deployment]:
        """Deployments matching ``selector`` in ``namespaces`` (all when empty); KubeError 400 on a bad selector."""
        with self._lock:
            items = [
                copy.deepcopy(d)
                for (ns, _), d in sorted(self._deployments.items())
                if not namespaces or ns in namespaces
            ]
        try:
            chosen = [d for d in items if selector_matches(selector, (d["metadata"].get("labels") or {}))]
        except ValueError as exc:
            raise KubeError("list Deployments", 400, str(exc)) from exc
        return [Deployment.from_manifest(d) for d in chosen]

    def get_deployment(self, namespace: str, name: str) -> Deployment:
        """The Deployment as it is now."""
        return Deployment.from_manifest(self.manifest(namespace, name))

    def patch_deployment(self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]) -> Deployment:
        """Apply a JSON patch, all of it or none; KubeError 422 when it does not apply."""
        what = f"patch Deployment {namespace}/{name}"
        with self._lock:
            stored = self._stored(namespace, name, "patch")
            try:
                patched = apply_json_patch(stored, ops)
            except PatchError as exc:
                raise KubeError(what, 422, str(exc)) from exc
            meta = patched.get("metadata")
            if not isinstance(meta, dict) or any(
                meta.get(k) != stored["metadata"].get(k) for k in ("name", "namespace", "uid")
            ):
                raise KubeError(what, 422, "metadata.name, namespace and uid cannot change")
            if not isinstance(patched.get("spec"), dict) or not isinstance(patched["spec"].get("replicas", 1), int):
                raise KubeError(what, 422, "spec.replicas must be an integer")
            if patched["spec"] != stored["spec"]:
                meta["generation"] = int(stored["metadata"].get("generation", 1)) + 1
            meta["resourceVersion"] = str(next(self._version))
            self._deployments[namespace, name] = patched
            result = Deployment.from_manifest(patched)
        self._notify(namespace, name)
        return result

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        """Keep a core/v1 Event; KubeError 422 when it has no name or names another namespace."""
        meta = event.get("metadata") or {}
        if not meta.get("name") or meta.get("namespace", namespace) != namespace:
            raise KubeError(f"create Event in {namespace}", 422, "an Event needs a name in its own namespace")
        with self._lock:
            self.events.append(copy.deepcopy(dict(event)))

    def gpu_inventory(self) -> dict[str, int]:
        """The configured cards per GPU product."""
        return dict(self._gpus)

    # --- for the pod controller -------------------------------------------------------------

    def update_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Replace a Deployment's status (a new resourceVersion only when it changes)."""
        with self._lock:
            stored = self._stored(namespace, name, "update status of")
            if stored.get("status") == status:
                return
            stored["status"] = copy.deepcopy(dict(status))
            stored["metadata"]["resourceVersion"] = str(next(self._version))


class PodRuntime(Protocol):
    """Runs the pods the :class:`Kubelet` decides on."""

    def start(self, deployment: Deployment, pod: str) -> None:
        """Start pod ``pod`` of ``deployment`` (its spec as the Deployment has it now)."""
        ...

    def stop(self, namespace: str, pod: str) -> None:
        """Stop a pod (it may finish its work first; it takes no more)."""
        ...

    def ready(self, namespace: str, pod: str) -> bool:
        """Whether the pod passes its readiness probe."""
        ...


@dataclass
class _Pod:
    name: str
    template: str
    created: float


class Kubelet:
    """Keeps the pods of every Deployment of a :class:`Cluster` in line with its spec, and reports status."""

    def __init__(self, cluster: Cluster, runtime: PodRuntime, clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.runtime = runtime
        self._clock = clock
        self._pods: dict[tuple[str, str], list[_Pod]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def pods(self, namespace: str, deployment: str) -> list[str]:
        """Names of the pods of a Deployment, oldest first."""
        with self._lock:
            return [p.name for p in self._pods.get((namespace, deployment), [])]

    def reconcile(self) -> None:
        """One pass over every Deployment: start and stop pods, then write its status."""
        with self._lock:
            for namespace, name in self.cluster.names():
                self._reconcile(namespace, name)

    def stop_all(self) -> None:
        """Stop every pod."""
        with self._lock:
            for (namespace, _), pods in self._pods.items():
                for pod in pods:
                    self.runtime.stop(namespace, pod.name)
            self._pods.clear()

    def _reconcile(self, namespace: str, name: str) -> None:
        manifest = self.cluster.manifest(namespace, name)
        deployment = Deployment.from_manifest(manifest)
        spec = manifest.get("spec") or {}
        template = hashlib.sha1(json.dumps(spec.get("template") or {}, sort_keys=True).encode()).hexdigest()[:10]
        pods = self._pods.setdefault((namespace, name), [])
        wanted = max(0, deployment.replicas)

        def ready(pod: _Pod) -> bool:
            return self.runtime.ready(namespace, pod.name)

        current = [p for p in pods if p.template == template]
        old = [p for p in pods if p.template != template]
        for _ in range(wanted - len(current)):
            pod = _Pod(f"{name}-{template}-{next(self._ids):05x}", template, self._clock())
            self.runtime.start(deployment, pod.name)
            pods.append(pod)
            current.append(pod)
        # scale down: not-ready pods first, then the newest
        surplus = sorted(current, key=lambda p: (ready(p), -p.created))[: max(0, len(current) - wanted)]
        # old pods stay while the current ones are not ready yet (a rolling update)
        keep_old = max(0, wanted - sum(ready(p) for p in current if p not in surplus))
        surplus += sorted(old, key=lambda p: (ready(p), -p.created))[: max(0, len(old) - keep_old)]
        for pod in surplus:
            self.runtime.stop(namespace, pod.name)
            pods.remove(pod)
        ready_count = sum(ready(p) for p in pods)
        status = {
            "observedGeneration": deployment.generation,
            "replicas": len(pods),
            "updatedReplicas": sum(p.template == template for p in pods),
            "readyReplicas": ready_count,
            "availableReplicas": ready_count,
        }
        self.cluster.update_status(namespace, name, status)
