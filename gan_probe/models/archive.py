"""Bounded reading of zip archives (torch.save, TorchScript and torch.export files) and of the JSON inside.

A zip member may declare, or inflate to, far more bytes than the file holds (a
1 MB file can inflate to 1 GB), and JSON may nest deep enough to exhaust
Python's stack. So, before anything is decompressed:

- :func:`check_inflation`: the members of an archive that torch will read
  (``torch.load``, ``torch.jit.load``, ``torch.export.load``) may grow by at
  most :data:`INFLATION_BUDGET` bytes in all when inflated (declared size minus
  stored size: torch writes its members uncompressed, so a real checkpoint
  grows by nothing, however large). Torch's reader inflates a member into a
  buffer of the declared size, so the declared sizes bound what it allocates.
  Archives with two members of one name are refused (two readers could pick
  different ones).
- :func:`read_member`: a member gan-probe parses itself is read in chunks and
  refused past :data:`MEMBER_LIMIT` bytes, whatever its header declares, and
  refused when its header's size is not what it inflates to.
- :func:`parse_json`: JSON nested deeper than :data:`JSON_DEPTH_LIMIT` is
  refused before ``json.loads`` sees it; the message names the member.

The limits are module constants, set far above what a real file needs (a
torch.export ``model.json`` of a small generator is tens of kB and nests about
ten deep); the tests lower them.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from gan_probe.errors import CheckpointError, first_line

#: Bytes one member gan-probe parses itself (JSON, TorchScript source, a small pickle) may hold.
MEMBER_LIMIT = 256 << 20
#: Bytes by which the members of an archive read by torch may grow in all when inflated.
INFLATION_BUDGET = 1 << 30
#: Nesting depth of JSON (arrays and objects) gan-probe parses.
JSON_DEPTH_LIMIT = 128
_CHUNK = 1 << 20
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def check_inflation(file: Path, zf: zipfile.ZipFile) -> None:
    """Refuse an archive whose members would inflate by more than :data:`INFLATION_BUDGET` bytes, or that holds
    two members of one name."""
    infos = zf.infolist()
    twice = [name for name, count in Counter(i.filename for i in infos).items() if count > 1]
    if twice:
        raise CheckpointError(f"{file} was refused: it holds two members named {twice[0]!r}")
    growth = sum(max(0, i.file_size - i.compress_size) for i in infos)
    if growth > INFLATION_BUDGET:
        biggest = max(infos, key=lambda i: i.file_size - i.compress_size)
        raise CheckpointError(
            f"{file} was refused: its members inflate by {growth:,} bytes in all (member {biggest.filename!r}: "
            f"{biggest.compress_size:,} bytes stored, {biggest.file_size:,} declared), more than the "
            f"{INFLATION_BUDGET:,} allowed; a checkpoint written by torch is stored uncompressed"
        )


def read_member(file: Path, zf: zipfile.ZipFile, name: str, limit: int | None = None) -> bytes:
    """Member ``name`` of ``zf`` (the archive ``file``), read in chunks and refused past ``limit`` bytes
    (:data:`MEMBER_LIMIT` by default) or when it does not inflate to the size its header declares."""
    limit = MEMBER_LIMIT if limit is None else limit
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise CheckpointError(
            f"{file} was refused: member {name!r} declares {info.file_size:,} bytes, more than the {limit:,} "
            "gan-probe reads"
        )
    parts: list[bytes] = []
    size = 0
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise CheckpointError(
                        f"{file} was refused: member {name!r} inflates past {limit:,} bytes (its header says "
                        f"{info.file_size:,})"
                    )
                parts.append(chunk)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - BadZipFile (bad CRC), EOFError, zlib.error: a damaged member
        raise CheckpointError(f"{file}: member {name!r} is corrupt ({first_line(exc)})") from None
    if size != info.file_size:
        raise CheckpointError(
            f"{file} was refused: member {name!r} inflates to {size:,} bytes, its header says {info.file_size:,}"
        )
    return b"".join(parts)


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b'""', data)):
        if bracket in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(data: bytes, file: Path, member: str) -> Any:
    """JSON text of ``member`` parsed, refused (naming the member) when malformed or nested deeper than
    :data:`JSON_DEPTH_LIMIT`."""
    depth = json_depth(data)
    if depth > JSON_DEPTH_LIMIT:
        raise CheckpointError(
            f"{file} was refused: {member} nests {depth} levels deep, more than the {JSON_DEPTH_LIMIT} gan-probe parses"
        )
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{file}: {member} is not valid JSON ({first_line(exc)})") from None


def field(obj: Any, key: str, kind: type | tuple[type, ...], file: Path, where: str, default: Any = None) -> Any:
    """``obj[key]`` checked to be of type ``kind`` (``default`` when absent); ``obj`` must be a dict. The error
    names the field as ``where.key``."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{file} was refused: {where} is {_json_type(obj)}, not an object")
    value = obj.get(key, default)
    if value is default and key not in obj:
        return value
    kinds = _tuple(kind)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)
        raise CheckpointError(f"{file} was refused: {where}.{key} is {_json_type(value)}, not {names}")
    return value


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer"}


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number"}.get(
        type(value), "a number" if isinstance(value, float) else type(value).__name__
    )


__all__ = [
    "INFLATION_BUDGET",
    "JSON_DEPTH_LIMIT",
    "MEMBER_LIMIT",
    "check_inflation",
    "field",
    "json_depth",
    "parse_json",
    "read_member",
]
