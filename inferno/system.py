"""Loading a system from disk and checking it as a whole.

Three shapes are accepted:

* a directory of the reference layout (accelerator-data.json, capacity-data.json,
  model-data.json, serviceclass-data.json, server-data.json and optionally
  optimizer-data.json), or a directory holding only system-data.json;
* a single reference ``system-data.json`` file (``{"system": {...}}``);
* inferno's own flat document in YAML or JSON (see :class:`inferno.spec.SystemConfig`).

Every problem found is collected with the file and the field path it concerns
and raised as one :class:`~inferno.errors.ConfigError`; the checks go on past
the first bad field so a user sees everything to fix at once.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from inferno.errors import ConfigError, Problem
from inferno.spec import (
    AcceleratorData,
    CapacityData,
    ModelData,
    OptimizerData,
    ServerData,
    ServiceClassData,
    Spec,
    SystemConfig,
    SystemDocument,
    SystemSpec,
)

REFERENCE_FILES: dict[str, tuple[str, type[Spec]]] = {
    "acceleratorData": ("accelerator-data.json", AcceleratorData),
    "capacityData": ("capacity-data.json", CapacityData),
    "modelData": ("model-data.json", ModelData),
    "serviceClassData": ("serviceclass-data.json", ServiceClassData),
    "serverData": ("server-data.json", ServerData),
    "optimizerData": ("optimizer-data.json", OptimizerData),
}
"""Section of SystemSpec -> (file name in a reference directory, its model)."""

M = TypeVar("M", bound=BaseModel)

LIST_KEYS = {
    "acceleratorData": "accelerators",
    "capacityData": "count",
    "modelData": "models",
    "serviceClassData": "serviceClasses",
    "serverData": "servers",
    "optimizerData": "optimizer",
}
"""Section of SystemSpec -> the key of its content inside the section (e.g. serverData -> servers)."""

FLAT_KEYS = {**LIST_KEYS, "capacityData": "capacity"}
"""Section of SystemSpec -> its key in inferno's flat document."""

OPTIONAL_FILES = frozenset({"optimizer-data.json"})
SYSTEM_FILE = "system-data.json"


@dataclass(frozen=True)
class Where:
    """Where a section of a system came from: a file and the path of the section inside it."""

    file: str
    prefix: str = ""

    def at(self, location: str) -> str:
        """The full field path of ``location`` inside this section."""
        if not self.prefix:
            return location
        return f"{self.prefix}{location}" if location.startswith("[") else f"{self.prefix}.{location}"


@dataclass(frozen=True)
class LoadedSystem:
    """A validated system and where each of its sections came from."""

    spec: SystemSpec
    sources: dict[str, Where] = field(default_factory=dict)
    incomplete: frozenset[str] = frozenset()
    """Sections that lost items to schema errors: names they define are not known, so not reported missing."""


def load_system(path: str | Path) -> LoadedSystem:
    """Load and check the system at ``path``; raise ConfigError listing every problem."""
    path = Path(path)
    if path.is_dir():
        loaded, problems = _load_directory(path)
    elif path.is_file():
        loaded, problems = _load_file(path)
    else:
        raise ConfigError([Problem(str(path), "", "no such file or directory")])
    problems += check_system(loaded)
    if problems:
        raise ConfigError(problems)
    return loaded


