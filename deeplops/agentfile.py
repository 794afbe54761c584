"""The saved-agent file: a zip of a plain JSON config and float32 arrays, read without running code.

A saved agent (``order.zip``, ``chaos.zip``, a self-play checkpoint) holds exactly three members:

    agent.json      {"format": "deeplops-agent", "version": 1, "role": "order" or "chaos",
                     "actions": 65, "network": {"hidden": 32, "rounds": 2, "value_layers": [64]},
                     "training": {"timesteps": 0, "updates": 0, "adam_steps": 0}}
    weights.npz     one float32 array per parameter of the slot network, named as torch names it
    optimizer.npz   Adam's moments, ``exp_avg/NAME`` and ``exp_avg_sq/NAME`` per parameter (none
                    before Adam's first step), so that training goes on where it stopped

Reading parses JSON and ``.npy`` headers only: no pickle, no ``torch.load``, nothing imported or
called by a name the file gives. The observation and action spaces come from the game, never from
the file; the network is rebuilt from ``network`` and must match the arrays name for name, shape
for shape (an agent saved in an earlier world, named by its action count, in that world's shapes,
then brought into this one by ``agentupgrade``). Anything else is refused with a one-line
PolicyError naming the file, what was expected and what was given, without echoing the file's
text (it may be hostile).
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np
import torch
from gymnasium import spaces

from deeplops import agentupgrade
from deeplops.actions import N_ACTIONS, OBSERVATION_SPACE, Role
from deeplops.agent_net import SlotEncoder, SlotPolicy
from deeplops.errors import PolicyError

FORMAT = "deeplops-agent"
"""The format name ``agent.json`` must carry."""
VERSION = 1
"""The format version written, and the only one read."""

CONFIG, WEIGHTS, OPTIMIZER = "agent.json", "weights.npz", "optimizer.npz"
MEMBERS = (CONFIG, WEIGHTS, OPTIMIZER)
"""A saved agent's members, exactly these."""

MAX_CONFIG_BYTES = 64 * 2**10
"""Most bytes ``agent.json`` may unpack to (it is a few hundred)."""
MAX_ARRAYS_BYTES = 32 * 2**20
"""Most bytes an array member may unpack to: a bound against zip bombs, above the largest network
the limits below allow (its Adam moments take 18 MiB; the shipped agents' take 0.4 MiB)."""
MAX_FILE_BYTES = 2 * MAX_ARRAYS_BYTES + MAX_CONFIG_BYTES + 2**20
"""Most bytes a saved agent's file may have."""
MAX_DIRECTORY_BYTES = 64 * 2**10
"""Most bytes a zip's central directory may have: zipfile reads every entry of it into memory
before any member is looked at (three entries take under 200 bytes)."""

NETWORK_LIMITS = {"hidden": (1, 128), "rounds": (0, 8), "value_layers": (0, 4), "value_width": (1, 512)}
"""Bounds of the network settings a saved agent may describe (the shipped ones: 32, 2, one layer of
64): the network is built before its weights are checked, so a file must not be able to ask for a
huge one."""

_COUNT_MAX = 2**53
"""Largest count in ``training`` (JSON numbers are exact up to here)."""
_SB3_MEMBERS = frozenset({"data", "policy.pth"})
"""What marks stable-baselines3's own zip, whose ``data`` is cloudpickled."""
_FLOAT32 = np.dtype("<f4")
_NPY_HEADER_BYTES = 16 * 2**10
"""Room for one ``.npy`` header (numpy writes under 200 bytes, and reads at most 10,000)."""
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
"""Every member's timestamp: the same agent gives the same bytes."""
_OLD_FORMAT = (
    "an agent saved in the old pickled format (a stable-baselines3 zip), which deeplops no longer loads "
    "because loading it can run any code: expected agent.json, weights.npz and optimizer.npz; retrain it "
    "with deeplops selfplay, or, only if you trust the file, load it with sb3_contrib's MaskablePPO.load "
    "and save its .policy with deeplops.agentfile.save"
)


