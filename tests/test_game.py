"""Specification of the chaos-versus-order game: budget, masks, books, rewards, metrics, per role."""

from __future__ import annotations

import numpy as np
import pytest

from deeplops.actions import N_CHAOS_ACTIONS, N_ORDER_ACTIONS, Role, chaos_action, order_action
from deeplops.faults import FAULT_COST, REPAIR_COST, Fault, Repair
from deeplops.game import Game, GameConfig
from deeplops.metrics import EpisodeStats, summarize
from deeplops.observation import MAX_SLOTS
from deeplops.policies import load_policy
from deeplops.sim import SimParams, SimSandbox
from deeplops.topology import Topology, load_topology


@pytest.fixture(scope="module")
def shop() -> Topology:
    return load_topology("shop")


def make(topology: Topology, config: GameConfig | None = None, seed: int = 0) -> Game:
    game = Game(SimSandbox(topology, n_envs=1, params=SimParams(probe_noise=0.0)), config)
    game.reset([seed])
    return game


def play(game: Game, chaos: int = 0, order: int = 0) -> bool:
    return game.step(np.array([chaos]), np.array([order]))


def slot(game: Game, name: str) -> int:
    return game.topology.index[name]


def kill(game: Game, name: str) -> int:
    return chaos_action(slot(game, name), Fault.KILL)


def stats(game: Game) -> EpisodeStats:
    return game.episode_stats()[0]


# --- actions ---------------------------------------------------------------------------------------


def test_chaos_action_injects_its_fault_on_its_slot(shop: Topology) -> None:
    game = make(shop)
    play(game, chaos=chaos_action(slot(game, "db"), Fault.DISK_FULL))
    assert game.sandbox.faults[0, slot(game, "db")] == Fault.DISK_FULL
    assert (np.delete(game.sandbox.faults[0], slot(game, "db")) == 0).all()


def test_order_action_applies_its_repair_to_its_slot(shop: Topology) -> None:
    game = make(shop)
    play(game, chaos=kill(game, "db"))
    play(game, order=order_action(slot(game, "db"), Repair.RESTART))
    assert game.sandbox.faults[0, slot(game, "db")] == 0


def test_play_puts_each_roles_actions_on_its_own_side(shop: Topology) -> None:
    by_role, by_side = make(shop), make(shop)
    kill_db, restart_db = np.array([kill(by_role, "db")]), np.array([order_action(slot(by_role, "db"), Repair.RESTART)])
    by_role.play(Role.CHAOS, kill_db, np.array([0]))
    by_side.step(kill_db, np.array([0]))
    by_role.play(Role.ORDER, restart_db, np.array([0]))
    by_side.step(np.array([0]), restart_db)
    assert stats(by_role).faults_injected == 1 and stats(by_role).repairs == 1
    np.testing.assert_array_equal(by_role.stats, by_side.stats)


def test_each_role_is_answered_its_own_observation_mask_and_reward(shop: Topology) -> None:
    game = make(shop)
    play(game, chaos=kill(game, "db"))
    assert game.observe(Role.ORDER) is game.order_obs() and game.observe(Role.CHAOS) is game.chaos_obs()
    assert set(game.observe(Role.CHAOS)) - set(game.observe(Role.ORDER)) == {"faulted", "budget"}
    assert game.mask(Role.ORDER) is game.order_mask()
    np.testing.assert_array_equal(game.mask(Role.CHAOS), game.chaos_mask())
    assert game.reward(Role.ORDER) is game.order_reward and game.reward(Role.CHAOS) is game.chaos_reward


# --- budget and concurrency -----------------------------------------------------------------------


def test_budget_lets_in_only_faults_it_can_pay_for(shop: Topology) -> None:
    game = make(shop, GameConfig(budget=2.0, max_concurrent=5))
    play(game, chaos=kill(game, "cache"))  # 1 point
    play(game, chaos=kill(game, "queue"))  # 1 point: budget spent
    play(game, chaos=kill(game, "worker"))
    assert game.sandbox.faults[0, slot(game, "worker")] == 0
    assert stats(game).faults_injected == 2
    assert stats(game).invalid_actions == 1


