"""Behaviour cloning: a baseline's play copied into an agent's policy, a warm start before reinforcement learning."""

from __future__ import annotations

import numpy as np
import torch

from deeplops.policies import load_policy
from deeplops.ppo import PPO
from deeplops.training_env import GameVecEnv


def imitate(
    model: PPO, env: GameVecEnv, teacher: str, steps: int, epochs: int, seed: int, repair_weight: float = 10.0
) -> float:
    """Clone ``teacher``'s play into the model's policy (a warm start); return its final accuracy
    on the teacher's repairs (noops excluded)."""
    obs = env.reset()
    teachers = [load_policy(teacher, env.role) for _ in env.games]
    for t in teachers:
        t.reset(env.envs_per_game, seed=seed)
    k = env.envs_per_game
    data: dict[str, list[np.ndarray]] = {key: [] for key in obs}
    masks: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    while len(actions) * env.num_envs < steps:
        mask = env.action_masks()
        act = np.concatenate([t.act({key: v[i * k : (i + 1) * k] for key, v in obs.items()}, mask[i * k : (i + 1) * k])
                              for i, t in enumerate(teachers)])  # fmt: skip
        for key, value in obs.items():
            data[key].append(value.copy())
        masks.append(mask.copy())
        actions.append(act)
        stepped, _, dones, _ = env.step(act)
        obs = stepped  # type: ignore[assignment]  # a dict: GameVecEnv's observations are dicts
        if dones.any():
            for t in teachers:
                t.reset(env.envs_per_game, seed=seed)
    policy = model.policy
    device = policy.device
    tensors = {key: torch.as_tensor(np.concatenate(v), device=device) for key, v in data.items()}
    all_masks = np.concatenate(masks)
    target = torch.as_tensor(np.concatenate(actions), device=device)
    acting = target > 0
    # Repairs are rare beside noops; weigh them up so they are learnt, not averaged away.
    weight = torch.where(acting, repair_weight, 1.0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    n = len(target)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, 1024):
            idx = torch.as_tensor(order[start : start + 1024], device=device)
            batch = {key: value[idx] for key, value in tensors.items()}
            dist = policy.get_distribution(batch, action_masks=all_masks[order[start : start + 1024]])
            loss = -(dist.log_prob(target[idx]) * weight[idx]).sum() / weight[idx].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        hits, total = 0, 0
        for start in range(0, n, 4096):
            idx = torch.arange(start, min(n, start + 4096), device=device)
            batch = {key: value[idx] for key, value in tensors.items()}
            pred = policy.get_distribution(batch, action_masks=all_masks[start : start + 4096]).mode()
            sel = acting[idx]
            hits += int((pred[sel] == target[idx][sel]).sum())
            total += int(sel.sum())
    return hits / max(total, 1)
