"""The limits stage: safety rules between the optimizer's wish and the cluster.

It takes the actions that would bring every variant to the plan and adjusts them:

* servers with incomplete data are held (no action; their last decision stands);
* scale-down waits out a stabilisation window: a variant goes down only to the highest replica count
  recommended during the window (as the HPA does), and by at most ``max_scale_down_percent`` per cycle;
* ``--max-num-seqs`` changes restart every pod (model reload), so they need a relative change of at
  least ``max_num_seqs_hysteresis`` and at most one change per ``max_num_seqs_cooldown_s`` per variant;
* transitions make before they break: while replicas of a server start on one variant (new this cycle or
  not ready yet), no variant of that server scales down, so moving capacity between accelerators never
  dips below what is running; at most ``max_in_transition`` replicas of a server start at once;
* a server whose replica count changed direction ``flap_reversals`` times within ``flap_window_s`` is
  held (flapping);
* a capacity guard trims scale-ups, lowest priority first, that would hold more cards than there are.

Every adjustment is recorded, so the plan shows why the cluster will not look exactly as planned.
"""

from __future__ import annotations

import itertools
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
    """held, stabilisation, max-scale-down, max-num-seqs-hysteresis, max-num-seqs-cooldown, make-before-break,
    max-in-transition, flapping, capacity."""
    detail: str


@dataclass
class LimitsMemory:
    """What the limits remember between cycles (kept by the controller)."""

    recommendations: dict[VariantKey, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    """Replica counts the plan wanted per variant, with their times."""
    seqs_changed_at: dict[VariantKey, float] = field(default_factory=dict)
    """When --max-num-seqs of a variant was last changed."""
    directions: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    """Per server, the times and signs (+1/-1) of its replica changes that were sent."""


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
    limited = _make_before_break(limited, snapshot, settings, adjustments)
    limited = _hold_flapping(limited, memory, settings, now, adjustments)
    limited = _capacity_guard(limited, snapshot, plan, spec, adjustments)
    for action in limited:
        if action.changes_max_num_seqs:
            memory.seqs_changed_at[(action.namespace, action.deployment)] = now
    for name, delta in _server_deltas(limited).items():
        if delta:
            memory.directions[name].append((now, 1 if delta > 0 else -1))
    return tuple(limited), tuple(adjustments)


def _server_deltas(actions: list[Action]) -> dict[str, int]:
    """Net replica change per server."""
    deltas: dict[str, int] = defaultdict(int)
    for a in actions:
        deltas[a.server] += a.replicas_to - a.replicas_from
    return deltas


def _make_before_break(
    actions: list[Action], snapshot: Snapshot, settings: LimitSettings, adjustments: list[Adjustment]
) -> list[Action]:
    """Cap the replicas a server starts at once; hold its scale-downs while any of its replicas start."""
    out = []
    for server in snapshot.servers:
        mine = [a for a in actions if a.server == server.name]
        if not mine:
            continue
        starting = sum(max(0, v.replicas - v.ready_replicas) for v in server.variants)
        room = settings.max_in_transition - starting if settings.max_in_transition else None
        capped = []
        for a in sorted(mine, key=lambda a: (a.namespace, a.deployment)):
            up = a.replicas_to - a.replicas_from
            if up > 0 and room is not None and up > max(room, 0):
                allowed = max(room, 0)
                adjustments.append(
                    _adjust(
                        a,
                        "max-in-transition",
                        f"{a.replicas_to} -> {a.replicas_from + allowed}: {starting} replica(s) of the server are "
                        f"starting, at most {settings.max_in_transition} at once",
                    )
                )
                a = replace(a, replicas_to=a.replicas_from + allowed)
                up = allowed
            if up > 0:
                starting += up
                if room is not None:
                    room -= up
            capped.append(a)
        for a in capped:
            if a.replicas_to < a.replicas_from and starting > 0:
                adjustments.append(
                    _adjust(
                        a,
                        "make-before-break",
                        f"kept {a.replicas_from} (wanted {a.replicas_to}): {starting} replica(s) of the server are "
                        "starting; the old ones go when the new ones are ready",
                    )
                )
                a = replace(a, replicas_to=a.replicas_from)
            if a.replicas_to != a.replicas_from or a.changes_max_num_seqs:
                out.append(a)
    return out


def _hold_flapping(
    actions: list[Action], memory: LimitsMemory, settings: LimitSettings, now: float, adjustments: list[Adjustment]
) -> list[Action]:
    """Hold the replica changes of servers that reversed direction too often within the flap window."""
    if not settings.flap_reversals:
        return actions
    out = []
    deltas = _server_deltas(actions)
    for server, history in list(memory.directions.items()):
        memory.directions[server] = [(t, d) for t, d in history if now - t <= settings.flap_window_s]
    for a in actions:
        history = memory.directions.get(a.server, [])
        signs = [d for _, d in history]
        if deltas[a.server]:
            signs.append(1 if deltas[a.server] > 0 else -1)
        reversals = sum(1 for x, y in itertools.pairwise(signs) if x != y)
        if reversals >= settings.flap_reversals and a.replicas_to != a.replicas_from:
            adjustments.append(
                _adjust(
                    a,
                    "flapping",
                    f"kept {a.replicas_from} (wanted {a.replicas_to}): the server changed direction {reversals} "
                    f"times within {settings.flap_window_s:.0f} s",
                )
            )
            a = replace(a, replicas_to=a.replicas_from)
        if a.replicas_to != a.replicas_from or a.changes_max_num_seqs:
            out.append(a)
    return out


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
