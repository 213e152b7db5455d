"""Finding the generator's weights inside the checkpoint files training scripts write.

A training script rarely saves the generator's bare state dict. It saves a dict
holding the generator and the discriminator, their optimizers, an EMA copy, the
script's arguments and counters; wrappers add prefixes to the weight names. This
module reads such a file without running code and picks the generator's state
dict by rule, recording which entry it used:

- a bare state dict (the PyTorch-examples ``netG_epoch_N.pth``): the whole file;
- sub-dicts named for the generator (``netG``, ``generator``, ``G``, ``g``,
  ``gen``, ...), and EMA copies (``g_ema``, ``G_ema``, ``ema``, ``GE``, ...),
  which are preferred when both exist (rosinality's ``train.py`` saves ``g``,
  ``d`` and ``g_ema``: ``g_ema`` is taken);
- one flat state dict holding several modules under prefixes (a PyTorch
  Lightning ``state_dict`` with ``generator.`` beside ``discriminator.``;
  lucidrains' ``{'GAN': {G.*, GE.*, D.*}}``): the generator's prefix;
- wrapper prefixes on every key: DataParallel/DDP's ``module.`` and
  ``torch.compile``'s ``_orig_mod.`` are dropped.

A ``key`` ("a.b.c") selects explicitly: each part names a nested entry, and what
is left after the last dict is a key prefix inside a flat state dict
(``GAN.GE`` is the entry ``GAN``, then the keys ``GE.*``). Selection by rule then
continues inside what the key names. When nothing fits, the error lists the
file's top-level keys and every candidate sub-dict with its number of tensors.

Files are read with ``torch.load(weights_only=True)``: only tensors and plain
containers are unpickled, never code. The plain-data classes training scripts
store beside the weights are allowed by name (:data:`ALLOWED_GLOBALS`, only
``argparse.Namespace``), inside :func:`torch.serialization.safe_globals` so the
allowance does not outlive the call.

The values found next to the chosen state dict (rosinality's ``latent_avg``,
the ``args`` Namespace as a dict, Lightning's ``hyper_parameters``, counters)
come back in :attr:`Container.extras` for an architecture to use.
"""

from __future__ import annotations

import argparse
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gan_probe.errors import CheckpointError, first_line
from gan_probe.models.archive import check_inflation

#: Classes a checkpoint may hold besides tensors and plain containers: plain data, no behaviour on unpickling
#: (an argparse.Namespace is rebuilt as an empty object whose __dict__ is then filled with plain values).
ALLOWED_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

#: Names of an EMA copy of the generator, in order of preference.
EMA_NAMES = (
    "g_ema",
    "G_ema",
    "generator_ema",
    "ema_generator",
    "netG_ema",
    "gen_ema",
    "G_ema_state_dict",
    "GE",
    "ema",
    "model_ema",
    "state_dict_ema",
)
#: Names of the generator itself, in order of preference.
GENERATOR_NAMES = (
    "generator",
    "netG",
    "G",
    "g",
    "gen",
    "net_G",
    "netg",
    "generator_state_dict",
    "netG_state_dict",
    "G_state_dict",
    "gen_state_dict",
    "g_state_dict",
    "model_G",
)
#: Names of containers that hold one model's weights without saying which.
GENERIC_NAMES = ("state_dict", "model_state_dict", "model", "module", "net", "weights", "params")
#: Names never taken: the discriminator and training state.
DISCRIMINATOR_NAMES = (
    "discriminator",
    "netD",
    "D",
    "d",
    "disc",
    "critic",
    "net_D",
    "netd",
    "D_aug",
    "D_cl",
    "discriminator_state_dict",
    "netD_state_dict",
    "D_state_dict",
    "disc_state_dict",
    "d_state_dict",
)
_TRAINING_WORDS = ("optim", "scheduler", "scaler", "sched", "opt_")
#: Prefixes wrappers add to every key: DataParallel/DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Entries whose dict holds the training script's arguments, in order of preference.
ARGS_NAMES = ("args", "opt", "options", "config", "cfg", "hparams", "hyper_parameters")

_MAX_DEPTH = 4

# roles, best first
_EMA, _GENERATOR, _GENERIC, _UNKNOWN, _EXCLUDED = 4, 3, 2, 1, 0


