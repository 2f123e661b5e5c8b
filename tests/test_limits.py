"""Tests of the limits stage on hand-built snapshots and plans."""

from __future__ import annotations

from inferno.config import LimitSettings
from inferno.limits import LimitsMemory, apply_limits
from inferno.state import Action, Metrics, ObservedServer, Plan, Snapshot, Variant
from inferno.state import Load as ObservedLoad
from inferno.system import load_system
from tests.conftest import SAMPLES

SPEC = load_system(SAMPLES / "small.yaml").spec


def variant(deployment: str, server: str, accelerator: str, replicas: int, seqs: int | None = 64) -> Variant:
    """A variant as the collector would report it."""
    return Variant("llm", deployment, server, accelerator, replicas, replicas, replicas, replicas, seqs, "vllm", "1", 1)


def snapshot(*servers: tuple[str, tuple[Variant, ...], bool]) -> Snapshot:
    """A snapshot of complete (or, with False, incomplete) servers."""
    observed = []
    for name, variants, complete in servers:
        load = ObservedLoad(60.0, 512.0, 256.0, "prometheus") if complete else None
        problems = () if complete else ("ITL is NaN",)
        model = next(s.model for s in SPEC.server_data.servers if s.name == name)
        observed.append(ObservedServer(name, model, "Premium", variants, Metrics(), load, problems))
    return Snapshot(0.0, "1m", tuple(observed))


def action(
    deployment: str,
    server: str,
    accelerator: str,
    frm: int,
    to: int,
    seqs: tuple[int | None, int | None] = (None, None),
) -> Action:
    """An action from ``frm`` to ``to`` replicas."""
    return Action("llm", deployment, server, accelerator, frm, to, seqs[0], seqs[1], "plan")


PLAN = Plan({}, "milp", "optimal", 1.0, capacity={"H100": 16, "A100": 16, "L4": 32})


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    """A lower recommendation does not apply while a higher one is inside the window."""
    memory, settings = LimitsMemory(), LimitSettings(scale_down_window_s=300, max_scale_down_percent=100)
    snap = snapshot(("chat-premium", (variant("cp", "chat-premium", "H100", 4),), True))
    acts, adj = apply_limits((), snap, PLAN, SPEC, memory, settings, now=0.0)
    assert acts == () and adj == ()
    down = (action("cp", "chat-premium", "H100", 4, 1),)
    acts, adj = apply_limits(down, snap, PLAN, SPEC, memory, settings, now=100.0)
    assert acts == ()
    assert [a.rule for a in adj] == ["stabilisation"]
    acts, adj = apply_limits(down, snap, PLAN, SPEC, memory, settings, now=400.0)
    assert [(a.replicas_from, a.replicas_to) for a in acts] == [(4, 1)]


def test_scale_down_is_capped_per_cycle() -> None:
    """At most max_scale_down_percent of the replicas go in one cycle."""
    settings = LimitSettings(scale_down_window_s=0, max_scale_down_percent=25)
    snap = snapshot(("chat-premium", (variant("cp", "chat-premium", "H100", 8),), True))
    acts, adj = apply_limits(
        (action("cp", "chat-premium", "H100", 8, 1),), snap, PLAN, SPEC, LimitsMemory(), settings, 0.0
    )
    assert acts[0].replicas_to == 6
    assert adj[0].rule == "max-scale-down"


def test_max_num_seqs_hysteresis_and_cooldown() -> None:
    """Small --max-num-seqs changes are dropped; a big one applies, then none within the cooldown."""
    settings = LimitSettings(max_num_seqs_hysteresis=0.25, max_num_seqs_cooldown_s=600)
    memory = LimitsMemory()
    snap = snapshot(("chat-premium", (variant("cp", "chat-premium", "H100", 2, seqs=64),), True))
    small = (action("cp", "chat-premium", "H100", 2, 2, (64, 72)),)
    acts, adj = apply_limits(small, snap, PLAN, SPEC, memory, settings, 0.0)
    assert acts == () and adj[0].rule == "max-num-seqs-hysteresis"
    big = (action("cp", "chat-premium", "H100", 2, 3, (64, 128)),)
    acts, _ = apply_limits(big, snap, PLAN, SPEC, memory, settings, 10.0)
    assert acts[0].max_num_seqs_to == 128
    again = (action("cp", "chat-premium", "H100", 3, 3, (128, 32)),)
    acts, adj = apply_limits(again, snap, PLAN, SPEC, memory, settings, 100.0)
    assert acts == () and adj[-1].rule == "max-num-seqs-cooldown"


def test_incomplete_servers_are_held_and_recorded() -> None:
    """A server with missing data gets no action and an adjustment that says why."""
    snap = snapshot(("chat-free", (variant("cf", "chat-free", "H100", 2),), False))
    plan = Plan({"chat-free": None}, "milp", "optimal", 1.0, capacity=PLAN.capacity)  # type: ignore[dict-item]
    acts, adj = apply_limits(
        (action("cf", "chat-free", "H100", 2, 5),), snap, plan, SPEC, LimitsMemory(), LimitSettings(), 0.0
    )
    assert acts == ()
    assert (adj[0].rule, adj[0].detail) == ("held", "ITL is NaN")


