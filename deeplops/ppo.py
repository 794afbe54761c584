"""A lean PPO with action masks, over a whole batch of envs per tick: what self-play trains with.

It computes what stable-baselines3's (Maskable)PPO computes — clipped surrogate, value loss,
masked entropy, GAE with timeouts bootstrapped, per-minibatch advantage normalisation, gradient
clipping, the policy's own Adam — on an SB3 actor-critic policy object, so saved agents and the
network are unchanged. What it leaves out is the per-tick bookkeeping: rollouts live in
preallocated tensors, one forward serves every env in a tick, masks come as one array, and the
value of every timed-out env is one batched forward. Any SB3 ``VecEnv`` with a Discrete action
space serves (``action_masks()`` is read when the env has it), so it is checked against SB3 on
CartPole as well as on the game.

Rollouts come from a ``Rollouts`` source: ``LocalRollouts`` steps a VecEnv in this process (what
a VecEnv given to ``PPO`` becomes); ``deeplops.raypool`` collects them on a Ray cluster's actors,
each stepping its own share of the envs with a copy of the network. The update stays here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional

ActorCritic = Any
"""An SB3 actor-critic policy: ``ActorCriticPolicy`` or sb3-contrib's ``MaskableActorCriticPolicy``
(which share the parts used here but no base class that types them)."""

_MASKED = -1e8
"""Logit of a masked action (as sb3-contrib's MaskableCategorical sets it)."""


@dataclass(frozen=True)
class PPOSettings:
    """PPO's hyperparameters, named and defaulted as stable-baselines3 names them."""

    learning_rate: float = 3e-4
    n_steps: int = 64
    """Ticks per env per rollout."""
    batch_size: int = 1024
    n_epochs: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    clip_range: float = 0.2
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5


@dataclass
class UpdateStats:
    """What the last update measured, averaged over its minibatches."""

    policy_loss: float = 0.0
    value_loss: float = 0.0
    entropy: float = 0.0
    approx_kl: float = 0.0
    clip_fraction: float = 0.0


Batch = dict[str, Any]
"""One rollout, flattened over ticks and envs: ``obs`` (an array or a dict of them), ``masks``,
``actions``, ``logps``, ``advantages`` and ``returns``, as tensors on the CPU."""


class Rollouts(Protocol):
    """Where PPO's rollouts come from: ``num_envs`` envs, ``n_steps`` ticks each per rollout."""

    num_envs: int
    """Envs stepped per tick, over every worker."""
    observation_space: Any
    """The envs' observation space."""
    action_space: Any
    """The envs' (Discrete) action space."""

    @property
    def finished(self) -> list[dict[str, float]] | None:
        """Figures of the episodes finished since last drained (None where the envs keep none)."""
        ...

    def collect(self, policy: ActorCritic) -> Batch:
        """One rollout played by ``policy`` as its weights are now, with advantages and returns."""
        ...

    def close(self) -> None:
        """Release what the envs hold."""
        ...


class LocalRollouts:
    """Rollouts of a VecEnv stepped in this process, one forward of the network per tick for every env."""

    def __init__(self, env: VecEnv, settings: PPOSettings, seed: int = 0) -> None:
        self.env, self.settings = env, settings
        self.num_envs = env.num_envs
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self._masked = callable(getattr(env, "action_masks", None))
        self._sampler = torch.Generator().manual_seed(seed)
        self._last_obs: Any = None
        self._first = torch.ones(env.num_envs)

    @property
    def finished(self) -> list[dict[str, float]] | None:
        """The env's finished episodes (a ``GameVecEnv`` keeps them)."""
        return getattr(self.env, "finished", None)

    def close(self) -> None:
        """Close the env."""
        self.env.close()

    def collect(self, policy: ActorCritic) -> Batch:
        """``n_steps`` ticks of every env, going on from where the last rollout stopped."""
        cfg, env = self.settings, self.env
        if self._last_obs is None:
            self._last_obs = env.reset()
        device = policy.device
        n, b = cfg.n_steps, env.num_envs
        obs_store = _storage(self._last_obs, n)
        masks = torch.ones((n, b, int(env.action_space.n)), dtype=torch.bool)  # type: ignore[attr-defined]
        actions = torch.zeros((n, b), dtype=torch.long)
        logps, values, rewards = torch.zeros((n, b)), torch.zeros((n, b)), torch.zeros((n, b))
        starts = torch.zeros((n, b))
        obs = self._last_obs
        with torch.inference_mode():
            for t in range(n):
                _put(obs_store, t, obs)
                if self._masked:
                    masks[t] = torch.from_numpy(np.asarray(env.action_masks(), dtype=np.bool_))  # type: ignore[attr-defined]
                logits, value = (x.cpu() for x in _forward(policy, _each(obs_store, itemgetter(t)), device))
                logp_all = torch.log_softmax(logits.masked_fill(~masks[t], _MASKED), -1)
                action = _sample(logp_all.exp(), self._sampler)
                obs, reward, dones, infos = env.step(action.numpy())
                reward_t = torch.as_tensor(reward, dtype=torch.float32)
                if dones.any():
                    reward_t += cfg.gamma * _timeout_values(policy, dones, infos, device)
                actions[t], values[t], rewards[t] = action, value, reward_t
                logps[t] = logp_all.gather(1, action[:, None])[:, 0]
                starts[t] = self._first
                self._first = torch.as_tensor(dones, dtype=torch.float32)
            last_value = _forward(policy, _each(obs, _tensor), device)[1].cpu()
        self._last_obs = obs
        advantages = _gae(rewards, values, starts, last_value, self._first, cfg.gamma, cfg.gae_lambda)
        return {
            "obs": _each(obs_store, lambda value: value.flatten(0, 1)),
            "masks": masks.flatten(0, 1),
            "actions": actions.flatten(),
            "logps": logps.flatten(),
            "advantages": advantages.flatten(),
            "returns": (advantages + values).flatten(),
        }  # fmt: skip


class PPO:
    """Trains ``policy`` on rollouts of ``env`` (a VecEnv, stepped here, or any ``Rollouts``):
    ``learn(n)`` runs whole rollouts until ``n`` more transitions."""

    def __init__(self, policy: ActorCritic, env: VecEnv | Rollouts, settings: PPOSettings, seed: int = 0) -> None:
        self.policy, self.settings = policy, settings
        self.rollouts: Rollouts = LocalRollouts(env, settings, seed) if isinstance(env, VecEnv) else env
        """Where rollouts come from."""
        self.num_timesteps = 0
        """Transitions trained on so far (stable-baselines3's name)."""
        self.n_updates = 0
        """Gradient steps taken so far."""
        self.stats = UpdateStats()
        self._rng = np.random.default_rng(seed)
        self.device = policy.device
        """Where the network runs; rollouts are kept on the CPU, beside the envs."""
        for group in policy.optimizer.param_groups:
            group["lr"] = settings.learning_rate

    def learn(
        self,
        steps: int,
        on_rollout: Callable[[int], None] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        """Train on at least ``steps`` more transitions (whole rollouts). ``on_rollout(done)`` is called
        after each rollout's update; ``log_dir`` gets TensorBoard scalars."""
        writer = _writer(log_dir)
        per_rollout = self.settings.n_steps * self.rollouts.num_envs
        done = 0
        try:
            while done < steps:
                start = time.perf_counter()
                self.policy.train(False)
                batch = self.rollouts.collect(self.policy)
                self.policy.train(True)
                self._update(batch)
                done += per_rollout
                self.num_timesteps += per_rollout
                if writer is not None:
                    self._log(writer, per_rollout / (time.perf_counter() - start))
                if on_rollout is not None:
                    on_rollout(done)
        finally:
            if writer is not None:
                writer.close()

    # --- update ----------------------------------------------------------------------------------

    def _update(self, batch: Batch) -> None:
        cfg, policy = self.settings, self.policy
        batch = _to(batch, self.device)
        total = len(batch["actions"])
        sums = np.zeros(5)
        count = 0
        for _ in range(cfg.n_epochs):
            order = torch.from_numpy(self._rng.permutation(total)).to(self.device)
            for begin in range(0, total, cfg.batch_size):
                idx = order[begin : begin + cfg.batch_size]
                logits, values = _forward(policy, _each(batch["obs"], itemgetter(idx)), self.device)
                mask, old_logp = batch["masks"][idx], batch["logps"][idx]
                logp_all = torch.log_softmax(logits.masked_fill(~mask, _MASKED), -1)
                logp = logp_all.gather(1, batch["actions"][idx, None])[:, 0]
                entropy = -torch.where(mask, logp_all.exp() * logp_all, 0.0).sum(-1)
                adv = batch["advantages"][idx]
                if len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                ratio = torch.exp(logp - old_logp)
                clipped = torch.clamp(ratio, 1 - cfg.clip_range, 1 + cfg.clip_range)
                policy_loss = -torch.min(adv * ratio, adv * clipped).mean()
                value_loss = functional.mse_loss(batch["returns"][idx], values)
                loss = policy_loss - cfg.ent_coef * entropy.mean() + cfg.vf_coef * value_loss
                policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                policy.optimizer.step()
                self.n_updates += 1
                with torch.no_grad():
                    log_ratio = logp - old_logp
                    kl = float(((ratio - 1) - log_ratio).mean())
                    clipped_share = float(((ratio - 1).abs() > cfg.clip_range).float().mean())
                    sums += [float(policy_loss), float(value_loss), float(entropy.mean()), kl, clipped_share]
                count += 1
        self.stats = UpdateStats(*(sums / max(count, 1)))

    def _log(self, writer: Any, fps: float) -> None:
        step = self.num_timesteps
        for name, value in vars(self.stats).items():
            writer.add_scalar(f"train/{name}", value, step)
        writer.add_scalar("time/fps", fps, step)
        finished = self.rollouts.finished
        if finished:
            writer.add_scalar("game/availability", float(np.mean([f["availability"] for f in finished])), step)
            writer.add_scalar("game/mttr", float(np.nanmean([f["mttr"] for f in finished])), step)
            finished.clear()


def _forward(policy: ActorCritic, obs: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (unmasked) and values of a batch of observations."""
    features = policy.extract_features(_to(obs, device))
    latent_pi, latent_vf = policy.mlp_extractor(features)
    return policy.action_net(latent_pi), policy.value_net(latent_vf).flatten()


def _timeout_values(
    policy: ActorCritic, dones: np.ndarray, infos: list[dict[str, Any]], device: torch.device
) -> torch.Tensor:
    """The value of each timed-out env's last observation (0 elsewhere), in one forward."""
    out = torch.zeros(len(dones))
    timed_out = [i for i, info in enumerate(infos) if dones[i] and info.get("TimeLimit.truncated", False)
                 and info.get("terminal_observation") is not None]  # fmt: skip
    if timed_out:
        last = [infos[i]["terminal_observation"] for i in timed_out]
        if isinstance(last[0], dict):
            batch: Any = {key: np.stack([o[key] for o in last]) for key in last[0]}
        else:
            batch = np.stack(last)
        out[timed_out] = _forward(policy, _each(batch, _tensor), device)[1].cpu()
    return out


def _sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One action per row of ``probs`` (``(B, n)``, rows summing to about 1), by the inverse of the
    cumulative distribution: several times cheaper than ``torch.multinomial`` on many small rows.
    An action of probability 0 (a masked one) is never drawn: its cumulative value equals the one
    before it, and the draw is the first action whose cumulative value exceeds a uniform number
    below the row's total."""
    cdf = probs.cumsum(-1)
    u = torch.rand(len(probs), 1, generator=generator) * cdf[:, -1:]
    return (cdf <= u).sum(-1)


def _to(value: Any, device: torch.device) -> Any:
    """Tensors (or a dict of them, nested) on ``device``; as they are when it is the CPU."""
    if device.type == "cpu":
        return value
    return _each(value, lambda item: _to(item, device) if isinstance(item, dict) else item.to(device))


def _writer(log_dir: Path | None) -> Any:
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


def _each(obs: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` of each array of an observation: a dict of them (the game's) or one (CartPole's)."""
    return {key: fn(value) for key, value in obs.items()} if isinstance(obs, dict) else fn(obs)


def _tensor(value: Any) -> torch.Tensor:
    """An array as a tensor sharing its memory."""
    return torch.from_numpy(np.asarray(value))


def _storage(obs: Any, n: int) -> Any:
    """Room for ``n`` ticks of observations shaped like ``obs``."""
    return _each(obs, lambda value: torch.zeros((n, *np.shape(value)), dtype=_tensor(value).dtype))


def _put(store: Any, t: int, obs: Any) -> None:
    if isinstance(store, dict):
        for key, value in store.items():
            value[t] = _tensor(obs[key])
    else:
        store[t] = _tensor(obs)


def _gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    starts: torch.Tensor,
    last_value: torch.Tensor,
    last_done: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalised advantage estimates, ``(n_steps, n_envs)``, as stable-baselines3 computes them:
    ``starts[t]`` marks the first tick of an episode; ``last_done`` whether the tick after the
    rollout starts one."""
    n = len(rewards)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(n)):
        if t == n - 1:
            not_done, next_value = 1.0 - last_done, last_value
        else:
            not_done, next_value = 1.0 - starts[t + 1], values[t + 1]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        running = delta + gamma * lam * not_done * running
        advantages[t] = running
    return advantages
