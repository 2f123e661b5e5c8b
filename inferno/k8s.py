"""Kubernetes access: the only user of the ``kubernetes`` client.

:class:`Kube` reads Deployments and nodes and writes Deployment patches and Events, always as plain
JSON (the API's own camelCase shapes), and turns every client failure into a :class:`KubeError` that
carries the HTTP status. :func:`connect` builds one from the in-cluster service account or a
kubeconfig. The label contract of managed Deployments and the parsing of the vLLM command line live
here too, because both the collector and the actuator read them.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from inferno import crd
from inferno.config import Settings
from inferno.errors import ConfigError, InfernoError, Problem

# --- the label contract of managed Deployments (the predecessor's, kept loadable) --------------

MANAGED_LABEL = "inferno.server.managed"
SERVER_LABEL = "inferno.server.name"
MODEL_LABEL = "inferno.server.model"
CLASS_LABEL = "inferno.server.class"
ACCELERATOR_LABEL = "inferno.server.allocation.accelerator"
MAX_BATCH_LABEL = "inferno.server.allocation.maxbatchsize"
LOAD_RPM_LABEL = "inferno.server.load.rpm"
LOAD_IN_LABEL = "inferno.server.load.intokens"
LOAD_OUT_LABEL = "inferno.server.load.outtokens"
DECISION_ANNOTATION = "inferno.server.decision"
"""Annotation holding the last decision (JSON: time, replicas, max-num-seqs, reason)."""

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"

PAGE_SIZE = 500
"""Items per list request (the API pages with ``continue`` tokens)."""


class KubeError(InfernoError):
    """A Kubernetes API request failed; ``status`` is the HTTP status (0 = no answer)."""

    def __init__(self, what: str, status: int, message: str) -> None:
        self.status = status
        self.transient = status == 0 or status in (409, 429) or status >= 500
        answer = f"HTTP {status}" if status else "no answer"
        super().__init__(f"{what}: {answer}: {message}")


@dataclass(frozen=True)
class Deployment:
    """The parts of an apps/v1 Deployment that inferno reads."""

    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    resource_version: str
    generation: int
    replicas: int
    """spec.replicas (1 when absent, as the API defaults it)."""
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    containers: tuple[dict[str, Any], ...]
    """spec.template.spec.containers as the API returned them."""

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Deployment:
        """Read a Deployment from its JSON form."""
        meta = manifest.get("metadata") or {}
        spec = manifest.get("spec") or {}
        status = manifest.get("status") or {}
        pod_spec = (spec.get("template") or {}).get("spec") or {}
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
            resource_version=str(meta.get("resourceVersion", "")),
            generation=int(meta.get("generation", 0)),
            replicas=int(spec.get("replicas", 1)),
            ready_replicas=int(status.get("readyReplicas", 0)),
            updated_replicas=int(status.get("updatedReplicas", 0)),
            available_replicas=int(status.get("availableReplicas", 0)),
            containers=tuple(pod_spec.get("containers") or ()),
        )


# --- the vLLM command line ----------------------------------------------------------------

_FLAG = re.compile(r"--max[-_]num[-_]seqs")
_INLINE = re.compile(r"(?<![\w-])(--max[-_]num[-_]seqs)(=|\s+)(\S+)")
"""The flag with its value inside one item: ``--max-num-seqs=8``, or ``... --max-num-seqs 8 ...`` in a shell line."""
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh"})


@dataclass(frozen=True)
class VllmContainer:
    """The container that runs vLLM, and where its ``--max-num-seqs`` is."""

    index: int
    name: str
    command: tuple[str, ...]
    args: tuple[str, ...]

    def _occurrences(self) -> list[tuple[str, int, str, bool]]:
        """(field, item index, value, inline) of every ``--max-num-seqs``, in command-line order."""
        found = []
        for field_name, items in (("command", self.command), ("args", self.args)):
            for i, item in enumerate(items):
                if _FLAG.fullmatch(item) and i + 1 < len(items):
                    found.append((field_name, i + 1, items[i + 1], False))
                else:
                    found.extend((field_name, i, m.group(3), True) for m in _INLINE.finditer(item))
        return found

    @property
    def max_num_seqs(self) -> int | None:
        """The value vLLM uses (the last occurrence wins); None when not given. ValueError when not a number."""
        found = self._occurrences()
        if not found:
            return None
        value = found[-1][2]
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"container {self.name!r}: --max-num-seqs {value!r} is not a positive integer")
        return int(value)

    def with_max_num_seqs(self, value: int) -> tuple[str, list[str]]:
        """The field to rewrite ('command' or 'args') and its new items, keeping the form the flag is written in.

        Without the flag, ``--max-num-seqs N`` is appended to the args; ValueError when the command line is
        a shell script, where appended args would not reach vLLM.
        """
        found = self._occurrences()
        if not found:
            if self.command and self.command[0].rsplit("/", 1)[-1] in _SHELLS and "-c" in self.command:
                raise ValueError(f"container {self.name!r} runs a shell script without --max-num-seqs; add it there")
            return "args", [*self.args, "--max-num-seqs", str(value)]
        fields = {field_name for field_name, _, _, _ in found}
        if len(fields) > 1:
            raise ValueError(f"container {self.name!r} sets --max-num-seqs in both command and args")
        field_name = fields.pop()
        items = list(self.command if field_name == "command" else self.args)
        for _, i, _, inline in found:
            if inline:
                items[i] = _INLINE.sub(lambda m: f"{m.group(1)}{m.group(2)}{value}", items[i])
            else:
                items[i] = str(value)
        return field_name, items


def find_vllm_container(deployment: Deployment, name: str | None = None) -> VllmContainer:
    """The vLLM container: the one called ``name``, else the one whose image or command line says vLLM.

    A Deployment with a single container needs no naming. ValueError says why none could be told.
    """
    containers = deployment.containers
    if name is not None:
        chosen = [i for i, c in enumerate(containers) if c.get("name") == name]
        if not chosen:
            raise ValueError(f"no container named {name!r}")
    else:
        chosen = [i for i, c in enumerate(containers) if _runs_vllm(c)]
        if not chosen and len(containers) == 1:
            chosen = [0]
        if len(chosen) != 1:
            names = ", ".join(str(c.get("name")) for c in containers) or "none"
            raise ValueError(f"cannot tell which container runs vLLM (containers: {names}); set INFERNO_VLLM_CONTAINER")
    c = containers[chosen[0]]
    return VllmContainer(
        index=chosen[0],
        name=str(c.get("name", "")),
        command=tuple(str(x) for x in c.get("command") or ()),
        args=tuple(str(x) for x in c.get("args") or ()),
    )


def current_max_num_seqs(deployment: Deployment, container: VllmContainer) -> int | None:
    """The container's --max-num-seqs, else the predecessor's maxbatchsize label; None when neither is set.

    ValueError when the one in use is not a positive integer.
    """
    value = container.max_num_seqs
    label = deployment.labels.get(MAX_BATCH_LABEL)
    if value is not None or label is None:
        return value
    if not label.isdigit() or int(label) < 1:
        raise ValueError(f"label {MAX_BATCH_LABEL}={label!r} is not a positive integer")
    return int(label)


def _runs_vllm(container: Mapping[str, Any]) -> bool:
    line = " ".join(str(x) for x in [*(container.get("command") or ()), *(container.get("args") or ())])
    return "vllm" in line.lower() or "vllm" in str(container.get("image", "")).lower()


# --- the API --------------------------------------------------------------------------------


class DeploymentApi(Protocol):
    """The cluster calls the collector and the actuator make: :class:`Kube`, or an in-memory cluster."""

    def list_deployments(self, namespaces: Sequence[str], selector: str) -> list[Deployment]:
        """Deployments matching ``selector`` in ``namespaces`` (all namespaces when empty)."""
        ...

    def get_deployment(self, namespace: str, name: str) -> Deployment:
        """The Deployment as it is now; KubeError 404 when there is none."""
        ...

    def patch_deployment(self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]) -> Deployment:
        """Apply a JSON patch (RFC 6902) to a Deployment, all of it or none."""
        ...

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        """Record a core/v1 Event."""
        ...

    def gpu_inventory(self) -> dict[str, int]:
        """Allocatable GPUs per product label."""
        ...


class Kube:
    """Reads and writes the cluster through an injected ``kubernetes`` ApiClient."""

    def __init__(self, api: client.ApiClient, timeout: float = 10.0) -> None:
        self._apps = client.AppsV1Api(api)
        self._core = client.CoreV1Api(api)
        self._coordination = client.CoordinationV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._timeout = timeout

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
            return json.loads(response.data)
        except ApiException as exc:
            raise KubeError(what, int(exc.status or 0), _status_message(exc.body, exc.reason)) from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise KubeError(what, 0, str(exc)) from exc

    def _list(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self._call(what, method, *args, limit=PAGE_SIZE, _continue=token, **kwargs)
            items.extend(page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def list_deployments(self, namespaces: Sequence[str], selector: str) -> list[Deployment]:
        """Deployments matching ``selector`` in ``namespaces`` (all namespaces when empty)."""
        if not namespaces:
            raw = self._list("list Deployments", self._apps.list_deployment_for_all_namespaces, label_selector=selector)
        else:
            raw = [
                d
                for ns in namespaces
                for d in self._list(
                    f"list Deployments in {ns}", self._apps.list_namespaced_deployment, ns, label_selector=selector
                )
            ]
        return [Deployment.from_manifest(d) for d in raw]

    def get_deployment(self, namespace: str, name: str) -> Deployment:
        """The Deployment as it is now."""
        raw = self._call(f"read Deployment {namespace}/{name}", self._apps.read_namespaced_deployment, name, namespace)
        return Deployment.from_manifest(raw)

    def patch_deployment(self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]) -> Deployment:
        """Apply a JSON patch (RFC 6902) to a Deployment; the API applies all of it or none."""
        raw = self._call(
            f"patch Deployment {namespace}/{name}",
            self._apps.patch_namespaced_deployment,
            name,
            namespace,
            [dict(op) for op in ops],
            _content_type="application/json-patch+json",
        )
        return Deployment.from_manifest(raw)

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        """Record a core/v1 Event."""
        self._call(f"create Event in {namespace}", self._core.create_namespaced_event, namespace, dict(event))

    def gpu_inventory(self) -> dict[str, int]:
        """Allocatable GPUs per product label over schedulable nodes."""
        cards: dict[str, int] = {}
        for node in self._list("list nodes", self._core.list_node, label_selector=GPU_PRODUCT_LABEL):
            if (node.get("spec") or {}).get("unschedulable"):
                continue
            product = (node.get("metadata") or {}).get("labels", {}).get(GPU_PRODUCT_LABEL, "")
            count = str((node.get("status") or {}).get("allocatable", {}).get(GPU_RESOURCE, "0"))
            if product and count.isdigit():
                cards[product] = cards.get(product, 0) + int(count)
        return cards

    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease ``namespace/name``, or None when there is none."""
        try:
            return dict(
                self._call(f"read Lease {namespace}/{name}", self._coordination.read_namespaced_lease, name, namespace)
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Lease; KubeError 409 when another replica created it first."""
        return dict(
            self._call(f"create Lease in {namespace}", self._coordination.create_namespaced_lease, namespace, body)
        )

    def patch_lease(self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Apply a JSON patch to a Lease (a failed ``test`` op, e.g. of resourceVersion, is a 409/422)."""
        return dict(
            self._call(
                f"patch Lease {namespace}/{name}", self._coordination.patch_namespaced_lease, name, namespace, list(ops)
            )
        )

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap ``namespace/name``, or None when there is none."""
        try:
            return dict(
                self._call(f"read ConfigMap {namespace}/{name}", self._core.read_namespaced_config_map, name, namespace)
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create_config_map(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a ConfigMap; KubeError 409 when it exists already."""
        return dict(
            self._call(f"create ConfigMap in {namespace}", self._core.create_namespaced_config_map, namespace, body)
        )

    def patch_config_map(self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Apply a JSON patch to a ConfigMap."""
        return dict(
            self._call(
                f"patch ConfigMap {namespace}/{name}",
                self._core.patch_namespaced_config_map,
                name,
                namespace,
                list(ops),
            )
        )

    # --- Optimizer custom resources (inferno.crd), for ``inferno run --mode reconcile`` ---

    def list_optimizers(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """The Optimizers of ``namespace`` (None: of every namespace), and the list's resourceVersion."""
        where = f"in {namespace}" if namespace else "in all namespaces"
        items: list[dict[str, Any]] = []
        token = None
        while True:
            if namespace:
                page = self._call(
                    f"list Optimizers {where}",
                    self._custom.list_namespaced_custom_object,
                    crd.GROUP,
                    crd.VERSION,
                    namespace,
                    crd.PLURAL,
                    limit=PAGE_SIZE,
                    _continue=token,
                )
            else:
                page = self._call(
                    f"list Optimizers {where}",
                    self._custom.list_cluster_custom_object,
                    crd.GROUP,
                    crd.VERSION,
                    crd.PLURAL,
                    limit=PAGE_SIZE,
                    _continue=token,
                )
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def watch_optimizers(self, namespace: str | None, resource_version: str, timeout_s: float) -> WatchStream:
        """A watch of the Optimizers of ``namespace`` (None: every namespace) after ``resource_version``.

        The server ends it after ``timeout_s``; so does the client when nothing arrives for that long.
        """
        what = f"watch Optimizers in {namespace}" if namespace else "watch Optimizers in all namespaces"
        seconds = max(1, math.ceil(timeout_s))
        options: dict[str, Any] = {
            "allow_watch_bookmarks": True,
            "timeout_seconds": seconds,
            "_preload_content": False,
            "_request_timeout": (self._timeout, seconds + self._timeout),
        }
        if resource_version:
            options["resource_version"] = resource_version
        try:
            if namespace:
                response = self._custom.list_namespaced_custom_object(
                    crd.GROUP, crd.VERSION, namespace, crd.PLURAL, watch=True, **options
                )
            else:
                response = self._custom.list_cluster_custom_object(
                    crd.GROUP, crd.VERSION, crd.PLURAL, watch=True, **options
                )
        except ApiException as exc:
            raise KubeError(what, int(exc.status or 0), _status_message(exc.body, exc.reason)) from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise KubeError(what, 0, str(exc)) from exc
        return WatchStream(response, what)

    def patch_optimizer_status(self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Apply a JSON patch to the status subresource of an Optimizer."""
        return dict(
            self._call(
                f"patch the status of Optimizer {namespace}/{name}",
                self._custom.patch_namespaced_custom_object_status,
                crd.GROUP,
                crd.VERSION,
                namespace,
                crd.PLURAL,
                name,
                [dict(op) for op in ops],
                _content_type="application/json-patch+json",
            )
        )


class WatchStream:
    """The events of one watch request (``{"type": ..., "object": {...}}``), as the server streams them.

    Iteration ends when the server closes the stream, when nothing arrives within the read timeout, or
    after :meth:`close` (from any thread). An ``ERROR`` event, e.g. 410 Gone for a resourceVersion too old
    to resume from, is raised as a :class:`KubeError` with its code.
    """

    def __init__(self, response: Any, what: str) -> None:
        self._response = response
        self._what = what
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buffer = b""
        try:
            for chunk in self._response.stream(None):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield self._event(line)
        except urllib3.exceptions.ReadTimeoutError:
            return
        except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError) as exc:
            if self._closed:
                return
            raise KubeError(self._what, 0, str(exc)) from exc
        finally:
            self._response.release_conn()
        if buffer.strip():
            yield self._event(buffer)

    def _event(self, line: bytes) -> dict[str, Any]:
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise KubeError(self._what, 0, f"not a watch event: {line[:200]!r}") from exc
        if not isinstance(event, dict):
            raise KubeError(self._what, 0, f"not a watch event: {line[:200]!r}")
        if event.get("type") == "ERROR":
            status = event.get("object") or {}
            raise KubeError(self._what, int(status.get("code") or 0), str(status.get("message") or "watch error"))
        return event

    def close(self) -> None:
        """End the stream now; a thread reading it sees its end."""
        self._closed = True
        try:
            self._response.shutdown()
        except (ValueError, RuntimeError, OSError, AttributeError):
            self._response.close()


class ConfigMapStore:
    """JSON state kept under one key of a ConfigMap (the tuner's state in-cluster; see ``TunerStore``).

    The ConfigMap is created on the first save; other keys in it are left alone.
    """

    KEY = "tuner-state.json"
    """The default key (the tuner's state); the load history uses ``load-history.json``."""

    def __init__(self, kube: Kube, namespace: str, name: str, key: str = KEY) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.key = key

    def load(self) -> dict[str, Any] | None:
        """The state under :attr:`key`; None when the ConfigMap or the key does not exist."""
        where = f"ConfigMap {self.namespace}/{self.name}"
        found = self.kube.read_config_map(self.namespace, self.name)
        text = ((found or {}).get("data") or {}).get(self.key)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([Problem(where, f"data.{self.key}", f"invalid JSON: {exc.msg}")]) from exc
        if not isinstance(data, dict):
            raise ConfigError([Problem(where, f"data.{self.key}", "expected a JSON object")])
        return data

    def save(self, state: Mapping[str, Any]) -> None:
        """Write the state under :attr:`key`, creating the ConfigMap when it does not exist yet."""
        text = json.dumps(state, separators=(",", ":"))
        found = self.kube.read_config_map(self.namespace, self.name)
        if found is None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "data": {self.key: text},
            }
            self.kube.create_config_map(self.namespace, body)
            return
        op: dict[str, Any] = (
            {"op": "add", "path": f"/data/{self.key}", "value": text}
            if found.get("data")
            else {"op": "add", "path": "/data", "value": {self.key: text}}
        )
        self.kube.patch_config_map(self.namespace, self.name, [op])


class LeaderElector:
    """Lease-based leader election (coordination.k8s.io/v1 Lease), renewed once per cycle.

    The Lease lasts ``lease_duration_s``; a replica leads while its renewals keep the Lease fresh, and
    another takes over once the Lease has expired. Any API error means "not leader this time".
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = max(1, math.ceil(lease_duration_s))
        self._clock = clock

    def try_lead(self) -> bool:
        """Take or renew the Lease; True when this replica leads now."""
        now = self._clock()
        try:
            lease = self._kube.read_lease(self.namespace, self.name)
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, acquired=now, transitions=0),
                }
                self._kube.create_lease(self.namespace, body)
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            renewed = _micro_time(spec.get("renewTime"))
            expires = (renewed or 0.0) + float(spec.get("leaseDurationSeconds") or 0)
            if holder and holder != self.identity and expires > now:
                return False
            ours = holder == self.identity
            acquired = _micro_time(spec.get("acquireTime")) if ours else now
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
            ops: list[dict[str, Any]] = []
            version = (lease.get("metadata") or {}).get("resourceVersion")
            if version:  # someone else's renewal in between makes this patch fail: no split brain
                ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": version})
            spec_now = self._spec(now, acquired=acquired or now, transitions=transitions)
            ops.append({"op": "replace" if "spec" in lease else "add", "path": "/spec", "value": spec_now})
            self._kube.patch_lease(self.namespace, self.name, ops)
            return True
        except KubeError:
            return False

    def _spec(self, now: float, *, acquired: float, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": _format_micro_time(acquired),
            "renewTime": _format_micro_time(now),
            "leaseTransitions": transitions,
        }


def _format_micro_time(unix: float) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _micro_time(text: object) -> float | None:
    """Unix time of a MicroTime string (None when absent or unreadable)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _status_message(body: str | None, reason: str | None) -> str:
    """The ``message`` of a Status body, else the HTTP reason."""
    try:
        message = json.loads(body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or reason or "no message")


def connect(settings: Settings) -> Kube:
    """A Kube for ``settings``: its kubeconfig (and context), else in-cluster, else the default kubeconfig."""
    try:
        if settings.kubeconfig is None and settings.context is None:
            try:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                return Kube(client.ApiClient(configuration), settings.kube_timeout)
            except ConfigException:
                pass
        path = str(settings.kubeconfig) if settings.kubeconfig is not None else None
        api = config.new_client_from_config(config_file=path, context=settings.context)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError) as exc:
        where = str(settings.kubeconfig or "the default kubeconfig")
        raise ConfigError([Problem(where, settings.context or "", f"cannot connect to Kubernetes: {exc}")]) from exc
    return Kube(api, settings.kube_timeout)
