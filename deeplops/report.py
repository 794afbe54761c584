"""What a self-play run produced, measured: per-generation figures, cross-play, and the final
order agent against every baseline where it never trained. Written as report.json, report.md
and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from deeplops import outputs
from deeplops.evaluate import Match, play
from deeplops.metrics import summarize
from deeplops.plot import save_figure
from deeplops.policies import Policy, Role, load_policy
from deeplops.scenario import ScriptedChaos, load_scenario, shipped_scenarios
from deeplops.topogen import random_topology
from deeplops.topology import Topology, load_topology

BASELINES = ("noop", "autoheal", "k8s", "runbook", "oracle")
HELD_OUT_SEEDS = range(10_000, 10_010)
VS_FINAL_CHAOS = "shop vs the final chaos agent"
"""The section where the bar is the arms race's: beat every baseline but the oracle."""
"""Random topologies never trained on (training draws seeds below 10,000)."""


def figures(order: Policy, chaos: Policy, topology: Topology, episodes: int, seed: int) -> dict[str, Any]:
    """Availability and MTTR of ``order`` against ``chaos`` on ``topology``."""
    m = summarize(play(Match(topology, order, chaos), episodes, seed=seed))
    return {"availability": m["availability"], "mttr_mean": m["mttr_mean"], "unrecovered": m["unrecovered"]}


def generation_figures(order: Policy, chaos: Policy, episodes: int, seed: int) -> dict[str, Any]:
    """The learning curve's points for one generation, on shop."""
    shop = load_topology("shop")
    return {
        "order_vs_random": figures(order, load_policy("random", Role.CHAOS), shop, episodes, seed)["availability"],
        "order_vs_own_chaos": figures(order, chaos, shop, episodes, seed)["availability"],
        "runbook_vs_chaos": figures(load_policy("runbook", Role.ORDER), chaos, shop, episodes, seed)["availability"],
    }


