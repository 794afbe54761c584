"""A self-play run's report: what it produced, measured, and written as report.json, report.md and plots.

The measures: per-generation figures, cross-play, the final order agent against every baseline
where it never trained, and (on real containers) a shipped scenario replayed. The games of each
measure are handed to a ``Runner`` at once: played here, or on a Ray cluster's actors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from deeplops import outputs
from deeplops.actions import Observation, Policy, Role, decode_chaos
from deeplops.bench import cartpole_ppo_rate
from deeplops.drill import DrillRun, run_drill
from deeplops.evaluate import Caller, Games, Match, Runner, call_here, play, play_here
from deeplops.metrics import Summary, summarize
from deeplops.plot import save_figure
from deeplops.policies import load_policy
from deeplops.scenario import Scenario, ScriptedChaos, load_scenario, shipped_scenarios
from deeplops.selfplay import CHAOS_OPPONENTS, TRAIN_SEEDS, FrozenAgent, Progress, SelfPlay, SelfPlayConfig
from deeplops.sim import SimParams
from deeplops.topogen import random_topology
from deeplops.topology import Topology, load_topology

Maker = Callable[[], Policy]
"""Makes a fresh policy: a baseline by name, a saved agent from its checkpoint (picklable, so the
games it plays in may be played in another process)."""

REPERTOIRE_DEFENDERS: tuple[Maker, ...] = (*CHAOS_OPPONENTS, partial(load_policy, "autoheal", Role.ORDER))
"""Baselines the report plays the final chaos agent against, beside the final order agent, to
count which faults it starts: those of its training pool (the runbook with and without its
rollback step), and restart-only healing."""
BASELINES = ("noop", "autoheal", "k8s", "runbook", "oracle")
"""The order baselines the final agent is measured beside."""
HELD_OUT_SEEDS = range(TRAIN_SEEDS, TRAIN_SEEDS + 10)
"""Random topologies never trained on (training draws seeds below ``TRAIN_SEEDS``)."""
VS_FINAL_CHAOS = "shop vs the final chaos agent"
"""The section where the bar is the arms race's: beat every baseline but the oracle."""
FINAL_FIGURES = (
    "availability", "mttr_mean", "unrecovered", "relapses", "repairs", "faults_injected", "wasted_repairs", "data_loss",
    "episodes",
)  # fmt: skip
STORM_REPAIRS_PER_FAULT = 2.0
"""More repairs than this per injected fault is a storm: a defect whatever the availability."""
"""The metrics report.json keeps of each contender in each section of the final comparison."""
REAL_FIGURES = ("availability", "mttr_mean", "unrecovered")
"""The metrics report.json keeps of each play on real containers."""


@dataclass(frozen=True)
class Generation:
    """One generation's points on the learning curve, on shop."""

    generation: int
    """Its number, from 1."""
    order_vs_random: float
    """Availability of its order agent against random chaos."""
    order_vs_own_chaos: float
    """Availability of its order agent against its chaos agent."""
    runbook_vs_chaos: float
    """Availability of the runbook against its chaos agent."""
    training: dict[str, Any] = field(default_factory=dict)
    """What training recorded of it besides its number (``<role>_imitation_accuracy``), as the
    run's state file holds it."""

    def to_json(self) -> dict[str, Any]:
        """The generation as report.json holds it."""
        return {
            "generation": self.generation,
            **self.training,
            "order_vs_random": self.order_vs_random,
            "order_vs_own_chaos": self.order_vs_own_chaos,
            "runbook_vs_chaos": self.runbook_vs_chaos,
        }


@dataclass(frozen=True)
class CrossPlay:
    """Availability of every order policy against every chaos policy, on shop."""

    order: list[str]
    """The order policies: the rows."""
    chaos: list[str]
    """The chaos policies: the columns."""
    availability: list[list[float]]
    """Availability by row, then column."""


@dataclass(frozen=True)
class ChaosStrength:
    """How hard the learned chaos agent is on the runbook, beside random chaos (availability on shop)."""

    random: float
    """The runbook's availability against random chaos."""
    learned: float
    """The runbook's availability against the final chaos agent."""
    faults: dict[str, dict[str, int]] = field(default_factory=dict)
    """The faults the final chaos agent started on shop, by defender (``REPERTOIRE_DEFENDERS`` and
    the final order agent) and fault label: which faults it learnt to use, and against whom."""


