"""The topology-agnostic network of the learned agents: one set of weights for every service slot.

Per slot it reads the service's own symptoms and its place in the graph, passes messages along
the dependency edges (from dependencies and from dependents) a few rounds, and emits that slot's
action logits from shared weights; a pooled summary gives the noop logit and the value. Padded
slots are zeroed and masked, so one trained agent acts on any topology up to MAX_SLOTS services.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from deeplops.observation import MAX_SLOTS, N_FEATURES, SINCE_REPAIR_SCALE, Feature

RECENT_REPAIR_TICKS = (1, 3, 7, 15)
"""Thresholds of the derived "repaired within the last k ticks" inputs. The observation scales
ticks-since-repair by 1/100, so 2 ticks and 4 differ by 0.02 there: too fine for a small network
to tell apart, yet it is what separates a restart still taking effect from a service that failed
again (a flapping service)."""


class GraphLayer(nn.Module):
    """One round of messages: from each slot's dependencies and from its dependents (mean)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.own = nn.Linear(hidden, hidden)
        self.from_deps = nn.Linear(hidden, hidden, bias=False)
        self.from_dependents = nn.Linear(hidden, hidden, bias=False)

    def forward(self, h: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """``h`` (B, S, H); ``means`` (B, S, 2S) from :func:`neighbour_means`.

        Computes ``own(h) + from_deps(mean over dependencies) + from_dependents(mean over
        dependents)``; the two maps have no bias, so by linearity each slot's message is mapped
        first and both means are one batched product (the network is most of training's cost).
        """
        neighbours = torch.cat([self.from_deps(h), self.from_dependents(h)], 1)  # (B, 2S, H)
        return h + torch.relu(self.own(h) + torch.bmm(means, neighbours))


def neighbour_means(adj: torch.Tensor, n_deps: torch.Tensor, n_up: torch.Tensor) -> torch.Tensor:
    """``(B, S, 2S)``: row i averages slot i's dependencies (first S columns) and its dependents
    (last S), so one batched product gives both means of a round of messages."""
    return torch.cat([adj / n_deps.clamp(min=1.0), adj.transpose(1, 2) / n_up.clamp(min=1.0)], -1)


class SlotEncoder(BaseFeaturesExtractor):
    """Observation → per-slot embeddings (flattened) followed by a pooled summary of the system."""

    def __init__(self, observation_space: spaces.Dict, hidden: int = 32, rounds: int = 2) -> None:
        self.hidden = hidden
        self.has_faulted = "faulted" in observation_space.spaces
        self.has_budget = "budget" in observation_space.spaces
        super().__init__(observation_space, features_dim=MAX_SLOTS * hidden + hidden)
        per_slot = N_FEATURES + 2 + len(RECENT_REPAIR_TICKS) + int(self.has_faulted)
        self.embed = nn.Linear(per_slot, hidden)
        self.layers = nn.ModuleList(GraphLayer(hidden) for _ in range(rounds))
        self.summary = nn.Linear(hidden + 2 * int(self.has_budget), hidden)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, MAX_SLOTS * hidden + hidden) features."""
        x = obs["services"]
        adj = obs["adjacency"].float()
        # Slots past the largest system in the batch are padding in every sample: their embeddings
        # are zero and they have no edges, so the rounds run on the slots in use and the result is
        # padded back (the network's cost is most of training's, and most systems are small).
        used = int(x[..., Feature.PRESENT].sum(-1).max().item()) if x.shape[0] else MAX_SLOTS
        x, adj = x[:, :used], adj[:, :used, :used]
        present = x[..., Feature.PRESENT].unsqueeze(-1)
        n_deps = adj.sum(-1, keepdim=True)
        n_up = adj.sum(-2).unsqueeze(-1)
        since = torch.round(x[..., Feature.SINCE_REPAIR] * SINCE_REPAIR_SCALE).unsqueeze(-1)
        recent = (since <= torch.tensor(RECENT_REPAIR_TICKS, dtype=x.dtype, device=x.device)).to(x.dtype)
        parts = [x, n_deps / 4.0, n_up / 4.0, recent * present]
        if self.has_faulted:
            parts.append(obs["faulted"][:, :used].unsqueeze(-1))
        h = torch.relu(self.embed(torch.cat(parts, -1))) * present
        means = neighbour_means(adj, n_deps, n_up)
        for layer in self.layers:
            h = layer(h, means) * present
        pooled = h.sum(1) / present.sum(1).clamp(min=1.0)
        if self.has_budget:
            pooled = torch.cat([pooled, obs["budget"]], -1)
        summary = torch.relu(self.summary(pooled))
        h = nn.functional.pad(h, (0, 0, 0, MAX_SLOTS - used))
        return torch.cat([h.flatten(1), summary], -1)


class SlotHead(nn.Module):
    """Logits in the game's action layout: noop from the summary, then per slot from shared weights."""

    def __init__(self, hidden: int, per_slot: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.noop = nn.Linear(hidden, 1)
        self.slot = nn.Linear(hidden, per_slot)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, 1 + MAX_SLOTS * per_slot) logits."""
        # split, not slicing: its gradient is one concatenation, not a zeroed copy per slice
        slots, summary = torch.split(latent, [MAX_SLOTS * self.hidden, self.hidden], dim=1)
        slots = slots.reshape(-1, MAX_SLOTS, self.hidden)
        return torch.cat([self.noop(summary), self.slot(slots).flatten(1)], -1)


class SlotPolicy(MaskableActorCriticPolicy):
    """MaskablePPO's actor-critic with the slot encoder and the slot head (weights shared by slots)."""

    def __init__(self, *args: Any, hidden: int = 32, rounds: int = 2, value_layers: tuple[int, ...] = (64,),
                 noop_bias: float = 0.0, **kwargs: Any) -> None:  # fmt: skip
        self.slot_hidden = hidden
        self.noop_bias = noop_bias
        kwargs.setdefault("features_extractor_class", SlotEncoder)
        kwargs.setdefault("features_extractor_kwargs", {"hidden": hidden, "rounds": rounds})
        kwargs.setdefault("net_arch", {"pi": [], "vf": list(value_layers)})
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        n_actions = int(self.action_space.n)  # type: ignore[attr-defined]
        self.action_net = SlotHead(self.slot_hidden, (n_actions - 1) // MAX_SLOTS)
        for layer in (self.action_net.noop, self.action_net.slot):
            nn.init.orthogonal_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)
        nn.init.constant_(self.action_net.noop.bias, self.noop_bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