@dataclass
class Container:
    """The generator's weights as found in a checkpoint file.

    ``state``: the state dict, prefixes stripped. ``key``: the entry used, in
    the syntax of ``--key`` (None: the whole file). ``extras``: the non-weight
    values stored next to that entry, tensors kept as tensors, an
    ``argparse.Namespace`` turned into a dict of its plain values, other
    unpicklable leftovers dropped. ``stripped``: wrapper prefixes removed.
    """

    state: dict[str, torch.Tensor]
    key: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    stripped: tuple[str, ...] = ()

    @property
    def args(self) -> dict[str, Any]:
        """The training script's arguments (an ``args``/``opt`` Namespace, Lightning's ``hyper_parameters``,
        ...) as a dict of plain values; {} when the file has none."""
        for name in ARGS_NAMES:
            value = self.extras.get(name)
            if isinstance(value, dict):
                return value
        return {}

    def tensor(self, name: str) -> torch.Tensor | None:
        """A tensor stored beside the weights (e.g. ``latent_avg``), or None."""
        value = self.extras.get(name)
        return value if isinstance(value, torch.Tensor) else None

    @property
    def latent_avg(self) -> torch.Tensor | None:
        """rosinality's running mean of w (``latent_avg`` in train.py and convert_weight.py files), or None."""
        return self.tensor("latent_avg")


@dataclass
class _Candidate:
    path: tuple[str, ...]  # entries from the root; the last may be a key prefix ("generator" of generator.*)
    state: dict[str, torch.Tensor]
    role: int
    holder: Mapping[str, Any] | None  # the dict holding the entry: its other values are the extras
    entry: str | None  # the entry's name in ``holder``
    rank: int = 0  # position of the name in its list of names (lower is better)

    @property
    def key(self) -> str:
        return ".".join(self.path)


def read_container(file: Path, key: str | None = None) -> Container:
    """Read a PyTorch file (weights only) and pick the generator's state dict, by ``key`` or by rule."""
    obj = load_weights_only(file)
    return find_generator_state(obj, key=key, where=file.name)


def load_weights_only(file: Path) -> Any:
    """``torch.load(file, weights_only=True)`` with :data:`ALLOWED_GLOBALS` allowed for this call only.

    A pickled object of any other class is refused with a message naming it; nothing in the file runs. A zip
    archive whose members would inflate past the budget of :func:`~gan_probe.models.archive.check_inflation` is
    refused before torch reads it.
    """
    try:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as zf:
                check_inflation(file, zf)
    except (OSError, zipfile.BadZipFile):
        pass  # not a readable zip after all: torch.load says what is wrong with it
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprits = _unsafe_globals(file)
        what = ", ".join(culprits) if culprits else first_line(exc)
        raise CheckpointError(
            f"{file} was refused: it holds pickled objects other than tensors ({what}); gan-probe reads PyTorch "
            "files with weights_only=True and never runs code from a checkpoint (allowed besides tensors: "
            f"{', '.join(_qualname(c) for c in ALLOWED_GLOBALS)}). Save the generator's state_dict(), or a "
            "TorchScript or torch.export program, instead"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{file} is not a readable PyTorch file (truncated or corrupt): {_why(file, exc)}"
        ) from None


#: The first bytes of a zip archive (PyTorch files since torch 1.6, TorchScript archives)
ZIP_MAGIC = b"PK\x03\x04"


def _why(file: Path, exc: BaseException) -> str:
    """What is wrong with a file torch could not read: for a zip archive that has lost its end (torch then says
    only "[Errno 22] Invalid argument", from a seek before the start), that; else torch's first line."""
    try:
        with file.open("rb") as fh:
            cut_zip = fh.read(4) == ZIP_MAGIC and not zipfile.is_zipfile(file)
    except OSError:
        cut_zip = False
    if cut_zip:
        return "a zip archive without its central directory (the end of the file is missing)"
    return first_line(exc)


def _unsafe_globals(file: Path) -> list[str]:
    """The classes and functions a pickle in ``file`` refers to beyond what weights_only allows (read, not run)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(file)
    except Exception:  # noqa: BLE001 - only for the message
        return []
    allowed = {_qualname(c) for c in ALLOWED_GLOBALS}
    return [n for n in names if n not in allowed]


def _qualname(obj: type) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of str names to tensors."""
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def strip_wrappers(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Drop ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) while every key has one."""
    out, stripped = dict(state), []
    while out:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in out)), None)
        if prefix is None:
            break
        out = {k[len(prefix) :]: v for k, v in out.items()}
        stripped.append(prefix)
    return out, tuple(stripped)


def find_generator_state(obj: Any, *, key: str | None = None, where: str = "the checkpoint") -> Container:
    """The generator's state dict in a loaded checkpoint object (see the module docstring for the rules)."""
    base: tuple[str, ...] = ()
    holder: Mapping[str, Any] | None = None
    entry: str | None = None
    node = obj
    if key is not None:
        node, base, holder, entry = _resolve_key(obj, key, where)
    if not isinstance(node, Mapping):
        raise CheckpointError(
            f"{where} does not hold a state dict (a mapping of names to tensors) but {type(node).__name__}"
        )
    candidates = _candidates(node, base, holder, entry)
    chosen = _choose(candidates, obj, where, key)
    state, stripped = strip_wrappers(chosen.state)
    return Container(
        state=state, key=chosen.key or None, extras=_extras(chosen.holder, chosen.entry), stripped=stripped
    )