@dataclass(frozen=True)
class Network:
    """The slot network's settings (``deeplops.agent_net``): with the role, all it takes to rebuild it."""

    hidden: int
    """Width of each slot's embedding."""
    rounds: int
    """Message-passing rounds over the dependency graph."""
    value_layers: tuple[int, ...]
    """Widths of the value head's hidden layers."""

    @classmethod
    def of(cls, policy: SlotPolicy) -> Network:
        """The settings ``policy`` was built with."""
        encoder = cast(SlotEncoder, policy.features_extractor)
        value_layers = cast(dict[str, list[int]], policy.net_arch)["vf"]
        return cls(policy.slot_hidden, len(encoder.layers), tuple(int(w) for w in value_layers))

    def kwargs(self) -> dict[str, Any]:
        """The network's keyword arguments of ``SlotPolicy`` (``policy_kwargs`` of MaskablePPO)."""
        return {"hidden": self.hidden, "rounds": self.rounds, "value_layers": self.value_layers}

    def unsupported(self) -> str | None:
        """What lies outside ``NETWORK_LIMITS``, or None when a saved agent may have this network."""
        checks = [
            ("hidden", self.hidden, NETWORK_LIMITS["hidden"]),
            ("rounds", self.rounds, NETWORK_LIMITS["rounds"]),
            ("the number of value_layers", len(self.value_layers), NETWORK_LIMITS["value_layers"]),
            *(("a value layer's width", w, NETWORK_LIMITS["value_width"]) for w in self.value_layers),
        ]
        for what, value, (lo, hi) in checks:
            if not lo <= value <= hi:
                return f"{what} {value} (expected {lo} to {hi})"
        return None


@dataclass(frozen=True)
class TrainingState:
    """Where training stopped, so that training from a checkpoint goes on as if never interrupted."""

    timesteps: int = 0
    """Transitions trained on (stable-baselines3's ``num_timesteps``; TensorBoard's x axis)."""
    updates: int = 0
    """Gradient updates made (stable-baselines3's ``_n_updates``)."""


@dataclass(frozen=True)
class AdamState:
    """Adam's state for every parameter: its step count (the same for all) and its two moments."""

    steps: int = 0
    """Optimizer steps taken; 0 before the first (and then no moments)."""
    exp_avg: dict[str, np.ndarray] = field(default_factory=dict)
    """Running mean of each parameter's gradient."""
    exp_avg_sq: dict[str, np.ndarray] = field(default_factory=dict)
    """Running mean of each parameter's squared gradient."""


@dataclass(frozen=True)
class SavedAgent:
    """A saved agent, read and checked."""

    role: Role
    """The side it plays."""
    network: Network
    """Its network's settings."""
    weights: dict[str, np.ndarray]
    """Every parameter of the network, by name."""
    training: TrainingState
    """Where its training stopped."""
    adam: AdamState
    """Its optimizer's state."""

    def build(self, device: str = "cpu") -> SlotPolicy:
        """A network holding the saved weights, to act with (its optimizer starts afresh)."""
        policy = build_network(self.role, self.network, device)
        _put_weights(policy, self.weights)
        return policy

    def restore(self, policy: SlotPolicy) -> None:
        """Put the saved weights and Adam state into ``policy``, a network of the same settings, to
        train on from where the saved agent stopped."""
        if Network.of(policy) != self.network or _shapes(policy) != {k: v.shape for k, v in self.weights.items()}:
            raise PolicyError(f"expected a network with the saved agent's settings {self.network}, "
                              f"got one with {Network.of(policy)}")  # fmt: skip
        _put_weights(policy, self.weights)
        optimizer = policy.optimizer
        state = optimizer.state_dict()
        state["state"] = {}
        if self.adam.steps:
            names = {id(p): name for name, p in policy.named_parameters()}
            for i, param in enumerate(optimizer.param_groups[0]["params"]):
                name = names[id(param)]
                state["state"][i] = {
                    "step": torch.tensor(float(self.adam.steps)),
                    "exp_avg": torch.from_numpy(self.adam.exp_avg[name].copy()),
                    "exp_avg_sq": torch.from_numpy(self.adam.exp_avg_sq[name].copy()),
                }
        optimizer.load_state_dict(state)  # casts and moves the moments to each parameter's device


def build_network(role: Role, network: Network, device: str = "cpu") -> SlotPolicy:
    """A slot network of ``role`` on the game's own observation and action spaces, to be given weights.

    Its initial weights are torch's plain defaults: stable-baselines3's orthogonal initialisation (a
    QR decomposition per layer) would take most of a load's time for weights about to be replaced.
    """
    role = Role(role)
    # Initialising draws from torch's global random stream: loading an agent must not shift it.
    with torch.random.fork_rng(devices=[]):
        policy = SlotPolicy(OBSERVATION_SPACE[role](), spaces.Discrete(N_ACTIONS[role]), lambda _: 0.0,
                            ortho_init=False, **network.kwargs())  # fmt: skip
    return policy.to(device)