def test_capacity_guard_trims_scale_ups_of_lower_priority_first() -> None:
    """Scale-ups beyond the cards of a type are trimmed, the Free class before Premium."""
    plan = Plan({}, "milp", "optimal", 1.0, capacity={"H100": 6, "A100": 0, "L4": 0})
    snap = snapshot(
        ("chat-premium", (variant("cp", "chat-premium", "H100", 2),), True),
        ("chat-free", (variant("cf", "chat-free", "H100", 2),), True),
    )
    ups = (action("cp", "chat-premium", "H100", 2, 4), action("cf", "chat-free", "H100", 2, 4))
    acts, adj = apply_limits(ups, snap, plan, SPEC, LimitsMemory(), LimitSettings(), 0.0)
    assert {a.server: a.replicas_to for a in acts} == {"chat-premium": 4}
    assert [a.rule for a in adj] == ["capacity"]
    assert adj[0].server == "chat-free"


def _switch_settings() -> LimitSettings:
    """No stabilisation or step limits, so only the transition rules act."""
    return LimitSettings(scale_down_window_s=0, max_scale_down_percent=100)


def test_an_accelerator_switch_makes_before_it_breaks() -> None:
    """H100 -> A100: the new replicas start first; the old ones go only once the new ones are ready."""
    memory, settings = LimitsMemory(), _switch_settings()
    old, new = variant("cp-h100", "chat-premium", "H100", 3), variant("cp-a100", "chat-premium", "A100", 0)
    move = (action("cp-h100", "chat-premium", "H100", 3, 0), action("cp-a100", "chat-premium", "A100", 0, 4))
    acts, adj = apply_limits(move, snapshot(("chat-premium", (old, new), True)), PLAN, SPEC, memory, settings, 0.0)
    assert [(a.deployment, a.replicas_to) for a in acts] == [("cp-a100", 4)]
    assert [(a.deployment, a.rule) for a in adj] == [("cp-h100", "make-before-break")]
    starting = Variant("llm", "cp-a100", "chat-premium", "A100", 4, 1, 4, 1, 64, "vllm", "1", 1)
    again = (action("cp-h100", "chat-premium", "H100", 3, 0),)
    acts, adj = apply_limits(again, snapshot(("chat-premium", (old, starting), True)), PLAN, SPEC, memory, settings, 60)
    assert acts == () and "3 replica(s) of the server are starting" in adj[0].detail
    ready = variant("cp-a100", "chat-premium", "A100", 4)
    acts, adj = apply_limits(again, snapshot(("chat-premium", (old, ready), True)), PLAN, SPEC, memory, settings, 120)
    assert [(a.deployment, a.replicas_to) for a in acts] == [("cp-h100", 0)] and adj == ()


def test_replicas_in_transition_are_capped_per_server() -> None:
    """With 2 replicas not ready and a cap of 4, a scale-up of 5 starts only 2 more."""
    memory = LimitsMemory()
    settings = LimitSettings(scale_down_window_s=0, max_in_transition=4)
    starting = Variant("llm", "cp", "chat-premium", "H100", 3, 1, 3, 1, 64, "vllm", "1", 1)
    acts, adj = apply_limits(
        (action("cp", "chat-premium", "H100", 3, 8),),
        snapshot(("chat-premium", (starting,), True)),
        PLAN,
        SPEC,
        memory,
        settings,
        0.0,
    )
    assert [(a.replicas_from, a.replicas_to) for a in acts] == [(3, 5)]
    assert [a.rule for a in adj] == ["max-in-transition"]


def test_a_flapping_server_is_held() -> None:
    """Up, down, up within the window: the third reversal is held; after the window it may move again."""
    memory = LimitsMemory()
    settings = LimitSettings(scale_down_window_s=0, max_scale_down_percent=100, flap_reversals=3, flap_window_s=600)
    snap = {n: snapshot(("chat-premium", (variant("cp", "chat-premium", "H100", n),), True)) for n in (2, 3)}
    moves = [(2, 3), (3, 2), (2, 3), (3, 2)]
    sent = []
    for i, (frm, to) in enumerate(moves):
        acts, adj = apply_limits(
            (action("cp", "chat-premium", "H100", frm, to),), snap[frm], PLAN, SPEC, memory, settings, 60.0 * i
        )
        sent.append(len(acts))
    assert sent == [1, 1, 1, 0] and adj[0].rule == "flapping"
    acts, _ = apply_limits((action("cp", "chat-premium", "H100", 3, 2),), snap[3], PLAN, SPEC, memory, settings, 2000)
    assert [(a.replicas_from, a.replicas_to) for a in acts] == [(3, 2)]
