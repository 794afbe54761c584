"""The backend factory, and the constants of the modelled system both backends share."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from deeplops import simkernel, system
from deeplops.backends import BACKENDS, make_sandbox
from deeplops.errors import ConfigError, SandboxError
from deeplops.faults import Repair
from deeplops.observation import Feature
from deeplops.sim import SimParams, SimSandbox
from deeplops.topology import load_topology


def test_the_sim_backend_is_the_default_and_takes_its_params():
    assert BACKENDS[0] == "sim"
    params = SimParams(probe_noise=0.1)
    box = make_sandbox("sim", load_topology("shop"), 3, params=params)
    assert isinstance(box, SimSandbox) and box.n_envs == 3 and box.params is params


def test_params_that_are_not_sim_params_are_a_config_error():
    with pytest.raises(ConfigError, match="sim option params: expected a SimParams, got a dict"):
        make_sandbox("sim", load_topology("shop"), params={"probe_noise": 0.1})


def test_an_unknown_backend_is_refused_naming_the_backends():
    with pytest.raises(SandboxError, match="unknown backend 'k8s': expected one of sim, docker"):
        make_sandbox("k8s", load_topology("shop"))


@pytest.mark.parametrize(("backend", "expected"), [("sim", "expected params"), ("docker", "expected name")])
def test_an_unknown_option_is_refused_naming_the_backends_options(backend, expected):
    with pytest.raises(SandboxError, match=rf"unknown {backend} option\(s\) \['colour'\]: {expected}"):
        make_sandbox(backend, load_topology("shop"), colour="blue")


def test_the_simulators_defaults_are_the_modelled_systems_constants():
    params = SimParams()
    assert params.probe_timeout_s == system.PROBE_TIMEOUT_S
    assert params.slo_latency_s == system.SLO_LATENCY_S
    assert params.data_fraction == system.DATA_FRACTION
    assert params.restart_half_life == system.RESTART_HALF_LIFE_TICKS


def test_the_simulator_counts_as_restarts_exactly_the_repairs_the_system_does():
    counted = SimParams().repairs()[:, simkernel.R_COUNTS_RESTART]
    assert {Repair(code) for code in np.flatnonzero(counted)} == system.COUNTS_AS_RESTART


def test_a_simulated_restart_count_decays_by_the_systems_factor_each_tick():
    shop = load_topology("shop")
    box = SimSandbox(shop, 1)
    box.reset([0])
    slot = shop.index["cache"]
    box.repair(np.array([slot]), np.array([Repair.RESTART]))
    box.advance()
    first = float(box.observe()[0, slot, Feature.RESTARTS])
    for _ in range(int(system.RESTART_HALF_LIFE_TICKS)):
        box.advance()
    assert first > 0
    assert float(box.observe()[0, slot, Feature.RESTARTS]) == pytest.approx(first / 2, rel=1e-5)


def test_the_docker_backend_fills_volumes_within_the_same_data_range():
    from deeplops.dockerbox import stack

    shop = load_topology("shop")
    drawn = stack.data_fractions(shop, seed=7)
    assert set(drawn) == {s.name for s in shop.services if s.disk_mb}
    lo, hi = system.DATA_FRACTION
    assert all(lo <= f <= hi for f in drawn.values())


def imported_after(statement: str) -> set[str]:
    """The deeplops modules a fresh interpreter holds after ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(m for m in sys.modules if m.startswith('deeplops')))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_the_protocol_imports_no_backend():
    held = imported_after("import deeplops.sandbox")
    assert not held & {"deeplops.sim", "deeplops.backends", "deeplops.dockerbox.sandbox"}


def test_the_docker_backend_never_imports_the_simulator():
    held = imported_after(
        "from deeplops.dockerbox import attached, stack\nfrom deeplops.topology import load_topology\n"
        "stack.data_fractions(load_topology('shop'), 0)"
    )
    assert "deeplops.dockerbox.sandbox" in held and "deeplops.sim" not in held
