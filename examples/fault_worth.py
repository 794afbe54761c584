"""What each fault is worth to the chaos agent: ticks of availability a defender loses per fault and
per budget point, when random chaos plays that one fault alone.

    .venv/bin/python examples/fault_worth.py --env shop --order runbook --order pretrained --order oracle

A chaos agent spends a budget (``deeplops.faults.FAULT_COST``); the fault that costs its defenders
the most ticks per point is the one it learns to play. Run on the simulator, seeded: the same
arguments give the same table.
"""

from __future__ import annotations

import argparse

import numpy as np

from deeplops.actions import N_CHAOS_ACTIONS, Observation, Role, chaos_action
from deeplops.baselines import RandomChaos
from deeplops.evaluate import Match, play
from deeplops.faults import FAULT_COST, Fault
from deeplops.metrics import summarize
from deeplops.observation import MAX_SLOTS
from deeplops.policies import load_policy
from deeplops.topology import load_topology


class OneFault(RandomChaos):
    """Random chaos that may only start ``fault`` (on any service that takes it)."""

    def __init__(self, fault: Fault) -> None:
        super().__init__()
        self.only = np.zeros(N_CHAOS_ACTIONS, np.bool_)
        self.only[[0] + [chaos_action(slot, fault) for slot in range(MAX_SLOTS)]] = True  # noop and the fault

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        return super().act(obs, mask & self.only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="append", help="topology (repeatable; default shop and store)")
    parser.add_argument("--order", action="append", help="order POLICY (repeatable; default runbook, pretrained)")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=5000)
    args = parser.parse_args()
    print("| env | defender | " + " | ".join(f.label for f in Fault) + " |")
    print("|---|---" + "|---:" * len(Fault) + "|")
    for env in args.env or ["shop", "store"]:
        topology = load_topology(env)
        for order in args.order or ["runbook", "pretrained"]:
            cells = []
            for fault in Fault:
                match = Match(topology, load_policy(order, Role.ORDER), OneFault(fault))
                s = summarize(play(match, args.episodes, seed=args.seed))
                lost = (1.0 - s.availability) * s.ticks
                cells.append(f"{lost / s.faults_injected / FAULT_COST[fault]:.2f}" if s.faults_injected else "–")
            print(f"| {env} | {order} | " + " | ".join(cells) + " |")
    print("\nTicks of availability lost per budget point (per fault / its cost); – where no service takes it.")


if __name__ == "__main__":
    main()