def read_document(path: Path) -> Any:
    """Parse a JSON or YAML file; syntax errors become a ConfigError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), "", f"cannot read: {exc.strerror or exc}")]) from exc
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                [Problem(str(path), f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}")]
            ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(str(path), where, f"invalid YAML: {reason}")]) from exc


def validation_problems(exc: ValidationError, where: Where) -> list[Problem]:
    """pydantic errors as Problems naming the file and the field path."""
    problems = []
    for err in exc.errors(include_url=False):
        location = format_location(err["loc"])
        message = err["msg"]
        if err["type"] != "missing" and "input" in err and not isinstance(err["input"], dict | list):
            message = f"{message} (got {err['input']!r})"
        problems.append(Problem(where.file, where.at(location), message))
    return problems


def format_location(loc: Sequence[int | str]) -> str:
    """('servers', 3, 'model') -> 'servers[3].model'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _validate(model: type[M], data: Any, where: Where, problems: list[Problem]) -> M | None:
    """Validate ``data``; on errors record them and return a best-effort salvage for cross-checks."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, where))
        return _salvage(model, data, exc)


def _salvage(model: type[M], data: Any, exc: ValidationError) -> M | None:
    """Drop the bad fields (then the bad list items) so the rest can still be cross-checked.

    The result only feeds further checks; the system is rejected anyway.
    """
    if not isinstance(data, dict):
        return None
    data = copy.deepcopy(data)
    for round_ in range(4):
        for loc in sorted((tuple(e["loc"]) for e in exc.errors()), key=_reverse_order_key, reverse=True):
            _prune(data, loc, whole_item=round_ > 0)
        try:
            return model.model_validate(data)
        except ValidationError as again:
            exc = again
    return None


def _reverse_order_key(loc: tuple[Any, ...]) -> tuple[tuple[int, str], ...]:
    return tuple((p, "") if isinstance(p, int) else (-1, str(p)) for p in loc)


def _prune(data: Any, loc: tuple[Any, ...], *, whole_item: bool) -> None:
    """Delete the value at ``loc`` (or its innermost enclosing list item); keys match case-insensitively."""
    if whole_item:
        ints = [i for i, p in enumerate(loc) if isinstance(p, int)]
        if not ints:
            return
        loc = loc[: ints[-1] + 1]
    node = data
    for part in loc[:-1]:
        node = _child(node, part)
        if node is None:
            return
    last = loc[-1]
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        del node[last]
    elif isinstance(node, dict):
        for key in [k for k in node if isinstance(k, str) and k.lower() == str(last).lower()]:
            del node[key]


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, list) and isinstance(part, int):
        return node[part] if part < len(node) else None
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.lower() == str(part).lower():
                return value
    return None


def _load_directory(path: Path) -> tuple[LoadedSystem, list[Problem]]:
    present = {p.name for p in path.iterdir()}
    if REFERENCE_FILES["acceleratorData"][0] not in present and SYSTEM_FILE in present:
        return _load_file(path / SYSTEM_FILE)
    problems: list[Problem] = []
    sections: dict[str, Any] = {}
    sources: dict[str, Where] = {}
    for section, (name, model) in REFERENCE_FILES.items():
        file = path / name
        where = Where(str(file))
        sources[section] = Where(str(file), LIST_KEYS[section])
        if name not in present:
            if name not in OPTIONAL_FILES:
                problems.append(Problem(str(file), "", "missing (a reference system directory needs this file)"))
            continue
        try:
            data = read_document(file)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        value = _validate(model, data, where, problems)
        if value is not None:
            sections[section] = value
    return _loaded(SystemSpec.model_validate(sections), sources, problems), problems


def _load_file(path: Path) -> tuple[LoadedSystem, list[Problem]]:
    data = read_document(path)
    problems: list[Problem] = []
    if isinstance(data, dict) and any(isinstance(k, str) and k.lower() == "system" for k in data):
        doc = _validate(SystemDocument, data, Where(str(path)), problems)
        spec = doc.system if doc is not None else SystemSpec()
        sources = {s: Where(str(path), f"system.{s}.{LIST_KEYS[s]}") for s in REFERENCE_FILES}
    else:
        if not isinstance(data, dict):
            raise ConfigError([Problem(str(path), "", "expected a mapping of system sections at the top level")])
        config = _validate(SystemConfig, data, Where(str(path)), problems)
        spec = config.to_system() if config is not None else SystemSpec()
        sources = {s: Where(str(path), FLAT_KEYS[s]) for s in REFERENCE_FILES}
    return _loaded(spec, sources, problems), problems


def _loaded(spec: SystemSpec, sources: dict[str, Where], problems: list[Problem]) -> LoadedSystem:
    """A LoadedSystem marking the sections that ``problems`` touch as incomplete."""
    incomplete = frozenset(
        section
        for section, where in sources.items()
        if any(
            p.file == where.file and (not p.location or p.location.startswith(("line ", where.prefix)))
            for p in problems
        )
    )
    return LoadedSystem(spec, sources, incomplete)


def _duplicates(names: Iterable[str]) -> set[str]:
    return {name for name, n in Counter(names).items() if n > 1}


def check_system(loaded: LoadedSystem) -> list[Problem]:
    """Cross-reference checks that no single file can make; returns every problem found."""
    spec = loaded.spec
    problems: list[Problem] = []

    def report(section: str, location: str, message: str) -> None:
        where = loaded.sources.get(section, Where("<memory>", LIST_KEYS[section]))
        problems.append(Problem(where.file, where.at(location), message))

    def dangling(section: str, name: str, known: set[str]) -> bool:
        """A name that is not defined, unless its defining section lost items to schema errors."""
        return name not in known and section not in loaded.incomplete

    accelerators = spec.accelerator_data.accelerators
    acc_names = {a.name for a in accelerators}
    acc_types = {a.type for a in accelerators}
    for i, acc in enumerate(accelerators):
        if acc.name in _duplicates(a.name for a in accelerators):
            report("acceleratorData", f"[{i}].name", f"duplicate accelerator name {acc.name!r}")

    counts = spec.capacity_data.count
    for i, cap in enumerate(counts):
        if dangling("acceleratorData", cap.type, acc_types):
            report("capacityData", f"[{i}].type", f"capacity for unknown accelerator type {cap.type!r}")
        if cap.type in _duplicates(c.type for c in counts):
            report("capacityData", f"[{i}].type", f"duplicate capacity entry for type {cap.type!r}")

    perf = spec.model_data.models
    model_names = {m.name for m in perf}
    pairs = Counter((m.name, m.acc) for m in perf)
    for i, row in enumerate(perf):
        if dangling("acceleratorData", row.acc, acc_names):
            report("modelData", f"[{i}].acc", f"unknown accelerator {row.acc!r} (known: {_choices(acc_names)})")
        if pairs[(row.name, row.acc)] > 1:
            report("modelData", f"[{i}]", f"duplicate performance data for model {row.name!r} on {row.acc!r}")

    classes = spec.service_class_data.service_classes
    class_names = {c.name for c in classes}
    for i, sc in enumerate(classes):
        if sc.name in _duplicates(c.name for c in classes):
            report("serviceClassData", f"[{i}].name", f"duplicate service class name {sc.name!r}")
        for j, target in enumerate(sc.model_targets):
            if dangling("modelData", target.model, model_names):
                report("serviceClassData", f"[{i}].modelTargets[{j}].model", f"unknown model {target.model!r}")
            if target.model in _duplicates(t.model for t in sc.model_targets):
                report(
                    "serviceClassData",
                    f"[{i}].modelTargets[{j}].model",
                    f"duplicate target for model {target.model!r} in class {sc.name!r}",
                )

    servers = spec.server_data.servers
    for i, srv in enumerate(servers):
        if srv.name in _duplicates(s.name for s in servers):
            report("serverData", f"[{i}].name", f"duplicate server name {srv.name!r}")
        if dangling("modelData", srv.model, model_names):
            report("serverData", f"[{i}].model", f"unknown model {srv.model!r} (no performance data names it)")
        if dangling("serviceClassData", srv.class_name, class_names):
            report("serverData", f"[{i}].class", f"unknown service class {srv.class_name!r}")
        for key, alloc in (("currentAlloc", srv.current_alloc), ("desiredAlloc", srv.desired_alloc)):
            if alloc is not None and alloc.accelerator and dangling("acceleratorData", alloc.accelerator, acc_names):
                report("serverData", f"[{i}].{key}.accelerator", f"unknown accelerator {alloc.accelerator!r}")
    return problems


def _choices(names: Iterable[str]) -> str:
    ordered = sorted(names)
    return ", ".join(ordered[:12]) + (", ..." if len(ordered) > 12 else "")