def save(path: str | Path, policy: SlotPolicy, role: Role, training: TrainingState | None = None) -> None:
    """Write ``policy`` (its weights and Adam state) at ``path`` as a saved agent of ``role``.

    Raises:
        ValueError: the policy is not one a saved agent can hold (another action count, a network
            beyond ``NETWORK_LIMITS``, an optimizer other than Adam).
    """
    path, role = Path(path), Role(role)
    n_actions = int(cast(spaces.Discrete, policy.action_space).n)
    if n_actions != N_ACTIONS[role]:
        raise ValueError(f"a {role.value} agent has {N_ACTIONS[role]} actions, this policy {n_actions}")
    network = Network.of(policy)
    problem = network.unsupported()
    if problem:
        raise ValueError(f"a saved agent cannot hold this network: {problem}")
    training = training or TrainingState()
    adam = _adam_state(policy)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "role": role.value,
        "actions": n_actions,
        "network": {"hidden": network.hidden, "rounds": network.rounds, "value_layers": list(network.value_layers)},
        "training": {"timesteps": int(training.timesteps), "updates": int(training.updates), "adam_steps": adam.steps},
    }
    weights = {name: p.detach().cpu().numpy() for name, p in policy.named_parameters()}
    moments = {f"exp_avg/{k}": v for k, v in adam.exp_avg.items()}
    moments.update({f"exp_avg_sq/{k}": v for k, v in adam.exp_avg_sq.items()})
    members = {
        CONFIG: (json.dumps(config, indent=2) + "\n").encode(),
        WEIGHTS: _npz(weights),
        OPTIMIZER: _npz(moments),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for name, data in members.items():
            archive.writestr(_zip_info(name, zipfile.ZIP_DEFLATED), data)
    os.replace(tmp, path)  # a reader never sees half a file


def load(path: str | Path, explore: bool = False) -> SavedAgent:
    """The saved agent at ``path``, checked member by member; one saved in an earlier world is
    brought into this one (``agentupgrade``), to act as it did, or with ``explore`` to train on.

    Raises:
        PolicyError: the file is not a saved agent of this format, or does not match itself.
    """
    path = Path(path)
    members = _read_members(path)
    role, network, training, adam_steps, world = _parse_config(path, members[CONFIG])
    shapes = _layout(role, network)
    if world is not None:
        shapes = agentupgrade.shapes_in(world, role, shapes)
    expected_weights = "the parameters of the network agent.json describes"
    weights = _read_arrays(path, WEIGHTS, members[WEIGHTS], shapes, expected_weights)
    if adam_steps:
        moment_shapes = {f"{m}/{k}": s for m in ("exp_avg", "exp_avg_sq") for k, s in shapes.items()}
        expected_moments = "Adam's two moments for each parameter (training.adam_steps is not 0)"
    else:
        moment_shapes, expected_moments = {}, "no arrays (training.adam_steps is 0)"
    moments = _read_arrays(path, OPTIMIZER, members[OPTIMIZER], moment_shapes, expected_moments)
    for name, value in moments.items():
        if name.startswith("exp_avg_sq/") and (value < 0).any():
            _refuse(path, f"{OPTIMIZER}: {name} holds negative values: expected squared-gradient means (>= 0)")
    exp_avg = {k: moments[f"exp_avg/{k}"] for k in shapes} if adam_steps else {}
    exp_avg_sq = {k: moments[f"exp_avg_sq/{k}"] for k in shapes} if adam_steps else {}
    if world is not None:  # an earlier world's agent, in today's layout
        weights = agentupgrade.upgrade(world, role, weights, explore=explore)
        if adam_steps:
            exp_avg = agentupgrade.upgrade(world, role, exp_avg, moments=True)
            exp_avg_sq = agentupgrade.upgrade(world, role, exp_avg_sq, moments=True)
    return SavedAgent(role, network, weights, training, AdamState(adam_steps, exp_avg, exp_avg_sq))


def _refuse(path: Path, problem: str) -> NoReturn:
    raise PolicyError(f"{path}: {problem}")


def _read_members(path: Path) -> dict[str, bytes]:
    """The three members' bytes, after checking the file is a zip of exactly them, each bounded."""
    if not path.exists():
        _refuse(path, "no such file: expected a saved agent (.zip)")
    if not path.is_file():
        _refuse(path, "not a regular file: expected a saved agent (.zip)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        _refuse(path, f"{size} bytes: expected a saved agent of at most {MAX_FILE_BYTES} bytes")
    directory = _directory_bytes(path)
    if directory is None or not zipfile.is_zipfile(path):
        _refuse(path, "not a saved agent: expected a .zip written by deeplops selfplay, got a file that is no zip")
    if directory > MAX_DIRECTORY_BYTES:
        _refuse(
            path, f"not a saved agent: a zip directory of {directory} bytes: expected at most {MAX_DIRECTORY_BYTES}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if set(names) >= _SB3_MEMBERS:
                _refuse(path, _OLD_FORMAT)
            if len(set(names)) != len(names):
                _refuse(path, "not a saved agent: a member name appears twice in the zip: expected each once")
            if set(names) != set(MEMBERS):
                ours = len(set(names) & set(MEMBERS))
                _refuse(path, f"not a saved agent: expected exactly the members {', '.join(MEMBERS)}, got "
                              f"{ours} of them and {len(set(names)) - ours} other member(s)")  # fmt: skip
            limits = {CONFIG: MAX_CONFIG_BYTES, WEIGHTS: MAX_ARRAYS_BYTES, OPTIMIZER: MAX_ARRAYS_BYTES}
            return {name: _read_member(path, archive, archive.getinfo(name), name, limits[name]) for name in MEMBERS}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, RuntimeError) as exc:
        # RuntimeError: zipfile's word for an encrypted member; the others, a damaged archive.
        _refuse(path, f"not a saved agent: the zip cannot be read ({exc.__class__.__name__}): expected an intact zip")


def _directory_bytes(path: Path) -> int | None:
    """The size the zip's end record gives its central directory (found as zipfile finds it: the
    last end-record signature in the file's last 64 KiB), or None when there is none."""
    end_record = 22  # bytes, before the archive comment (up to 65,535 bytes)
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - end_record - 0xFFFF))
        tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < end_record:
        return None
    return int.from_bytes(tail[at + 12 : at + 16], "little")


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, limit: int) -> bytes:
    """A member's bytes, never more than ``limit`` read: its header's size is not trusted."""
    if info.flag_bits & 0x1:
        _refuse(path, f"{label} is encrypted: expected a plain zip member")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        _refuse(path, f"{label} is compressed with zip method {info.compress_type}: expected stored or deflated")
    if info.file_size > limit:
        _refuse(path, f"{label} unpacks to {info.file_size} bytes: expected at most {limit}")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        _refuse(path, f"{label} unpacks to more than {limit} bytes: expected at most {limit}")
    return data