@dataclass(frozen=True)
class Throughput:
    """How fast the run trained, beside SB3 PPO on CartPole in the same process."""

    order_steps: int
    """Transitions the order agent trained on, over every generation."""
    order_s: float
    """Seconds that took."""
    chaos_steps: int
    """Transitions the chaos agent trained on."""
    chaos_s: float
    """Seconds that took."""
    order_steps_per_s: float
    """The order agent's training transitions per second (0 when it trained for no time)."""
    chaos_steps_per_s: float
    """The chaos agent's."""
    cartpole_ppo_steps_per_s: float
    """SB3 PPO's transitions per second on CartPole-v1 in the same process."""


@dataclass(frozen=True)
class RealReplay:
    """The trained order agent and the runbook on a shipped scenario, on real containers."""

    backend: str
    """Where the scenario was played: the run's backend."""
    scenario: str | None
    """The shortest shipped scenario of the trained topology; None when it has none."""
    runs: tuple[DrillRun, ...] = ()
    """The plays, labelled ``learned`` and ``runbook``."""
    note: str = ""
    """Why nothing was played, when nothing was."""

    def to_json(self) -> dict[str, Any]:
        """The replay as report.json holds it."""
        if self.scenario is None:
            return {"note": self.note}
        figures: dict[str, Any] = {"scenario": self.scenario, "backend": self.backend}
        for run in self.runs:
            figures[run.label] = {**_pick(run.metrics, REAL_FIGURES), "hypothesis_met": run.passed}
        return figures


@dataclass(frozen=True)
class Report:
    """What a self-play run produced, measured: the content of report.json, report.md and the plots."""

    config: SelfPlayConfig
    """The run's settings."""
    generations: list[Generation]
    """The learning curve, one point per generation."""
    crossplay: CrossPlay
    """Every order policy against every chaos policy."""
    final: dict[str, dict[str, Summary]]
    """The final order agent and every baseline (by name), per section (held-out systems, each
    shipped scenario, the final chaos agent)."""
    chaos_strength: ChaosStrength
    """How hard the final chaos agent is."""
    throughput: Throughput
    """Training speed."""
    wall_s: float = 0.0
    """Seconds the run took, training and measuring (0 until it is known)."""
    real: RealReplay | None = None
    """The scenario replayed on real containers; None for a run on the simulator."""

    @property
    def bar(self) -> dict[str, dict[str, bool]]:
        """Each section's checks of the learned agent against the bar (see ``check_bar``)."""
        return {section: check_bar(section, rows) for section, rows in self.final.items()}

    def to_json(self) -> dict[str, Any]:
        """The object report.json holds."""
        report: dict[str, Any] = {
            "config": {**self.config.record(), "generations": self.config.generations},
            "generations": [g.to_json() for g in self.generations],
            "crossplay": asdict(self.crossplay),
            "final": {
                section: {name: _pick(m, FINAL_FIGURES) for name, m in rows.items()}
                for section, rows in self.final.items()
            },
            "bar": self.bar,
            "chaos_strength": asdict(self.chaos_strength),
            "throughput": asdict(self.throughput),
            "wall_s": self.wall_s,
        }
        if self.real is not None:
            report["real"] = self.real.to_json()
        return report


def figures(
    order: Policy, chaos: Policy, topology: Topology, episodes: int, seed: int, params: SimParams | None = None
) -> Summary:
    """The metrics of ``order`` against ``chaos`` on ``topology`` (dynamics ``params``, or the calibrated ones)."""
    return summarize(play(Match(topology, order, chaos, params=params), episodes, seed=seed))


def generations_figures(
    generations: list[tuple[int, Maker, Maker, dict[str, Any] | None]],
    episodes: int,
    seed: int,
    params: SimParams | None = None,
    runner: Runner = play_here,
) -> list[Generation]:
    """The learning curve's points of each (generation, order, chaos, what training recorded of it),
    on shop, their games played by ``runner`` in one go."""
    shop = load_topology("shop")
    runbook, random_chaos = _maker("runbook"), partial(load_policy, "random", Role.CHAOS)
    games = [
        [Games(shop, o, c, episodes, seed, params=params)]
        for _, order, chaos, _ in generations
        for o, c in ((order, random_chaos), (order, chaos), (runbook, chaos))
    ]
    points = iter(_summaries(runner, games))
    return [
        Generation(
            generation=generation,
            order_vs_random=next(points).availability,
            order_vs_own_chaos=next(points).availability,
            runbook_vs_chaos=next(points).availability,
            training=dict(training or {}),
        )
        for generation, _, _, training in generations
    ]


