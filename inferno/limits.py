"""The limits stage: safety rules between the optimizer's wish and the cluster.

It takes the actions that would bring every variant to the plan and adjusts them:

* servers with incomplete data are held (no action; their last decision stands);
* scale-down waits out a stabilisation window: a variant goes down only to the highest replica count
  recommended during the window (as the HPA does), and by at most ``max_scale_down_percent`` per cycle;
* ``--max-num-seqs`` changes restart every pod (model reload), so they need a relative change of at
  least ``max_num_seqs_hysteresis`` and at most one change per ``max_num_seqs_cooldown_s`` per variant;
* a capacity guard trims scale-ups, lowest priority first, that would hold more cards than there are.

Every adjustment is recorded, so the plan shows why the cluster will not look exactly as planned.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

from inferno.config import LimitSettings
from inferno.spec import SystemSpec
from inferno.state import Action, Plan, Snapshot

VariantKey = tuple[str, str]
"""(namespace, deployment)."""


@dataclass(frozen=True)
class Adjustment:
    """One change the limits made to the optimizer's wish."""

    namespace: str
    deployment: str
    server: str
    rule: str
    """held, stabilisation, max-scale-down, max-num-seqs-hysteresis, max-num-seqs-cooldown, capacity."""
    detail: str


@dataclass
class LimitsMemory:
    """What the limits remember between cycles (kept by the controller)."""

    recommendations: dict[VariantKey, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    """Replica counts the plan wanted per variant, with their times."""
    seqs_changed_at: dict[VariantKey, float] = field(default_factory=dict)
    """When --max-num-seqs of a variant was last changed."""


def apply_limits(
    actions: tuple[Action, ...],
    snapshot: Snapshot,
    plan: Plan,
    spec: SystemSpec,
    memory: LimitsMemory,
    settings: LimitSettings,
    now: float,
) -> tuple[tuple[Action, ...], tuple[Adjustment, ...]]:
    """The actions after the safety limits, and every adjustment made."""
    adjustments: list[Adjustment] = []
    for server in snapshot.servers:
        if not server.complete and server.name in plan.allocations:
            for v in server.variants:
                why = "; ".join(server.problems) or "no load observed"
                adjustments.append(Adjustment(v.namespace, v.deployment, server.name, "held", why))

    by_key = {(a.namespace, a.deployment): a for a in actions}
    limited: list[Action] = []
    for server in snapshot.servers:
        if not server.complete:
            continue
        for variant in server.variants:
            key = (variant.namespace, variant.deployment)
            action = by_key.get(key)
            wanted = action.replicas_to if action else variant.replicas
            history = [(t, n) for t, n in memory.recommendations[key] if now - t <= settings.scale_down_window_s]
            history.append((now, wanted))
            memory.recommendations[key] = history
            if action is None:
                continue
            action = _limit_replicas(action, history, settings, adjustments)
            action = _limit_seqs(action, memory, settings, now, adjustments)
            if action.replicas_to != action.replicas_from or action.changes_max_num_seqs:
                limited.append(action)
    limited = _capacity_guard(limited, snapshot, plan, spec, adjustments)
    for action in limited:
        if action.changes_max_num_seqs:
            memory.seqs_changed_at[(action.namespace, action.deployment)] = now
    return tuple(limited), tuple(adjustments)


def _limit_replicas(
    action: Action, history: list[tuple[float, int]], settings: LimitSettings, adjustments: list[Adjustment]
) -> Action:
    if action.replicas_to >= action.replicas_from:
        return action
    target = action.replicas_to
    highest = max(n for _, n in history)
    if highest > target:
        adjustments.append(
            _adjust(
                action,
                "stabilisation",
                f"{target} -> {min(highest, action.replicas_from)}: "
                f"{highest} replicas were recommended within the window",
            )
        )
        target = min(highest, action.replicas_from)
    step = max(1, math.floor(action.replicas_from * settings.max_scale_down_percent / 100))
    if action.replicas_from - target > step:
        adjustments.append(
            _adjust(
                action, "max-scale-down", f"{target} -> {action.replicas_from - step}: at most {step} fewer per cycle"
            )
        )
        target = action.replicas_from - step
    return replace(action, replicas_to=target)


def _limit_seqs(
    action: Action, memory: LimitsMemory, settings: LimitSettings, now: float, adjustments: list[Adjustment]
) -> Action:
    if not action.changes_max_num_seqs or action.max_num_seqs_to is None:
        return action
    old, new = action.max_num_seqs_from, action.max_num_seqs_to
    if old is not None and abs(new - old) / old < settings.max_num_seqs_hysteresis:
        adjustments.append(
            _adjust(
                action,
                "max-num-seqs-hysteresis",
                f"kept {old} (wanted {new}; change below "
                f"{settings.max_num_seqs_hysteresis:.0%} is not worth a restart)",
            )
        )
        return replace(action, max_num_seqs_to=None)
    last = memory.seqs_changed_at.get((action.namespace, action.deployment))
    if last is not None and now - last < settings.max_num_seqs_cooldown_s:
        adjustments.append(
            _adjust(action, "max-num-seqs-cooldown", f"kept {old} (wanted {new}; changed {now - last:.0f} s ago)")
        )
        return replace(action, max_num_seqs_to=None)
    return action


def _capacity_guard(
    actions: list[Action], snapshot: Snapshot, plan: Plan, spec: SystemSpec, adjustments: list[Adjustment]
) -> list[Action]:
    """Trim scale-ups that would hold more cards of a type than the capacity."""
    if not plan.capacity:
        return actions
    acc = {a.name: a for a in spec.accelerator_data.accelerators}
    servers = {s.name: s for s in spec.server_data.servers}
    rows = {(r.name, r.acc): r for r in spec.model_data.models}
    priority = {c.name: c.priority for c in spec.service_class_data.service_classes}

    def cards(server: str, accelerator: str) -> tuple[str, int] | None:
        srv, config = servers.get(server), acc.get(accelerator)
        row = rows.get((srv.model, accelerator)) if srv else None
        if config is None:
            return None
        return config.type, config.multiplicity * (row.acc_count if row else 1)

    after = {(a.namespace, a.deployment): a.replicas_to for a in actions}
    used: dict[str, int] = defaultdict(int)
    for server in snapshot.servers:
        for v in server.variants:
            per = cards(server.name, v.accelerator)
            if per is not None:
                used[per[0]] += per[1] * after.get((v.namespace, v.deployment), v.replicas)
    rank = sorted(
        (a for a in actions if a.replicas_to > a.replicas_from),
        key=lambda a: (-priority.get(servers[a.server].class_name, 100) if a.server in servers else -100, a.server),
    )
    trimmed = {id(a): a for a in actions}
    for action in rank:
        per = cards(action.server, action.accelerator)
        if per is None or used[per[0]] <= plan.capacity.get(per[0], 0):
            continue
        excess = math.ceil((used[per[0]] - plan.capacity.get(per[0], 0)) / per[1])
        new = max(action.replicas_from, action.replicas_to - excess)
        used[per[0]] -= (action.replicas_to - new) * per[1]
        adjustments.append(_adjust(action, "capacity", f"{action.replicas_to} -> {new}: not enough {per[0]} cards"))
        trimmed[id(action)] = replace(action, replicas_to=new)
    return [a for a in trimmed.values() if a.replicas_to != a.replicas_from or a.changes_max_num_seqs]


def _adjust(action: Action, rule: str, detail: str) -> Adjustment:
    return Adjustment(action.namespace, action.deployment, action.server, rule, detail)