def _resolve_key(obj: Any, key: str, where: str) -> tuple[Any, tuple[str, ...], Mapping[str, Any] | None, str | None]:
    """Follow ``key`` from the root: (the node it names, its path, the dict holding it, its name there).

    For a key prefix inside a flat state dict, the holder is the dict holding that flat state dict."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise CheckpointError(f"key {key!r} is not a dotted path such as GAN.GE", param="key")
    node: Any = obj
    path: list[str] = []
    parent: Mapping[str, Any] | None = None
    i = 0
    while i < len(parts):
        if not isinstance(node, Mapping):
            raise CheckpointError(
                f"{where}: key {key!r}: {'.'.join(path) or 'the file'} is a {type(node).__name__}, not a dict",
                param="key",
            )
        name = next(
            (".".join(parts[i:j]) for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in node),
            None,
        )
        if name is not None and isinstance(node[name], Mapping):
            parent, node = node, node[name]
            path.append(name)
            i += len(name.split("."))
            continue
        prefix = ".".join(parts[i:])
        sub = {
            k[len(prefix) + 1 :]: v
            for k, v in node.items()
            if isinstance(k, str) and k.startswith(prefix + ".") and isinstance(v, torch.Tensor)
        }
        if sub:
            return sub, (*path, prefix), parent, path[-1] if path else None
        if name is not None:
            raise CheckpointError(
                f"{where}: key {key!r} names a {type(node[name]).__name__}, not a state dict", param="key"
            )
        raise CheckpointError(
            f"{where}: key {key!r}: no entry or key prefix {prefix!r} in {'.'.join(path) or 'the file'}; "
            f"{_listing(obj)}",
            param="key",
        )
    return node, tuple(path), parent, path[-1] if path else None


def _role(name: str) -> tuple[int, int]:
    """(role, rank) of an entry or prefix name."""
    for names, role in ((EMA_NAMES, _EMA), (GENERATOR_NAMES, _GENERATOR), (DISCRIMINATOR_NAMES, _EXCLUDED)):
        if name in names:
            return role, names.index(name)
    lowered = name.lower()
    if any(w in lowered for w in _TRAINING_WORDS):
        return _EXCLUDED, 0
    if name in GENERIC_NAMES:
        return _GENERIC, GENERIC_NAMES.index(name)
    return _UNKNOWN, 0


def _groups(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]] | None:
    """Split a flat state dict by its first key segment when it holds several models (a generator beside a
    discriminator or an EMA copy) or only a generator under its own prefix; None when it is one model."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        head, dot, rest = k.partition(".")
        if not dot:
            return None
        groups.setdefault(head, {})[rest] = v
    roles = {head: _role(head)[0] for head in groups}
    named = [h for h, r in roles.items() if r in (_EMA, _GENERATOR)]
    if not named:
        return None
    others = [h for h in groups if h not in named]
    if others and not any(roles[h] == _EXCLUDED for h in others):
        return None  # generator-like names beside unknown ones: a single model's own submodules
    return groups


def _candidates(
    node: Mapping[str, Any], base: tuple[str, ...], holder: Mapping[str, Any] | None, entry: str | None
) -> list[_Candidate]:
    """Every state dict under ``node`` (itself included), split by prefix where it holds several models."""
    out: list[_Candidate] = []

    def visit(value: Any, path: tuple[str, ...], held: Mapping[str, Any] | None, name: str | None, depth: int) -> None:
        role, rank = _role(path[-1]) if len(path) > len(base) else (_GENERIC, 0)
        if role == _EXCLUDED:
            return
        if is_state_dict(value):
            stripped, _ = strip_wrappers(value)
            groups = _groups(stripped)
            if groups is None:
                out.append(_Candidate(path, dict(value), role, held, name, rank))
            else:
                for head, sub in groups.items():
                    sub_role, sub_rank = _role(head)
                    if sub_role != _EXCLUDED:
                        out.append(_Candidate((*path, head), sub, sub_role, held, name, sub_rank))
            return
        if isinstance(value, Mapping) and depth < _MAX_DEPTH and all(isinstance(k, str) for k in value):
            for k, v in value.items():
                if isinstance(v, Mapping):
                    visit(v, (*path, k), value, k, depth + 1)

    visit(node, base, holder, entry, 0)
    return out