def crossplay(orders: list[tuple[str, Callable[[], Policy]]], chaoses: list[tuple[str, Callable[[], Policy]]],
              episodes: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """Availability of every order policy against every chaos policy, on shop."""
    shop = load_topology("shop")
    table = [[figures(o(), c(), shop, episodes, seed)["availability"] for _, c in chaoses] for _, o in orders]
    return {"order": [n for n, _ in orders], "chaos": [n for n, _ in chaoses], "availability": table}


def final_comparison(order: Policy, chaos: Policy, episodes: int, seed: int) -> dict[str, Any]:
    """The learned order agent beside every baseline: on each shipped scenario, on random
    topologies it never trained on, on ``bank`` (never trained on), and against the final chaos agent."""
    contenders: dict[str, Callable[[], Policy]] = {"learned": lambda: order}
    contenders |= {name: _maker(name) for name in BASELINES}

    def random_chaos() -> Policy:
        return load_policy("random", Role.CHAOS)

    sections: dict[str, dict[str, Any]] = {}
    for path in shipped_scenarios():
        s = load_scenario(path)
        sections[f"scenario {s.name}"] = {
            name: _summary(play(Match(s.topology, make(), ScriptedChaos(s), game=s.game_config()), 1, seed=s.seed))
            for name, make in contenders.items()
        }
    held = [random_topology(seed_) for seed_ in HELD_OUT_SEEDS]
    sections["held-out random topologies"] = {
        name: _summary(
            [ep for t in held for ep in play(Match(t, make(), random_chaos()), max(1, episodes // 4), seed=seed)]
        )
        for name, make in contenders.items()
    }
    bank = load_topology("bank")
    sections["bank (never trained on)"] = {
        name: _summary(play(Match(bank, make(), random_chaos()), episodes, seed=seed))
        for name, make in contenders.items()
    }
    shop = load_topology("shop")
    sections[VS_FINAL_CHAOS] = {
        name: _summary(play(Match(shop, make(), chaos), episodes, seed=seed)) for name, make in contenders.items()
    }
    return sections


def chaos_strength(chaos: Policy, episodes: int, seed: int) -> dict[str, float]:
    """Runbook's availability on shop against random chaos and against the learned chaos agent."""
    shop, runbook = load_topology("shop"), lambda: load_policy("runbook", Role.ORDER)
    return {
        "random": figures(runbook(), load_policy("random", Role.CHAOS), shop, episodes, seed)["availability"],
        "learned": figures(runbook(), chaos, shop, episodes, seed)["availability"],
    }


def bar(name: str, section: dict[str, Any]) -> dict[str, bool]:
    """The learned agent against the bar. Against the final chaos agent: availability above every
    baseline's but the oracle's. Elsewhere: >= runbook - 0.01, >= autoheal + 0.05, MTTR <= half autoheal's."""
    learned, runbook, autoheal = section["learned"], section["runbook"], section["autoheal"]
    if name == VS_FINAL_CHAOS:
        return {
            f"availability > {other}": learned["availability"] > section[other]["availability"]
            for other in BASELINES
            if other != "oracle"
        }
    auto_mttr = autoheal["mttr_mean"]
    return {
        "availability >= runbook - 0.01": learned["availability"] >= runbook["availability"] - 0.01,
        "availability >= autoheal + 0.05": learned["availability"] >= autoheal["availability"] + 0.05,
        "MTTR <= 0.5 x autoheal": auto_mttr is None
        or (learned["mttr_mean"] is not None and learned["mttr_mean"] <= 0.5 * auto_mttr),
    }


def write(out: Path, report: dict[str, Any]) -> list[Path]:
    """report.json, report.md and the plots; returns the files written."""
    outputs.write_text(out / "report.json", json.dumps(report, indent=2) + "\n", "--out")
    plots = [_learning_plot(out / "learning.png", report), _crossplay_plot(out / "crossplay.png", report),
             _baselines_plot(out / "baselines.png", report)]  # fmt: skip
    outputs.write_text(out / "report.md", _markdown(report), "--out")
    return [out / "report.json", out / "report.md", *plots]


def _maker(name: str) -> Callable[[], Policy]:
    """A factory of fresh order baselines called ``name`` (each play needs its own state)."""
    return lambda: load_policy(name, Role.ORDER)


def _summary(stats: list[Any]) -> dict[str, Any]:
    m = summarize(stats)
    return {k: m[k] for k in ("availability", "mttr_mean", "unrecovered", "wasted_repairs", "episodes")}


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _markdown(r: dict[str, Any]) -> str:
    lines = [f"# Self-play report (seed {r['config']['seed']}, {r['config']['generations']} generations)", ""]
    t = r["throughput"]
    lines += [
        "## Training", "",
        f"- order: {t['order_steps']:,} steps in {t['order_s']:.0f} s ({t['order_steps_per_s']:,.0f} steps/s); "
        f"chaos: {t['chaos_steps']:,} steps in {t['chaos_s']:.0f} s ({t['chaos_steps_per_s']:,.0f} steps/s)",
        f"- SB3 PPO on CartPole-v1 in the same run: {t['cartpole_ppo_steps_per_s']:,.0f} steps/s",
        f"- wall time of the run: {r['wall_s']:.0f} s", "",
        "| generation | order vs random chaos | order vs its chaos | runbook vs that chaos |", "|---:|---:|---:|---:|",
    ]  # fmt: skip
    for h in r["generations"]:
        lines.append(f"| {h['generation']} | {_fmt(h['order_vs_random'])} | {_fmt(h['order_vs_own_chaos'])} | "
                     f"{_fmt(h['runbook_vs_chaos'])} |")  # fmt: skip
    cp = r["crossplay"]
    lines += ["", "## Cross-play (availability on shop; rows: order, columns: chaos)", "",
              "| | " + " | ".join(cp["chaos"]) + " |", "|---" * (len(cp["chaos"]) + 1) + "|"]  # fmt: skip
    lines += [
        f"| {o} | " + " | ".join(f"{a:.3f}" for a in row) + " |"
        for o, row in zip(cp["order"], cp["availability"], strict=True)
    ]
    lines += ["", "## The final order agent against the baselines", ""]
    for section, rows in r["final"].items():
        lines += [f"### {section}", "", "| policy | availability | MTTR mean | unrecovered | wasted repairs |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for name, m in rows.items():
            figures_ = (
                f"{_fmt(m['availability'])} | {_fmt(m['mttr_mean'])} | {m['unrecovered']} | {m['wasted_repairs']}"
            )
            lines.append(f"| {name} | {figures_} |")
        checks = r["bar"][section]
        lines += ["", "Bar: " + ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in checks.items()), ""]
    real = r.get("real")
    if real and "scenario" in real:
        lines += [
            f"## On real containers ({real['backend']})",
            "",
            f"Scenario {real['scenario']}, replayed on {real['backend']}:",
            "",
            "| policy | availability | MTTR mean | unrecovered | hypothesis met |",
            "|---|---:|---:|---:|---|",
        ]
        for name in ("learned", "runbook"):
            m = real[name]
            lines.append(f"| {name} | {_fmt(m['availability'])} | {_fmt(m['mttr_mean'])} | {m['unrecovered']} | "
                         f"{'yes' if m['hypothesis_met'] else 'NO'} |")  # fmt: skip
        lines.append("")
    elif real:
        lines += ["## On real containers", "", real["note"], ""]
    cs = r["chaos_strength"]
    lines += ["## The chaos agent", "",
              f"Runbook's availability on shop, same budget: {cs['random']:.3f} against random chaos, "
              f"{cs['learned']:.3f} against the learned chaos agent.", ""]  # fmt: skip
    return "\n".join(lines)


def _learning_plot(path: Path, r: dict[str, Any]) -> Path:
    gens = [h["generation"] for h in r["generations"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("order_vs_random", "order vs random chaos"), ("order_vs_own_chaos", "order vs its chaos"),
                       ("runbook_vs_chaos", "runbook vs that chaos")):  # fmt: skip
        ax.plot(gens, [h[key] for h in r["generations"]], marker="o", label=label)
    ax.set_xlabel("generation")
    ax.set_ylabel("availability (shop)")
    ax.set_xticks(gens)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, "--out")


def _crossplay_plot(path: Path, r: dict[str, Any]) -> Path:
    cp = r["crossplay"]
    a = np.array(cp["availability"])
    fig, ax = plt.subplots(figsize=(1.2 * len(cp["chaos"]) + 2, 0.6 * len(cp["order"]) + 1.5))
    im = ax.imshow(a, cmap="RdYlGn", vmin=0, vmax=1)
    ax.set_xticks(range(len(cp["chaos"])), cp["chaos"], rotation=30, ha="right")
    ax.set_yticks(range(len(cp["order"])), cp["order"])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("chaos")
    ax.set_ylabel("order")
    fig.colorbar(im, ax=ax, label="availability")
    fig.tight_layout()
    return save_figure(fig, path, "--out")


def _baselines_plot(path: Path, r: dict[str, Any]) -> Path:
    sections = list(r["final"])
    names = list(r["final"][sections[0]])
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(sections)), 4.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        values = [r["final"][s][name]["availability"] for s in sections]
        ax.bar(np.arange(len(sections)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(sections)) + 0.4 - width / 2, [s.replace(" ", "\n", 1) for s in sections], fontsize=7)
    ax.set_ylabel("availability")
    ax.set_ylim(0, 1.05)
    ax.legend(ncol=len(names), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return save_figure(fig, path, "--out")