def test_fault_costing_more_than_budget_left_is_refused(shop: Topology) -> None:
    game = make(shop, GameConfig(budget=2.0, max_concurrent=5))
    play(game, chaos=chaos_action(slot(game, "db"), Fault.DISK_FULL))  # 2 points
    play(game, chaos=kill(game, "cache"))
    assert game.sandbox.faults[0, slot(game, "cache")] == 0
    assert stats(game).faults_injected == 1
    assert stats(game).invalid_actions == 1


def test_max_concurrent_caps_open_faults(shop: Topology) -> None:
    game = make(shop, GameConfig(max_concurrent=1))
    play(game, chaos=kill(game, "cache"))
    play(game, chaos=kill(game, "db"))
    assert game.sandbox.faults[0, slot(game, "db")] == 0
    assert stats(game).faults_injected == 1
    assert stats(game).invalid_actions == 1


def test_recovered_fault_frees_room_for_another(shop: Topology) -> None:
    game = make(shop, GameConfig(max_concurrent=1))
    play(game, chaos=kill(game, "cache"))
    play(game, order=order_action(slot(game, "cache"), Repair.RESTART))
    for _ in range(4):
        play(game)
    play(game, chaos=kill(game, "db"))
    assert game.sandbox.faults[0, slot(game, "db")] == Fault.KILL
    assert stats(game).faults_injected == 2


def test_second_fault_on_an_open_slot_is_refused(shop: Topology) -> None:
    game = make(shop, GameConfig(max_concurrent=5))
    play(game, chaos=kill(game, "db"))
    play(game, chaos=chaos_action(slot(game, "db"), Fault.PAUSE))
    assert game.sandbox.faults[0, slot(game, "db")] == Fault.KILL
    assert stats(game).invalid_actions == 1


# --- several faults in one tick (a correlated failure) ----------------------------------------------


def play_several(game: Game, chaos: int, extra: list[int], order: int = 0) -> bool:
    return game.step(np.array([chaos]), np.array([order]), np.array([extra]))


def test_extra_chaos_injects_every_fault_in_the_same_tick(shop: Topology) -> None:
    game = make(shop, GameConfig(max_concurrent=5))
    play_several(game, kill(game, "db"), [kill(game, "cache"), chaos_action(slot(game, "queue"), Fault.PAUSE)])
    faults = dict(zip(shop.names, game.sandbox.faults[0], strict=True))
    assert faults == {"gateway": 0, "api": 0, "db": Fault.KILL, "cache": Fault.KILL, "queue": Fault.PAUSE, "worker": 0}
    assert game.injected(0) == [
        (slot(game, "db"), Fault.KILL), (slot(game, "cache"), Fault.KILL), (slot(game, "queue"), Fault.PAUSE)
    ]  # fmt: skip
    assert stats(game).faults_injected == 3 and stats(game).invalid_actions == 0


def test_extra_chaos_the_budget_cannot_pay_for_is_refused_and_counted_invalid(shop: Topology) -> None:
    game = make(shop, GameConfig(budget=1.0, max_concurrent=5))
    play_several(game, kill(game, "db"), [kill(game, "cache")])  # 1 point each: the first spends it all
    assert game.sandbox.faults[0, slot(game, "db")] == Fault.KILL
    assert game.sandbox.faults[0, slot(game, "cache")] == 0
    assert game.injected(0) == [(slot(game, "db"), Fault.KILL)]
    assert stats(game).faults_injected == 1 and stats(game).invalid_actions == 1


def test_max_concurrent_counts_the_faults_of_the_same_tick(shop: Topology) -> None:
    game = make(shop, GameConfig(max_concurrent=2))
    play_several(game, kill(game, "db"), [kill(game, "cache"), kill(game, "queue")])
    assert game.sandbox.faults[0, slot(game, "cache")] == Fault.KILL
    assert game.sandbox.faults[0, slot(game, "queue")] == 0
    assert stats(game).faults_injected == 2 and stats(game).invalid_actions == 1


def test_extra_chaos_on_a_service_hit_in_the_same_tick_is_refused(shop: Topology) -> None:
    game = make(shop, GameConfig(max_concurrent=5))
    play_several(game, kill(game, "db"), [chaos_action(slot(game, "db"), Fault.PAUSE)])
    assert game.sandbox.faults[0, slot(game, "db")] == Fault.KILL
    assert stats(game).faults_injected == 1 and stats(game).invalid_actions == 1