def crossplay(orders: list[tuple[str, Maker]], chaoses: list[tuple[str, Maker]], episodes: int, seed: int,
              params: SimParams | None = None, runner: Runner = play_here) -> CrossPlay:  # fmt: skip
    """Availability of every order policy against every chaos policy, on shop."""
    shop = load_topology("shop")
    games = [[Games(shop, o, c, episodes, seed, params=params)] for _, o in orders for _, c in chaoses]
    cells = iter(_summaries(runner, games))
    table = [[next(cells).availability for _ in chaoses] for _ in orders]
    return CrossPlay(order=[n for n, _ in orders], chaos=[n for n, _ in chaoses], availability=table)


def final_comparison(
    order: Maker, chaos: Maker, episodes: int, seed: int, params: SimParams | None = None, runner: Runner = play_here
) -> dict[str, dict[str, Summary]]:
    """The learned order agent beside every baseline: on each shipped scenario, on random
    topologies it never trained on, on ``bank`` (never trained on), and against the final chaos agent."""
    contenders: dict[str, Maker] = {"learned": order} | {name: _maker(name) for name in BASELINES}
    random_chaos = partial(load_policy, "random", Role.CHAOS)
    sections: dict[str, list[list[Games]]] = {}
    for path in shipped_scenarios():
        s = load_scenario(path)
        script = partial(ScriptedChaos, s)
        sections[f"scenario {s.name}"] = [
            [Games(s.topology, make, script, 1, s.seed, s.game_config(), params)] for make in contenders.values()
        ]
    held = [random_topology(seed_) for seed_ in HELD_OUT_SEEDS]
    sections["held-out random topologies"] = [
        [Games(t, make, random_chaos, max(1, episodes // 4), seed, params=params) for t in held]
        for make in contenders.values()
    ]
    bank, shop = load_topology("bank"), load_topology("shop")
    sections["bank (never trained on)"] = [
        [Games(bank, make, random_chaos, episodes, seed, params=params)] for make in contenders.values()
    ]
    sections[VS_FINAL_CHAOS] = [
        [Games(shop, make, chaos, episodes, seed, params=params)] for make in contenders.values()
    ]
    summaries = iter(_summaries(runner, [group for groups in sections.values() for group in groups]))
    return {section: {name: next(summaries) for name in contenders} for section in sections}


def chaos_strength(
    chaos: Maker, episodes: int, seed: int, params: SimParams | None = None, runner: Runner = play_here
) -> ChaosStrength:
    """Runbook's availability on shop against random chaos and against the learned chaos agent."""
    shop, runbook = load_topology("shop"), _maker("runbook")
    random_chaos = partial(load_policy, "random", Role.CHAOS)
    against_random, against_learned = _summaries(
        runner, [[Games(shop, runbook, c, episodes, seed, params=params)] for c in (random_chaos, chaos)]
    )
    return ChaosStrength(random=against_random.availability, learned=against_learned.availability)


def chaos_repertoire(
    chaos: Maker, defenders: list[tuple[str, Maker]], episodes: int, seed: int, params: SimParams | None = None
) -> dict[str, dict[str, int]]:
    """The faults ``chaos`` starts on shop against each defender, by fault label (most used first).

    Played here, not on the runner: the counts come from the chaos agent's own actions."""
    shop, counts = load_topology("shop"), {}
    for name, defender in defenders:
        counting = _CountingChaos(chaos())
        play(Match(shop, defender(), counting, params=params), episodes, seed=seed)
        counts[name] = dict(sorted(counting.started.items(), key=lambda kv: (-kv[1], kv[0])))
    return counts


class _CountingChaos:
    """A chaos policy that counts the faults it starts (allowed actions other than noop), by label."""

    role = Role.CHAOS
    privileged = False

    def __init__(self, inner: Policy) -> None:
        self.inner, self.name = inner, inner.name
        self.started: dict[str, int] = {}

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        self.inner.reset(n_envs, seed=seed)

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        actions = self.inner.act(obs, mask)
        for action in actions[mask[np.arange(len(actions)), actions]]:
            _, fault = decode_chaos(int(action))
            if fault is not None:  # noop
                self.started[fault.label] = self.started.get(fault.label, 0) + 1
        return actions


def check_bar(name: str, section: dict[str, Summary]) -> dict[str, bool]:
    """The learned agent against the bar. Against the final chaos agent: availability above every
    baseline's but the oracle's. Elsewhere: >= runbook - 0.01, >= autoheal + 0.05, MTTR <= half autoheal's."""
    learned, runbook, autoheal = section["learned"], section["runbook"], section["autoheal"]
    if name == VS_FINAL_CHAOS:
        return {
            f"availability > {other}": learned.availability > section[other].availability
            for other in BASELINES
            if other != "oracle"
        }
    auto_mttr = autoheal.mttr_mean
    return {
        "availability >= runbook - 0.01": learned.availability >= runbook.availability - 0.01,
        "availability >= autoheal + 0.05": learned.availability >= autoheal.availability + 0.05,
        "MTTR <= 0.5 x autoheal": auto_mttr is None
        or (learned.mttr_mean is not None and learned.mttr_mean <= 0.5 * auto_mttr),
        f"repairs per fault <= {STORM_REPAIRS_PER_FAULT:g}": learned.repairs
        <= STORM_REPAIRS_PER_FAULT * learned.faults_injected,
        "no data lost": learned.data_loss == 0,
    }


def build_report(
    sp: SelfPlay, episodes: int = 32, progress: Progress | None = None, runner: Runner | None = None
) -> Report:
    """Measure what the run ``sp`` produced (its wall time and any real replay are added by the
    caller); ``runner`` plays the games (by default where ``sp`` played its rollouts)."""
    progress = progress or Progress()
    runner = runner or sp.runner
    cfg, seed = sp.config, sp.config.seed
    gens = cfg.generations
    order = {g: sp.frozen(Role.ORDER, g) for g in range(1, gens + 1)}
    chaos = {g: sp.frozen(Role.CHAOS, g) for g in range(1, gens + 1)}
    progress.update("report: generations", 0, 1)
    recorded = [sp.history[g - 1] if g - 1 < len(sp.history) else {} for g in range(1, gens + 1)]
    trained = [{key: value for key, value in r.items() if key != "generation"} for r in recorded]
    history = generations_figures([(g, order[g], chaos[g], trained[g - 1]) for g in range(1, gens + 1)],
                                  episodes // 2, seed, cfg.sim, runner)  # fmt: skip
    progress.update("report: cross-play", 0, 1)
    orders: list[tuple[str, Maker]] = [("runbook", _maker("runbook")), ("autoheal", _maker("autoheal"))]
    orders += [(f"order-g{g}", order[g]) for g in order]
    chaoses: list[tuple[str, Maker]] = [("random", partial(load_policy, "random", Role.CHAOS))]
    chaoses += [(f"chaos-g{g}", chaos[g]) for g in chaos]
    cross = crossplay(orders, chaoses, episodes // 2, seed, cfg.sim, runner)
    progress.update("report: final agent vs baselines", 0, 1)
    final = final_comparison(order[gens], chaos[gens], episodes, seed, cfg.sim, runner)
    t = sp.timing
    throughput = Throughput(
        order_steps=int(t["order_steps"]),
        order_s=t["order_s"],
        chaos_steps=int(t["chaos_steps"]),
        chaos_s=t["chaos_s"],
        order_steps_per_s=t["order_steps"] / t["order_s"] if t["order_s"] else 0.0,
        chaos_steps_per_s=t["chaos_steps"] / t["chaos_s"] if t["chaos_s"] else 0.0,
        cartpole_ppo_steps_per_s=cartpole_ppo_rate(),
    )
    # Measured after CartPole's PPO, which reseeds the global random streams, where it has always been.
    strength = chaos_strength(chaos[gens], episodes, seed, cfg.sim, runner)
    progress.update("report: the chaos agent's faults", 0, 1)
    defenders = [(make().name, make) for make in REPERTOIRE_DEFENDERS] + [("learned", order[gens])]
    strength = replace(strength, faults=chaos_repertoire(chaos[gens], defenders, episodes // 2, seed, cfg.sim))
    return Report(cfg, history, cross, final, strength, throughput)


def real_drill(config: SelfPlayConfig, order_path: Path, progress: Progress, caller: Caller = call_here) -> RealReplay:
    """The trained order agent and the runbook on the shortest shipped scenario of the trained
    topology, on the run's backend (real containers); ``caller`` plays the two (here, one after the
    other, or side by side on a cluster's actors, each on its own node's engine)."""
    topology = load_topology(config.train_on[0])
    drills = [s for s in map(load_scenario, shipped_scenarios()) if s.topology == topology]
    if not drills:
        note = f"no shipped scenario runs on {topology.name}: nothing to replay on {config.backend}"
        return RealReplay(config.backend, None, note=note)
    drill = min(drills, key=lambda s: s.ticks)
    players: dict[str, Maker] = {"learned": FrozenAgent(order_path, Role.ORDER), "runbook": _maker("runbook")}
    progress.update(f"replaying {drill.name} on {config.backend}: {' and '.join(players)}", 0, 1)
    runs = caller([partial(_replayed, drill, name, maker, config.backend) for name, maker in players.items()])
    return RealReplay(config.backend, drill.name, tuple(runs))


def _replayed(drill: Scenario, label: str, order: Maker, backend: str) -> DrillRun:
    """``drill`` played once against a fresh order policy from ``order``, on ``backend``."""
    return run_drill(drill, label, order(), backend)


def write(out: Path, report: Report) -> list[Path]:
    """report.json, report.md and the plots; returns the files written."""
    outputs.write_text(out / "report.json", json.dumps(report.to_json(), indent=2) + "\n", "--out")
    plots = [_learning_plot(out / "learning.png", report), _crossplay_plot(out / "crossplay.png", report),
             _baselines_plot(out / "baselines.png", report)]  # fmt: skip
    outputs.write_text(out / "report.md", _markdown(report), "--out")
    return [out / "report.json", out / "report.md", *plots]


def _maker(name: str) -> Maker:
    """A factory of fresh order baselines called ``name`` (each play needs its own state)."""
    return partial(load_policy, name, Role.ORDER)


def _summaries(runner: Runner, groups: list[list[Games]]) -> list[Summary]:
    """The summary of each group of games (their episodes together, in order), every group's games
    handed to ``runner`` at once, so it may play them side by side."""
    results = iter(runner([games for group in groups for games in group]))
    return [summarize([episode for _ in group for episode in next(results)]) for group in groups]


def _pick(summary: Summary, names: tuple[str, ...]) -> dict[str, Any]:
    """The named metrics of ``summary``, in that order."""
    return {name: getattr(summary, name) for name in names}


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _markdown(r: Report) -> str:
    lines = [f"# Self-play report (seed {r.config.seed}, {r.config.generations} generations)", ""]
    t = r.throughput
    lines += [
        "## Training", "",
        f"- order: {t.order_steps:,} steps in {t.order_s:.0f} s ({t.order_steps_per_s:,.0f} steps/s); "
        f"chaos: {t.chaos_steps:,} steps in {t.chaos_s:.0f} s ({t.chaos_steps_per_s:,.0f} steps/s)",
        f"- SB3 PPO on CartPole-v1 in the same run: {t.cartpole_ppo_steps_per_s:,.0f} steps/s",
        f"- wall time of the run: {r.wall_s:.0f} s", "",
        "| generation | order vs random chaos | order vs its chaos | runbook vs that chaos |", "|---:|---:|---:|---:|",
    ]  # fmt: skip
    for h in r.generations:
        lines.append(f"| {h.generation} | {_fmt(h.order_vs_random)} | {_fmt(h.order_vs_own_chaos)} | "
                     f"{_fmt(h.runbook_vs_chaos)} |")  # fmt: skip
    cp = r.crossplay
    lines += ["", "## Cross-play (availability on shop; rows: order, columns: chaos)", "",
              "| | " + " | ".join(cp.chaos) + " |", "|---" * (len(cp.chaos) + 1) + "|"]  # fmt: skip
    lines += [
        f"| {o} | " + " | ".join(f"{a:.3f}" for a in row) + " |"
        for o, row in zip(cp.order, cp.availability, strict=True)
    ]
    lines += ["", "## The final order agent against the baselines", ""]
    bar = r.bar
    for section, rows in r.final.items():
        header = ("| policy | availability | MTTR mean | unrecovered | relapses | repairs per fault | wasted repairs "
                  "| data lost |")  # fmt: skip
        lines += [f"### {section}", "", header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, m in rows.items():
            per_fault = m.repairs / m.faults_injected if m.faults_injected else None
            figures_ = (f"{_fmt(m.availability)} | {_fmt(m.mttr_mean)} | {m.unrecovered} | {m.relapses} | "
                        f"{_fmt(per_fault)} | "
                        f"{m.wasted_repairs} | {m.data_loss}")  # fmt: skip
            lines.append(f"| {name} | {figures_} |")
        checks = bar[section]
        lines += ["", "Bar: " + ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in checks.items()), ""]
    real = r.real
    if real is not None and real.scenario is not None:
        lines += [
            f"## On real containers ({real.backend})",
            "",
            f"Scenario {real.scenario}, replayed on {real.backend}:",
            "",
            "| policy | availability | MTTR mean | unrecovered | hypothesis met |",
            "|---|---:|---:|---:|---|",
        ]
        for run in real.runs:
            m = run.metrics
            lines.append(f"| {run.label} | {_fmt(m.availability)} | {_fmt(m.mttr_mean)} | {m.unrecovered} | "
                         f"{'yes' if run.passed else 'NO'} |")  # fmt: skip
        lines.append("")
    elif real is not None:
        lines += ["## On real containers", "", real.note, ""]
    cs = r.chaos_strength
    lines += ["## The chaos agent", "",
              f"Runbook's availability on shop, same budget: {cs.random:.3f} against random chaos, "
              f"{cs.learned:.3f} against the learned chaos agent.", ""]  # fmt: skip
    if cs.faults:
        labels = sorted({label for started in cs.faults.values() for label in started})
        lines += ["Faults it started on shop, by defender:", "", "| defender | " + " | ".join(labels) + " |",
                  "|---" + "|---:" * len(labels) + "|"]  # fmt: skip
        lines += [f"| {name} | " + " | ".join(str(started.get(label, 0)) for label in labels) + " |"
                  for name, started in cs.faults.items()]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def _learning_plot(path: Path, r: Report) -> Path:
    gens = [h.generation for h in r.generations]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("order_vs_random", "order vs random chaos"), ("order_vs_own_chaos", "order vs its chaos"),
                       ("runbook_vs_chaos", "runbook vs that chaos")):  # fmt: skip
        ax.plot(gens, [getattr(h, key) for h in r.generations], marker="o", label=label)
    ax.set_xlabel("generation")
    ax.set_ylabel("availability (shop)")
    ax.set_xticks(gens)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, "--out")


def _crossplay_plot(path: Path, r: Report) -> Path:
    cp = r.crossplay
    a = np.array(cp.availability)
    fig, ax = plt.subplots(figsize=(1.2 * len(cp.chaos) + 2, 0.6 * len(cp.order) + 1.5))
    im = ax.imshow(a, cmap="RdYlGn", vmin=0, vmax=1)
    ax.set_xticks(range(len(cp.chaos)), cp.chaos, rotation=30, ha="right")
    ax.set_yticks(range(len(cp.order)), cp.order)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("chaos")
    ax.set_ylabel("order")
    fig.colorbar(im, ax=ax, label="availability")
    fig.tight_layout()
    return save_figure(fig, path, "--out")


def _baselines_plot(path: Path, r: Report) -> Path:
    sections = list(r.final)
    names = list(r.final[sections[0]])
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(sections)), 4.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        values = [r.final[s][name].availability for s in sections]
        ax.bar(np.arange(len(sections)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(sections)) + 0.4 - width / 2, [s.replace(" ", "\n", 1) for s in sections], fontsize=7)
    ax.set_ylabel("availability")
    ax.set_ylim(0, 1.05)
    ax.legend(ncol=len(names), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return save_figure(fig, path, "--out")
