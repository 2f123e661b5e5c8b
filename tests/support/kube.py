"""kmock's Kubernetes emulator on a real port, served from a background thread for the synchronous client.

kmock keeps objects in memory and records every request; it does not filter lists by label selector,
does not bump resourceVersion, and applies JSON patches with ``jsonpatch``. Tests say "emulator: kmock".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kubernetes import client

from inferno.k8s import Kube

DEPLOYMENTS = "apps/v1/deployments"
EVENTS = "v1/events"
NODES = "v1/nodes"
LEASES = "coordination.k8s.io/v1/leases"
CONFIGMAPS = "v1/configmaps"
OPTIMIZERS = "inferno.ai/v1alpha1/optimizers"
"""The Optimizer custom resource (kmock serves its status subresource by patching the object itself)."""
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class Emulator:
    """A running KubernetesEmulator: its URL, its objects and the requests it received."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self.handler: kmock.KubernetesEmulator
        self.url = ""
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("kmock did not start")

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
            for resource in (DEPLOYMENTS, EVENTS, NODES, LEASES, CONFIGMAPS, OPTIMIZERS):
                handler.resources[resource] = {}
            self.handler = handler
            self.url = str(server.url).rstrip("/")
            self._started.set()
            await self._stop.wait()

    def close(self) -> None:
        """Stop the server and its thread (again: nothing)."""
        if self._loop.is_closed():
            return
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()

    def kube(self, timeout: float = 5.0) -> Kube:
        """A Kube talking to this emulator."""
        configuration = client.Configuration()
        configuration.host = self.url
        return Kube(client.ApiClient(configuration), timeout)

    def kubeconfig(self, path: Path, context: str = "emulator") -> Path:
        """Write a kubeconfig whose context ``context`` points at this emulator."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "t"}}],
                    "contexts": [{"name": context, "context": {"cluster": "kmock", "user": "tester"}}],
                    "current-context": context,
                }
            )
        )
        return path

    def add(self, *manifests: Mapping[str, Any], resource: str = DEPLOYMENTS) -> None:
        """Store objects (namespace and name from their metadata)."""
        for manifest in manifests:
            meta = manifest["metadata"]
            self.handler.objects[resource, meta.get("namespace"), meta["name"]] = dict(manifest)

    def get(self, namespace: str | None, name: str, resource: str = DEPLOYMENTS) -> dict[str, Any]:
        """The stored object as it is now."""
        return dict(self.handler.objects[resource, namespace, name].raw)

    def objects(self, resource: str) -> list[dict[str, Any]]:
        """Every stored object of a resource."""
        return [obj.raw for key, obj in self.handler.objects.items() if key[0] == kmock.resource(resource)]

    def requests(self, *methods: str) -> list[kmock.Request]:
        """The requests received, optionally only those with one of ``methods``."""
        return [r for r in self.handler if not methods or str(r.method.value).upper() in methods]

    def writes(self) -> list[kmock.Request]:
        """Every request that could change something."""
        return self.requests(*WRITES)

    def fail(self, method: str, path: str, status: int, message: str) -> None:
        """Answer ``method path`` with a Kubernetes Status error from now on."""
        self.handler[f"{method} {path}"] << kmock.KubernetesError(status=status, reason="Injected", message=message)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A fresh Kubernetes API emulator (kmock) for one test."""
    emu = Emulator()
    yield emu
    emu.close()


def deployment(
    name: str,
    *,
    namespace: str = "llm",
    server: str | None = None,
    accelerator: str | None = "H100",
    model: str = "llama-8b",
    service_class: str | None = "Premium",
    replicas: int = 1,
    ready: int | None = None,
    args: Sequence[str] = ("--model", "llama-8b", "--max-num-seqs", "64"),
    command: Sequence[str] = ("vllm", "serve"),
    containers: Sequence[Mapping[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    resource_version: str = "100",
    generation: int = 3,
    managed: bool = True,
) -> dict[str, Any]:
    """A Deployment manifest carrying the inferno label contract."""
    all_labels = {"app": name}
    if managed:
        all_labels["inferno.server.managed"] = "true"
    optional = {
        "inferno.server.name": server,
        "inferno.server.model": model,
        "inferno.server.class": service_class,
        "inferno.server.allocation.accelerator": accelerator,
    }
    all_labels |= {k: v for k, v in optional.items() if v is not None}
    all_labels |= dict(labels or {})
    if containers is None:
        containers = [
            {"name": "vllm", "image": "registry.local/llm-server:1", "command": list(command), "args": list(args)}
        ]
    ready = replicas if ready is None else ready
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "labels": all_labels,
        "resourceVersion": resource_version,
        "generation": generation,
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [dict(c) for c in containers]}},
        },
        "status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            "availableReplicas": ready,
            "observedGeneration": generation,
        },
    }


def node(name: str, product: str | None, gpus: int, *, unschedulable: bool = False) -> dict[str, Any]:
    """A node manifest with an NVIDIA GPU product label and allocatable GPUs."""
    labels = {"kubernetes.io/hostname": name} | ({"nvidia.com/gpu.product": product} if product else {})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"allocatable": {"cpu": "64", "nvidia.com/gpu": str(gpus)}},
    }