def _choose(candidates: list[_Candidate], root: Any, where: str, key: str | None) -> _Candidate:
    if not candidates:
        raise CheckpointError(
            f"{where} does not hold a generator state dict (a mapping of names to tensors); "
            f"{_listing(root)}; pass --key to select one"
        )
    best = max(c.role for c in candidates)
    top = [c for c in candidates if c.role == best]
    if best in (_EMA, _GENERATOR):
        top.sort(key=lambda c: (c.rank, len(c.path)))
        if len(top) == 1 or (top[0].rank, len(top[0].path)) != (top[1].rank, len(top[1].path)):
            return top[0]
    elif len(candidates) == 1:
        return candidates[0]
    elif best == _GENERIC:
        top.sort(key=lambda c: (c.rank, len(c.path)))
        if len(top) == 1:
            return top[0]
    names = ", ".join(f"{c.key or '(the whole file)'} ({len(c.state)} tensors)" for c in candidates)
    raise CheckpointError(
        f"{where}: cannot tell which entry holds the generator: candidates {names}; "
        f"{_listing(root, candidates=False)}; pass --key with one of them" + (f" (inside {key!r})" if key else "")
    )


def _listing(root: Any, *, candidates: bool = True) -> str:
    """'top-level keys: a (dict), b (str); candidate sub-dicts: a.x (12 tensors), ...' for error messages."""
    if not isinstance(root, Mapping):
        return f"the file holds a {type(root).__name__}"
    keys = ", ".join(f"{k} ({_kind(v)})" for k, v in list(root.items())[:20])
    more = f", ... ({len(root)} in all)" if len(root) > 20 else ""
    text = f"top-level keys: {keys}{more}" if root else "the file holds an empty dict"
    if candidates:
        found = _all_state_dicts(root)
        text += "; candidate sub-dicts: " + (
            ", ".join(f"{p or '(the whole file)'} ({n} tensors)" for p, n in found[:20]) if found else "none"
        )
    return text


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)}"
    if is_state_dict(value):
        return f"state dict, {len(value)} tensors"
    if isinstance(value, Mapping):
        return f"dict, {len(value)} entries"
    return type(value).__name__


def _all_state_dicts(root: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(path, number of tensors) of every state dict and prefix group in ``root``, discriminators included."""
    out: list[tuple[str, int]] = []

    def visit(value: Any, path: tuple[str, ...], depth: int) -> None:
        if is_state_dict(value):
            stripped, _ = strip_wrappers(value)
            heads: dict[str, int] = {}
            for k in stripped:
                head, dot, _ = k.partition(".")
                heads[head if dot else ""] = heads.get(head if dot else "", 0) + 1
            out.append((".".join(path), len(value)))
            if len(heads) > 1 and "" not in heads:
                out.extend((".".join((*path, h)), n) for h, n in heads.items())
            return
        if isinstance(value, Mapping) and depth < _MAX_DEPTH and all(isinstance(k, str) for k in value):
            for k, v in value.items():
                if isinstance(v, Mapping):
                    visit(v, (*path, k), depth + 1)

    visit(root, (), 0)
    return out


def _extras(holder: Mapping[str, Any] | None, entry: str | None) -> dict[str, Any]:
    """The plain values beside the chosen entry: tensors, numbers, strings, Namespaces and dicts of them."""
    if holder is None:
        return {}
    out: dict[str, Any] = {}
    for name, value in holder.items():
        if not isinstance(name, str) or name == entry or is_state_dict(value):
            continue
        if isinstance(value, torch.Tensor):
            out[name] = value
            continue
        plain = _plain(value)
        if plain is not _DROP:
            out[name] = plain
    return out


_DROP = object()


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON-like data (Namespace -> dict), or _DROP when it holds tensors or other objects."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if depth > 4:
        return _DROP
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            p = _plain(v, depth + 1)
            if not isinstance(k, (str, int)) or p is _DROP:
                return _DROP
            out[str(k)] = p
        return out
    if isinstance(value, (list, tuple)):
        items = [_plain(v, depth + 1) for v in value]
        return _DROP if any(p is _DROP for p in items) else items
    return _DROP


__all__ = [
    "ALLOWED_GLOBALS",
    "Container",
    "find_generator_state",
    "is_state_dict",
    "load_weights_only",
    "read_container",
    "strip_wrappers",
]