def _parse_config(path: Path, raw: bytes) -> tuple[Role, Network, TrainingState, int, agentupgrade.World | None]:
    """Role, network, training state, Adam's step count and the earlier world it was saved in (None:
    this one) from ``agent.json``, every field checked."""

    def no_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            _refuse(path, f"{CONFIG} names a field twice in one object: expected each field once")
        return dict(pairs)

    def no_constant(_: str) -> NoReturn:
        _refuse(path, f"{CONFIG} holds NaN or Infinity: expected plain JSON numbers")

    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=no_twice, parse_constant=no_constant)
    except UnicodeDecodeError:
        _refuse(path, f"{CONFIG} is not UTF-8 text: expected a JSON object")
    except json.JSONDecodeError as exc:
        _refuse(path, f"{CONFIG} is not valid JSON (line {exc.lineno}, column {exc.colno}): expected a JSON object")
    except (ValueError, RecursionError) as exc:  # a number too long to read, nesting too deep
        _refuse(path, f"{CONFIG} cannot be read as JSON ({exc.__class__.__name__}): expected a JSON object")
    if not isinstance(doc, dict):
        _refuse(path, f"{CONFIG} holds {_json_kind(doc)}: expected a JSON object")
    if doc.get("format") != FORMAT:
        given = _json_kind(doc["format"]) if "format" in doc else "none"
        given = "another" if given == "a string" else given
        _refuse(path, f"not a saved agent: {CONFIG} gives format {given}: expected format {FORMAT!r}")
    version = _integer(path, "version", doc.get("version"), 1, _COUNT_MAX)
    if version != VERSION:
        _refuse(path, f"{CONFIG} is format version {version}: expected version {VERSION}, which this deeplops reads")
    _fields(path, "", doc, ("format", "version", "role", "actions", "network", "training"))
    if doc["role"] not in [r.value for r in Role]:
        given = "another string" if isinstance(doc["role"], str) else _json_kind(doc["role"])
        _refuse(path, f"{CONFIG}: role must be {' or '.join(repr(r.value) for r in Role)}, got {given}")
    role = Role(doc["role"])
    actions = _integer(path, "actions", doc["actions"], 0, _COUNT_MAX)
    world = agentupgrade.world_of(role, actions)
    if actions != N_ACTIONS[role] and world is None:
        earlier = "".join(f" (or {w.actions(role)}, an earlier world's)" for w in agentupgrade.EARLIER)
        _refuse(path, f"{CONFIG}: role {role.value} with {actions} actions: expected {N_ACTIONS[role]}, the game's "
                      f"{role.value} actions{earlier}")  # fmt: skip
    net = _fields(path, "network.", doc["network"], ("hidden", "rounds", "value_layers"))
    widths = net["value_layers"]
    if not isinstance(widths, list):
        _refuse(path, f"{CONFIG}: network.value_layers must be an array of integers, got {_json_kind(widths)}")
    lo_n, hi_n = NETWORK_LIMITS["value_layers"]
    if not lo_n <= len(widths) <= hi_n:
        _refuse(path, f"{CONFIG}: network.value_layers has {len(widths)} layers: expected {lo_n} to {hi_n}")
    network = Network(
        _integer(path, "network.hidden", net["hidden"], *NETWORK_LIMITS["hidden"]),
        _integer(path, "network.rounds", net["rounds"], *NETWORK_LIMITS["rounds"]),
        tuple(_integer(path, "network.value_layers[]", w, *NETWORK_LIMITS["value_width"]) for w in widths),
    )
    train = _fields(path, "training.", doc["training"], ("timesteps", "updates", "adam_steps"))
    counts = {k: _integer(path, f"training.{k}", train[k], 0, _COUNT_MAX) for k in train}
    return role, network, TrainingState(counts["timesteps"], counts["updates"]), counts["adam_steps"], world