def test_extra_noops_are_nothing(shop: Topology) -> None:
    game = make(shop)
    play_several(game, 0, [0, 0])
    assert game.injected(0) == [] and (game.sandbox.faults == 0).all()
    assert stats(game).faults_injected == 0 and stats(game).invalid_actions == 0


def test_the_faults_of_a_tick_are_injected_before_the_order_side_repairs(shop: Topology) -> None:
    game = make(shop, GameConfig(max_concurrent=5))
    play_several(game, kill(game, "db"), [kill(game, "cache")], order=order_action(slot(game, "cache"), Repair.RESTART))
    assert game.cleared[0]  # the restart ended the kill injected in the same tick
    assert game.sandbox.faults[0, slot(game, "cache")] == 0
    assert game.sandbox.faults[0, slot(game, "db")] == Fault.KILL
    assert stats(game).wasted_repairs == 0


def test_chaos_reward_charges_every_fault_of_the_tick(shop: Topology) -> None:
    game = make(shop, GameConfig(fault_cost_weight=0.5, max_concurrent=5))
    play_several(game, chaos_action(slot(game, "db"), Fault.DISK_FULL), [kill(game, "cache")])
    assert FAULT_COST[Fault.DISK_FULL] == 2.0 and FAULT_COST[Fault.KILL] == 1.0
    assert game.chaos_reward[0] == pytest.approx(-game.order_reward[0] - 0.5 * 3.0)
    play(game)  # a tick without faults charges none, and records none
    assert game.chaos_reward[0] == pytest.approx(-game.order_reward[0])
    assert game.injected(0) == []


def test_a_refused_extra_fault_is_not_charged(shop: Topology) -> None:
    game = make(shop, GameConfig(fault_cost_weight=0.5, budget=1.0, max_concurrent=5))
    play_several(game, kill(game, "db"), [kill(game, "cache")])
    assert game.chaos_reward[0] == pytest.approx(-game.order_reward[0] - 0.5 * 1.0)


def test_extra_chaos_must_be_one_row_per_env(shop: Topology) -> None:
    game = make(shop)
    with pytest.raises(ValueError, match=r"\(1, k\)"):
        game.step(np.array([0]), np.array([0]), np.array([0, 0]))


# --- masks ----------------------------------------------------------------------------------------


def test_chaos_mask_excludes_padded_slots(shop: Topology) -> None:
    mask = make(shop).chaos_mask()[0]
    assert mask.shape == (N_CHAOS_ACTIONS,)
    for s in range(shop.n_services, MAX_SLOTS):
        for fault in Fault:
            assert not mask[chaos_action(s, fault)]
    assert mask[0]  # noop is always allowed


def test_chaos_mask_excludes_already_faulted_slots(shop: Topology) -> None:
    game = make(shop)
    play(game, chaos=kill(game, "api"))
    mask = game.chaos_mask()[0]
    assert not any(mask[chaos_action(slot(game, "api"), fault)] for fault in Fault)
    assert mask[kill(game, "cache")]


def test_chaos_mask_excludes_disk_full_without_a_volume(shop: Topology) -> None:
    mask = make(shop).chaos_mask()[0]
    assert not mask[chaos_action(shop.index["cache"], Fault.DISK_FULL)]
    assert not mask[chaos_action(shop.index["api"], Fault.DISK_FULL)]
    assert mask[chaos_action(shop.index["db"], Fault.DISK_FULL)]
    assert mask[chaos_action(shop.index["cache"], Fault.KILL)]


def test_chaos_mask_excludes_faults_over_budget(shop: Topology) -> None:
    mask = make(shop, GameConfig(budget=1.0)).chaos_mask()[0]
    db = shop.index["db"]
    assert not mask[chaos_action(db, Fault.DISK_FULL)]  # costs 2
    assert not mask[chaos_action(db, Fault.NET_SATURATION)]  # costs 2
    assert mask[chaos_action(db, Fault.KILL)]  # costs 1


def test_chaos_mask_allows_only_noop_at_the_concurrency_cap(shop: Topology) -> None:
    game = make(shop, GameConfig(max_concurrent=1))
    play(game, chaos=kill(game, "db"))
    mask = game.chaos_mask()[0]
    assert mask[0]
    assert mask.sum() == 1


