"""Random topologies: valid, varied, and reproducible from their seed."""

from __future__ import annotations

import pytest

from deeplops.errors import ConfigError
from deeplops.topogen import random_topology


def test_the_same_seed_gives_the_same_topology():
    assert random_topology(11) == random_topology(11)


def test_different_seeds_give_different_topologies():
    shapes = {random_topology(seed).services for seed in range(20)}
    assert len(shapes) == 20


def test_sizes_stay_within_the_bounds_asked_for():
    sizes = {random_topology(seed, min_services=4, max_services=9).n_services for seed in range(60)}
    assert min(sizes) >= 4 and max(sizes) <= 9
    assert len(sizes) >= 4  # the size itself varies


def test_some_services_carry_volumes_and_some_do_not():
    with_disk = sum(int(random_topology(seed).has_disk.sum()) for seed in range(30))
    without = sum(int((~random_topology(seed).has_disk).sum()) for seed in range(30))
    assert with_disk > 0 and without > 0


def test_an_exact_size_is_honoured():
    assert random_topology(3, n_services=16).n_services == 16


@pytest.mark.parametrize("seed", range(40))
def test_every_topology_is_a_usable_system(seed):
    topology = random_topology(seed)
    assert topology.entries.any()
    # Dependencies come first and every entry reaches at least one other service.
    for i, service in enumerate(topology.services):
        assert all(topology.index[d] < i for d in service.depends_on)
    for i in range(topology.n_services):
        if topology.entries[i]:
            assert topology.closure[i].sum() >= 2


def test_a_size_beyond_the_slots_is_refused():
    with pytest.raises(ConfigError, match="16"):
        random_topology(0, n_services=17)