def _fields(path: Path, where: str, value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``value`` as a JSON object of exactly the fields ``names``."""
    if not isinstance(value, dict):
        what = where.rstrip(".") or "the top level"
        _refuse(path, f"{CONFIG}: {what} must be a JSON object, got {_json_kind(value)}")
    missing = [n for n in names if n not in value]
    if missing:
        _refuse(path, f"{CONFIG} lacks the field {where}{missing[0]}: expected the fields "
                      f"{', '.join(where + n for n in names)}")  # fmt: skip
    if len(value) != len(names):
        _refuse(path, f"{CONFIG} has {len(value) - len(names)} field(s) beside {', '.join(where + n for n in names)}: "
                      "expected only those")  # fmt: skip
    return value


def _integer(path: Path, where: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(path, f"{CONFIG}: {where} must be an integer from {lo} to {hi}, got {_json_kind(value)}")
    if not lo <= value <= hi:
        given = str(value) if abs(value) < 10**18 else "a number beyond that"
        _refuse(path, f"{CONFIG}: {where} must be an integer from {lo} to {hi}, got {given}")
    return value


def _json_kind(value: Any) -> str:
    """What JSON value ``value`` is, in words, never its content."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
             float: "a fractional number", type(None): "null"}  # fmt: skip
    return kinds.get(type(value), type(value).__name__)


@lru_cache(maxsize=8)
def _layout_cached(role: Role, network: Network) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(_shapes(build_network(role, network)).items())