def expected_chaos_mask(game: Game, e: int) -> np.ndarray:
    """docs/design.md §4.5, from the game's books: noop always; at the cap nothing else; else every
    fault a service can take, on a service with none open, that the budget left pays for."""
    topology, mask = game.topology, np.zeros(N_CHAOS_ACTIONS, bool)
    mask[0] = True
    open_ = game.fault_start[e] >= 0
    if open_.sum() >= game.config.max_concurrent:
        return mask
    for slot in range(topology.n_services):
        for fault in Fault:
            fits = FAULT_COST[fault] <= game.budget_left[e] + 1e-9
            where = (
                (fault != Fault.DISK_FULL or topology.has_disk[slot])
                and (fault != Fault.MEMORY_LEAK or topology.own_code[slot])
                and (fault != Fault.CONN_LEAK or topology.kinds[slot] in ("app", "worker"))
            )
            mask[chaos_action(slot, fault)] = not open_[slot] and fits and where
    return mask


def test_the_chaos_mask_follows_the_faults_and_the_budget_tick_after_tick_and_across_episodes() -> None:
    store = load_topology("store")
    game = Game(SimSandbox(store, 16, SimParams()), GameConfig(max_ticks=40))
    chaos, order = load_policy("random", Role.CHAOS), load_policy("runbook", Role.ORDER)
    changes = 0
    for episode in range(3):
        game.reset(list(range(episode * 16, episode * 16 + 16)))
        chaos.reset(16, seed=episode)
        order.reset(16)
        before = game.chaos_mask().copy()
        for _ in range(40):
            game.step(game.decide(chaos), game.decide(order))
            mask = game.chaos_mask()
            for e in range(16):
                np.testing.assert_array_equal(mask[e], expected_chaos_mask(game, e))
            changes += int((mask != before).any(axis=1).sum())
            before = mask.copy()
    assert changes > 50  # faults opened and ended, budgets spent: the rows did change


def test_order_mask_excludes_padded_slots(shop: Topology) -> None:
    mask = make(shop).order_mask()[0]
    assert mask.shape == (N_ORDER_ACTIONS,)
    for s in range(shop.n_services, MAX_SLOTS):
        for repair in (Repair.RESTART, Repair.CLEAN_DISK, Repair.RATE_LIMIT, Repair.RECREATE):
            assert not mask[order_action(s, repair)]
    assert mask[0]


def test_order_mask_excludes_clean_disk_without_a_volume(shop: Topology) -> None:
    mask = make(shop).order_mask()[0]
    assert not mask[order_action(shop.index["cache"], Repair.CLEAN_DISK)]
    assert mask[order_action(shop.index["db"], Repair.CLEAN_DISK)]
    assert mask[order_action(shop.index["cache"], Repair.RESTART)]


def test_masked_order_action_is_counted_invalid_and_does_nothing(shop: Topology) -> None:
    game = make(shop)
    play(game, order=order_action(shop.index["cache"], Repair.CLEAN_DISK))
    play(game, order=order_action(MAX_SLOTS - 1, Repair.RESTART))
    assert stats(game).invalid_actions == 2
    assert stats(game).repairs == 0


def test_actions_of_any_integer_type_play_alike(shop: Topology) -> None:
    as_int64, as_int32 = make(shop), make(shop)
    for game, dtype in ((as_int64, np.int64), (as_int32, np.int32)):
        game.step(np.array([kill(game, "db")], dtype), np.array([0], dtype))
        game.step(np.array([0], dtype), np.array([order_action(slot(game, "db"), Repair.RESTART)], dtype))
    assert stats(as_int32) == stats(as_int64)
    assert (stats(as_int32).faults_injected, stats(as_int32).repairs) == (1, 1)


def test_a_step_refuses_actions_that_are_not_one_per_env(shop: Topology) -> None:
    game = make(shop)
    with pytest.raises(ValueError, match="shape"):
        game.step(np.zeros((1, 1), np.int64), np.zeros(1, np.int64))
    assert stats(game).ticks == 0


# --- MTTR and recovery books ----------------------------------------------------------------------


def test_mttr_counts_ticks_from_injection_until_target_and_slo_recover(shop: Topology) -> None:
    game = make(shop)
    db = slot(game, "db")
    inject_tick, repair_tick = 3, 6
    recovered_tick = None
    for t in range(20):
        chaos = kill(game, "db") if t == inject_tick else 0
        order = order_action(db, Repair.RESTART) if t == repair_tick else 0
        play(game, chaos, order)
        sandbox = game.sandbox
        if t > inject_tick and recovered_tick is None and sandbox.health[0, db] and sandbox.slo[0]:
            recovered_tick = t
    assert recovered_tick is not None
    assert stats(game).mttrs == (recovered_tick - inject_tick,)
    assert stats(game).faults_recovered == 1
    assert stats(game).unrecovered == 0


def test_mttr_waits_for_the_slo_as_well_as_the_target(shop: Topology) -> None:
    """cache is repaired first but the SLO still fails while db is dead: cache's fault stays open."""
    game = make(shop, GameConfig(max_concurrent=2))
    cache, db = slot(game, "cache"), slot(game, "db")
    script = {
        0: (kill(game, "cache"), 0),
        1: (kill(game, "db"), 0),
        3: (0, order_action(cache, Repair.RESTART)),
        8: (0, order_action(db, Repair.RESTART)),
    }
    cache_healthy_at = cache_recovered_at = db_recovered_at = None
    for t in range(20):
        play(game, *script.get(t, (0, 0)))
        health, slo = game.sandbox.health[0], bool(game.sandbox.slo[0])
        if t >= 3 and cache_healthy_at is None and health[cache]:
            cache_healthy_at = t
        if t >= 3 and cache_recovered_at is None and health[cache] and slo:
            cache_recovered_at = t
        if t >= 8 and db_recovered_at is None and health[db] and slo:
            db_recovered_at = t
    assert cache_healthy_at is not None and cache_recovered_at is not None and db_recovered_at is not None
    assert cache_healthy_at < cache_recovered_at  # the case this test is about
    assert sorted(stats(game).mttrs) == sorted([cache_recovered_at - 0, db_recovered_at - 1])


def test_fault_still_open_at_episode_end_is_unrecovered(shop: Topology) -> None:
    game = make(shop, GameConfig(max_ticks=10))
    play(game, chaos=kill(game, "db"))
    while not play(game):
        pass
    assert stats(game).unrecovered == 1
    assert stats(game).faults_recovered == 0
    assert stats(game).mttrs == ()


def test_restart_of_a_healthy_service_is_a_wasted_repair(shop: Topology) -> None:
    game = make(shop)
    play(game, order=order_action(slot(game, "cache"), Repair.RESTART))
    assert stats(game).repairs == 1
    assert stats(game).wasted_repairs == 1


def test_proper_repair_is_not_wasted(shop: Topology) -> None:
    game = make(shop)
    play(game, chaos=kill(game, "db"))
    play(game, order=order_action(slot(game, "db"), Repair.RESTART))
    assert stats(game).repairs == 1
    assert stats(game).wasted_repairs == 0


def test_recreate_of_db_counts_data_loss(shop: Topology) -> None:
    game = make(shop)
    play(game, chaos=kill(game, "db"))
    play(game, order=order_action(slot(game, "db"), Repair.RECREATE))
    assert stats(game).data_loss == 1


def test_recreate_of_a_service_without_volume_loses_no_data(shop: Topology) -> None:
    game = make(shop)
    play(game, chaos=kill(game, "cache"))
    play(game, order=order_action(slot(game, "cache"), Repair.RECREATE))
    assert stats(game).data_loss == 0


def test_availability_is_the_fraction_of_ticks_the_slo_held(shop: Topology) -> None:
    game = make(shop, GameConfig(max_ticks=12))
    held = 0
    for t in range(12):
        chaos = kill(game, "db") if t == 2 else 0
        order = order_action(slot(game, "db"), Repair.RESTART) if t == 5 else 0
        play(game, chaos, order)
        held += bool(game.sandbox.slo[0])
    assert 0 < held < 12
    assert stats(game).ticks == 12
    assert stats(game).slo_ticks == held
    assert stats(game).availability == pytest.approx(held / 12)


# --- rewards --------------------------------------------------------------------------------------


def test_order_reward_is_lower_when_the_slo_fails(shop: Topology) -> None:
    game = make(shop)
    play(game)
    assert game.sandbox.slo[0]
    holding = float(game.order_reward[0])
    play(game, chaos=kill(game, "db"))
    assert not game.sandbox.slo[0]
    assert game.order_reward[0] < holding