def _layout(role: Role, network: Network) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape in the network of these settings."""
    return dict(_layout_cached(role, network))


def _shapes(policy: SlotPolicy) -> dict[str, tuple[int, ...]]:
    assert not list(policy.buffers()), "the slot network holds parameters only"
    return {name: tuple(p.shape) for name, p in policy.named_parameters()}


def _read_arrays(
    path: Path, member: str, raw: bytes, shapes: Mapping[str, tuple[int, ...]], expected: str
) -> dict[str, np.ndarray]:
    """The float32 arrays of the ``.npz`` ``member``: exactly ``shapes``, each finite."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            wanted = {f"{key}.npy": key for key in shapes}
            if len(set(names)) != len(names):
                _refuse(path, f"{member}: an array name appears twice: expected {expected}, each once")
            missing = sorted(set(wanted) - set(names))
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                _refuse(path, f"{member} lacks the array {wanted[missing[0]]}{more}: expected {expected}")
            if len(names) != len(wanted):
                _refuse(path, f"{member} holds {len(names) - len(wanted)} array(s) too many: expected {expected}")
            arrays = {}
            for info in infos:
                key = wanted[info.filename]
                label = f"{member}: {key}"
                limit = _NPY_HEADER_BYTES + _FLOAT32.itemsize * math.prod(shapes[key])
                arrays[key] = _parse_npy(path, label, _read_member(path, archive, info, label, limit), shapes[key])
            return arrays
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, RuntimeError) as exc:
        _refuse(path, f"{member} cannot be read as an .npz archive ({exc.__class__.__name__}): expected {expected}")


def _parse_npy(path: Path, label: str, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """One ``.npy`` array, its header checked before any data is read: little-endian float32 of
    ``shape``, finite. An object array (pickled Python objects) is refused by its header alone."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            _refuse(path, f"{label} is an .npy array of format {version[0]}.{version[1]}: expected 1.0 or 2.0")
        given_shape, fortran, dtype = read_header[version](stream)
    except PolicyError:
        raise
    except Exception as exc:  # untrusted bytes: whatever fails to parse is refused
        _refuse(path, f"{label} is not an .npy array ({exc.__class__.__name__}): expected float32 of shape {shape}")
    if dtype.hasobject:
        _refuse(path, f"{label} holds Python objects (pickled): expected float32 numbers")
    if dtype != _FLOAT32:
        _refuse(path, f"{label} has dtype {_dtype_kind(dtype)}: expected float32 (little-endian)")
    if given_shape != shape:
        given = str(given_shape) if len(str(given_shape)) <= 60 else f"a shape of {len(given_shape)} dimensions"
        _refuse(path, f"{label} has shape {given}: expected {shape}")
    offset, nbytes = stream.tell(), _FLOAT32.itemsize * math.prod(shape)
    if len(data) - offset != nbytes:
        _refuse(path, f"{label} holds {len(data) - offset} bytes of numbers: expected {nbytes}")
    flat = np.frombuffer(data, dtype=_FLOAT32, count=math.prod(shape), offset=offset)
    array = np.array(flat.reshape(shape, order="F" if fortran else "C"), dtype=np.float32, order="C")
    if not np.isfinite(array).all():
        _refuse(path, f"{label} holds NaN or infinite values: expected finite numbers")
    return array


def _dtype_kind(dtype: np.dtype) -> str:
    """A dtype in words made from its kind and size only (a structured dtype's field names are the
    file's text)."""
    if dtype.names is not None or dtype.subdtype is not None:
        return "a structured dtype"
    return dtype.name + (" big-endian" if dtype.byteorder == ">" else "")


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` (numpy's own layout) of little-endian float32 arrays, with fixed timestamps."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(value, dtype=_FLOAT32), allow_pickle=False)
            archive.writestr(_zip_info(f"{name}.npy", zipfile.ZIP_STORED), npy.getvalue())
    return buffer.getvalue()


def _zip_info(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def _put_weights(policy: SlotPolicy, weights: Mapping[str, np.ndarray]) -> None:
    with torch.no_grad():
        for name, param in policy.named_parameters():
            param.copy_(torch.from_numpy(weights[name]))


def _adam_state(policy: SlotPolicy) -> AdamState:
    """The Adam state of ``policy``'s optimizer, by parameter name.

    Raises:
        ValueError: the optimizer is not plain Adam, or its parameters took different step counts.
    """
    optimizer = policy.optimizer
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1 or optimizer.defaults["amsgrad"]:
        raise ValueError("a saved agent holds the state of a plain Adam optimizer (one group, no amsgrad) only")
    named = list(policy.named_parameters())
    states = [optimizer.state.get(param, {}) for _, param in named]
    if not any(states):
        return AdamState()
    steps = {float(s["step"]) for s in states if s}
    if not all(states) or len(steps) != 1:
        raise ValueError("expected every parameter to have taken the same number of Adam steps")
    return AdamState(
        int(steps.pop()),
        {name: s["exp_avg"].detach().cpu().numpy() for (name, _), s in zip(named, states, strict=True)},
        {name: s["exp_avg_sq"].detach().cpu().numpy() for (name, _), s in zip(named, states, strict=True)},
    )