def test_repair_costs_order_reward(shop: Topology) -> None:
    idle, busy = make(shop, seed=4), make(shop, seed=4)
    play(idle)
    play(busy, order=order_action(slot(busy, "cache"), Repair.RATE_LIMIT))  # no downtime
    np.testing.assert_array_equal(idle.sandbox.health, busy.sandbox.health)
    assert busy.order_reward[0] < idle.order_reward[0]
    assert idle.order_reward[0] - busy.order_reward[0] == pytest.approx(REPAIR_COST[Repair.RATE_LIMIT])


def test_chaos_reward_is_negative_order_reward_minus_fault_cost(shop: Topology) -> None:
    game = make(shop, GameConfig(fault_cost_weight=0.5))
    play(game, chaos=chaos_action(slot(game, "db"), Fault.DISK_FULL))
    expected = -game.order_reward[0] - 0.5 * FAULT_COST[Fault.DISK_FULL]
    assert game.chaos_reward[0] == pytest.approx(expected)


def test_chaos_reward_is_negative_order_reward_without_injection(shop: Topology) -> None:
    game = make(shop)
    play(game, chaos=kill(game, "db"))
    play(game)
    assert game.chaos_reward[0] == pytest.approx(-game.order_reward[0])


# --- episode end ----------------------------------------------------------------------------------


def test_episode_is_truncated_after_max_ticks(shop: Topology) -> None:
    game = make(shop, GameConfig(max_ticks=5))
    done = [play(game) for _ in range(5)]
    assert done == [False, False, False, False, True]


def test_reset_starts_fresh_books(shop: Topology) -> None:
    game = make(shop)
    play(game, chaos=kill(game, "db"))
    play(game, order=order_action(slot(game, "cache"), Repair.RESTART))
    game.reset([1])
    fresh = stats(game)
    assert (fresh.ticks, fresh.faults_injected, fresh.repairs, fresh.unrecovered) == (0, 0, 0, 0)
    assert (game.sandbox.faults == 0).all()


# --- metrics --------------------------------------------------------------------------------------


def test_summarize_counts_a_killed_and_restarted_service_as_recovered(shop: Topology) -> None:
    game = make(shop, GameConfig(max_ticks=20))
    for t in range(20):
        chaos = kill(game, "db") if t == 1 else 0
        order = order_action(slot(game, "db"), Repair.RESTART) if t == 4 else 0
        play(game, chaos, order)
    summary = summarize(game.episode_stats())
    assert summary.episodes == 1
    assert summary.faults_injected == 1
    assert summary.faults_recovered == 1


def test_summarize_aggregates_over_episodes() -> None:
    def episode(ticks: int, slo_ticks: int, mttrs: tuple[int, ...], unrecovered: int) -> EpisodeStats:
        return EpisodeStats(
            ticks=ticks,
            slo_ticks=slo_ticks,
            faults_injected=len(mttrs) + unrecovered,
            faults_recovered=len(mttrs),
            unrecovered=unrecovered,
            relapses=unrecovered + 1,
            mttrs=mttrs,
            repairs=3,
            wasted_repairs=1,
            data_loss=0,
            invalid_actions=0,
        )

    summary = summarize([episode(100, 90, (2, 4), 0), episode(100, 70, (6,), 1)])
    assert summary.availability == pytest.approx(0.8)
    assert summary.mttr_mean == pytest.approx(4.0)
    assert summary.mttr_p95 == pytest.approx(5.8)  # linear interpolation between 4 and 6
    assert summary.faults_injected == 4
    assert summary.faults_recovered == 3
    assert summary.unrecovered == 1
    assert summary.relapses == 3
    assert summary.repairs == 6
    assert summary.wasted_repairs == 2
    assert summary.episodes == 2


def test_summarize_without_recoveries_has_no_mttr() -> None:
    stats_ = EpisodeStats(
        ticks=10, slo_ticks=5, faults_injected=1, faults_recovered=0, unrecovered=1, relapses=0,
        mttrs=(), repairs=0, wasted_repairs=0, data_loss=0, invalid_actions=0,
    )  # fmt: skip
    summary = summarize([stats_])
    assert summary.mttr_mean is None
    assert summary.mttr_p95 is None
