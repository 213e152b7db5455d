"""Reading NVIDIA's StyleGAN pickles without running anything they contain.

What the files hold. stylegan2-ada-pytorch and stylegan3 save a training
snapshot as ``pickle.dump(dict(G=..., D=..., G_ema=..., augment_pipe=...,
training_set_kwargs=...))``. Each network there is a *persistent* object: it
pickles as the call ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
with ``meta`` a dict of ``type`` (``'class'``), ``version``, ``module_src`` (the
whole source of the Python module that defined the class), ``class_name`` and
``state`` (the module's ``__dict__``: ``_parameters``, ``_buffers``,
``_modules``, plain attributes, and the constructor's ``_init_args`` and
``_init_kwargs``). NVIDIA's own loader executes ``module_src``. Tensors arrive as
``torch._utils._rebuild_tensor_v2`` (and ``_rebuild_parameter``) of a storage
that ``torch.storage._load_from_bytes`` reads with ``torch.load(weights_only=False)``;
numbers computed with numpy (gains, StyleGAN3's sampling rates) as numpy scalars
and arrays. The TensorFlow-era files (StyleGAN2, StyleGAN2-ADA) are a tuple
``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` objects whose state holds
``static_kwargs``, ``components`` (sub-networks), the build function's source and
``variables``, a list of (name, numpy array) pairs.

How they are read here. :class:`_RestrictedUnpickler` resolves a global only if
its exact (module, name) is in :data:`ALLOWED_GLOBALS`, and then to gan-probe's
own function, never to the named one: the persistence reconstructor builds a
plain record and drops ``module_src`` unread; ``EasyDict`` becomes a dict; a
storage's bytes go through :func:`torch.load` with ``weights_only=True``, after
the sizes its header declares are checked against the bytes present; tensors are
rebuilt only inside their storage; numpy arrays and scalars only of numeric
dtypes, from bytes of the right length; ``Network`` becomes a stub that stores
its state. Any other global is refused with its name, before anything is called.

Limits (:class:`PickleLimits`): the file's size; the depth of the structure the
pickle builds (the pickle machine nests without recursion, so a crafted file can
nest lists 100,000 deep; every walk here counts levels and stops with an error);
the number of objects built through allowed globals; the storage bytes declared
in all, at most the file's size (a storage cannot hold more bytes than the file
has, and a shared byte string counts each time it is loaded).

The class's module. The pickle stores the class's name and its module's source,
not the module's name. For generators the module is read from the structure:
``synthesis.input`` of class ``SynthesisInput`` is stylegan3's
``training.networks_stylegan3``; ``SynthesisBlock``\\ s are StyleGAN2, from the
stylegan3 repository's ``training.networks_stylegan2`` when the blocks store
``fused_modconv_default`` (an attribute only that version has; its defaults
differ: ``num_fp16_res`` 4 and ``conv_clamp`` 256), else stylegan2-ada-pytorch's
``training.networks``. Other classes keep the bare name the pickle stores.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import pickle
import struct
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch

from gan_probe.errors import CheckpointError
from gan_probe.models.nvidia.records import (
    STYLEGAN2_ADA_GENERATOR,
    STYLEGAN2_GENERATOR,
    STYLEGAN3_GENERATOR,
    SUPPORTED_GENERATORS,
    NetworkRecord,
    TensorFlowNetwork,
)

#: Entries taken, in this order, when no key is given.
GENERATOR_ENTRIES = ("G_ema", "G")
#: The entry of a pickle that holds one network, not a dict of them.
WHOLE_FILE = ""
#: The ASCII names whose presence near a pickle's start marks NVIDIA's formats (see :func:`looks_like_nvidia_pickle`).
_SIGNATURES = (b"torch_utils.persistence", b"dnnlib.tflib.network")

#: Storage classes of torch's legacy serialization (the layout of a pickled storage), with their element sizes.
_STORAGE_ITEMSIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
}
#: numpy dtype kinds an array or scalar may have: booleans and numbers.
_NUMPY_KINDS = "biufc"


@dataclass(frozen=True)
class PickleLimits:
    """Bounds that hold while a pickle is read (a crafted file cannot exhaust memory or recursion)."""

    #: the largest file read (bytes); NVIDIA's 1024 px snapshots are about 360 MB
    max_file_bytes: int = 4 << 30
    #: the deepest nesting of containers and modules
    max_depth: int = 100
    #: the most objects built through allowed globals (tensors, storages, records, arrays)
    max_objects: int = 1_000_000


# ---------------------------------------------------------------------------------------------------------------
# What the restricted unpickler builds in place of NVIDIA's and numpy's objects


class _PersistentObject:
    """``_reconstruct_persistent_obj(meta)`` as data: the class's name and the module's state, no source."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name = class_name
        self.state = state

    def __setstate__(self, state: object) -> None:
        raise CheckpointError("a persistent object is given a state twice, which NVIDIA's pickles never do")


class _EasyDict(dict):
    """``dnnlib.EasyDict`` (a dict with attribute access) as the dict it is; pickled as a dict subclass."""

    def __setstate__(self, state: object) -> None:
        if state:  # an EasyDict keeps everything in its items; a __dict__ state is foreign to it
            raise CheckpointError("an EasyDict carries attributes besides its items, which NVIDIA's never do")


class _TensorFlowNetworkStub:
    """``dnnlib.tflib.network.Network`` in place: its state is stored, nothing is built or executed."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        if getattr(self, "state", None) is not None:  # made by NEWOBJ (__new__ only): the slot may be unset
            raise CheckpointError("a TensorFlow network is given a state twice")
        self.state = state


class _NumpyDtype:
    """``numpy.dtype(spec, align, copy)`` then its ``__setstate__``: only plain numeric dtypes."""

    __slots__ = ("dtype",)

    def __init__(self, spec: object, align: object = False, copy: object = False) -> None:
        if not isinstance(spec, str):
            raise CheckpointError(f"a numpy dtype is given as {type(spec).__name__}, not as a type code")
        try:
            dtype = np.dtype(spec)
        except TypeError as exc:
            raise CheckpointError(f"the numpy dtype {spec!r} is not one numpy knows") from exc
        if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise CheckpointError(
                f"the numpy dtype {spec!r} is not a plain numeric type, which gan-probe does not load"
            )
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        # numpy's state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5 or any(x is not None for x in state[2:5]):
            raise CheckpointError("a numpy dtype's state is not that of a plain numeric type")
        order = state[1]
        if order not in ("<", ">", "=", "|"):
            raise CheckpointError(f"a numpy dtype has the byte order {order!r}")
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


class _NdarrayClass:
    """Stands for ``numpy.ndarray``, which a pickled array names as the class to reconstruct."""


class _NumpyArray:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` then ``__setstate__``: held until checked."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: tuple | None = None

    def __setstate__(self, state: object) -> None:
        # (version, shape, dtype, is_fortran, raw bytes), or the same without the version
        if not isinstance(state, tuple) or len(state) not in (4, 5) or self.state is not None:
            raise CheckpointError("a numpy array's state is not the one numpy writes")
        self.state = state[-4:]

    def to_numpy(self) -> np.ndarray:
        if self.state is None:
            raise CheckpointError("a numpy array has no state")
        shape, dtype, fortran, raw = self.state
        if not isinstance(dtype, _NumpyDtype):
            raise CheckpointError("a numpy array has no plain numeric dtype")
        if not isinstance(shape, tuple) or not all(_is_count(n) for n in shape):
            raise CheckpointError(f"a numpy array has the shape {shape!r}")
        if not isinstance(raw, bytes | bytearray):
            raise CheckpointError("a numpy array holds Python objects, not numbers")
        expected = math.prod(shape) * dtype.dtype.itemsize
        if len(raw) != expected:
            raise CheckpointError(f"a numpy array of shape {shape} holds {len(raw)} bytes, not {expected}")
        array = np.frombuffer(raw, dtype=dtype.dtype)
        return array.reshape(shape, order="F" if fortran else "C").copy()


def _is_count(n: object) -> TypeGuard[int]:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


# ---------------------------------------------------------------------------------------------------------------
# The unpickler


#: The globals a pickle may name, by exact (module, name); each is resolved to the method of
#: :class:`_RestrictedUnpickler` (or the plain type) given here. numpy 2 moved ``numpy.core`` to ``numpy._core``.
ALLOWED_GLOBALS: dict[tuple[str, str], str] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): "_reconstruct_persistent",
    ("dnnlib", "EasyDict"): "_easy_dict",
    ("dnnlib.util", "EasyDict"): "_easy_dict",
    ("dnnlib.tflib.network", "Network"): "_tensorflow_network",
    ("collections", "OrderedDict"): "_ordered_dict",
    ("builtins", "set"): "_set",  # how pickle protocols 2 and 3 (Python 3.7's default) write a set
    ("torch._utils", "_rebuild_tensor_v2"): "_rebuild_tensor",
    ("torch._utils", "_rebuild_parameter"): "_rebuild_parameter",
    ("torch._utils", "_rebuild_parameter_with_state"): "_rebuild_parameter_with_state",
    ("torch.storage", "_load_from_bytes"): "_load_storage",
    ("numpy", "dtype"): "_numpy_dtype",
    ("numpy", "ndarray"): "_ndarray_class",
    ("numpy.core.multiarray", "_reconstruct"): "_numpy_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_numpy_reconstruct",
    ("numpy.core.multiarray", "scalar"): "_numpy_scalar",
    ("numpy._core.multiarray", "scalar"): "_numpy_scalar",
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED_GLOBALS`, each to a function here; counts what it builds and the storage bytes."""

    def __init__(self, file: mmap.mmap, *, file_bytes: int, limits: PickleLimits, source: str) -> None:
        super().__init__(file)
        self._file_bytes = file_bytes
        self._limits = limits
        self._source = source
        self._objects = 0
        self._storage_bytes = 0

    def find_class(self, module: str, name: str) -> Any:
        attribute = ALLOWED_GLOBALS.get((module, name))
        if attribute is None:
            raise CheckpointError(
                f"{self._source}: the pickle refers to the global {module}.{name}, which gan-probe does not load; "
                "it reads tensors and NVIDIA's network records only"
            )
        return getattr(self, attribute)

    def persistent_load(self, pid: object) -> Any:
        raise CheckpointError(f"{self._source}: the pickle refers to an external object, which NVIDIA's never do")

    def _count(self) -> None:
        self._objects += 1
        if self._objects > self._limits.max_objects:
            raise CheckpointError(
                f"{self._source}: the pickle builds more than {self._limits.max_objects:,} objects, "
                "the limit of the reader (PickleLimits.max_objects)"
            )

    # NVIDIA's records ---------------------------------------------------------------------------------------

    def _reconstruct_persistent(self, meta: object) -> _PersistentObject:
        self._count()
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise CheckpointError(f"{self._source}: a persistent object's record is not that of a class")
        class_name, state = meta.get("class_name"), meta.get("state")
        if not isinstance(class_name, str) or not class_name.isidentifier():
            raise CheckpointError(f"{self._source}: a persistent object has the class name {class_name!r}")
        if not isinstance(state, dict):
            raise CheckpointError(f"{self._source}: the persistent object {class_name} has no state dict")
        return _PersistentObject(class_name, state)  # meta["module_src"] is dropped unread

    @property
    def _easy_dict(self) -> type:
        return _EasyDict

    @property
    def _tensorflow_network(self) -> type:
        return _TensorFlowNetworkStub

    def _ordered_dict(self, *args: object) -> OrderedDict:
        self._count()
        if args:  # protocol 2+ writes OrderedDict() and then its items
            raise CheckpointError(f"{self._source}: an OrderedDict is built from arguments, not from its items")
        return OrderedDict()

    def _set(self, items: object = ()) -> set:
        self._count()
        if not isinstance(items, list):
            raise CheckpointError(f"{self._source}: a set is built from a {type(items).__name__}, not a list")
        return set(items)

    # torch ----------------------------------------------------------------------------------------------------

    def _load_storage(self, data: object) -> torch.storage.TypedStorage:
        self._count()
        if not isinstance(data, bytes):
            raise CheckpointError(f"{self._source}: a storage is given as {type(data).__name__}, not bytes")
        declared = _declared_storage_bytes(data, self._source)
        self._storage_bytes += declared
        if self._storage_bytes > self._file_bytes:
            raise CheckpointError(
                f"{self._source}: the storages declare {self._storage_bytes:,} bytes in all, "
                f"more than the file's {self._file_bytes:,}"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TypedStorage's deprecation notice
                storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise CheckpointError(f"{self._source}: a storage cannot be read with weights only ({exc})") from None
        if not isinstance(storage, torch.storage.TypedStorage):
            raise CheckpointError(f"{self._source}: a storage's bytes hold a {type(storage).__name__}")
        return storage

    def _rebuild_tensor(
        self,
        storage: object,
        storage_offset: object,
        size: object,
        stride: object,
        requires_grad: object = False,
        backward_hooks: object = None,
        metadata: object = None,
    ) -> torch.Tensor:
        self._count()
        if not isinstance(storage, torch.storage.TypedStorage):
            raise CheckpointError(f"{self._source}: a tensor is rebuilt from a {type(storage).__name__}, not a storage")
        if (
            not _is_count(storage_offset)
            or not isinstance(size, tuple)
            or not isinstance(stride, tuple)
            or len(size) != len(stride)
            or not all(_is_count(n) for n in size + stride)
        ):
            raise CheckpointError(
                f"{self._source}: a tensor has the layout {size!r} / {stride!r} at {storage_offset!r}"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            capacity = storage.size()
            numel = math.prod(size)
            last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
            if numel and (numel > capacity or last >= capacity):
                raise CheckpointError(
                    f"{self._source}: a tensor of shape {tuple(size)} reaches past its storage of {capacity} elements"
                )
            return torch.empty(0, dtype=storage.dtype).set_(storage.untyped(), storage_offset, size, stride)

    def _rebuild_parameter(self, data: object, requires_grad: object = False, backward_hooks: object = None) -> Any:
        self._count()
        if not isinstance(data, torch.Tensor):
            raise CheckpointError(f"{self._source}: a parameter wraps a {type(data).__name__}, not a tensor")
        return data

    def _rebuild_parameter_with_state(
        self, data: object, requires_grad: object = False, backward_hooks: object = None, state: object = None
    ) -> Any:
        return self._rebuild_parameter(data)

    # numpy ----------------------------------------------------------------------------------------------------

    def _numpy_dtype(self, spec: object, align: object = False, copy: object = False) -> _NumpyDtype:
        self._count()
        return _NumpyDtype(spec, align, copy)

    @property
    def _ndarray_class(self) -> type:
        return _NdarrayClass

    def _numpy_reconstruct(self, cls: object, shape: object = (0,), typecode: object = b"b") -> _NumpyArray:
        self._count()
        if cls is not _NdarrayClass:
            raise CheckpointError(f"{self._source}: a numpy array of a class other than numpy.ndarray")
        return _NumpyArray()

    def _numpy_scalar(self, dtype: object, data: object = None) -> Any:
        self._count()
        if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
            raise CheckpointError(f"{self._source}: a numpy scalar is not a number of a plain numeric dtype")
        return np.frombuffer(data, dtype=dtype.dtype)[0]


class _StorageHeaderScan(pickle.Unpickler):
    """Reads the pickles that open torch's legacy layout of a storage, to sum the sizes it declares."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file)
        self._source = source
        self.declared: dict[object, int] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_ITEMSIZE:
            return _STORAGE_ITEMSIZE[name]  # stands for the storage class: its element size
        raise CheckpointError(
            f"{self._source}: a storage's record refers to the global {module}.{name}, which gan-probe does not load"
        )

    def persistent_load(self, pid: object) -> None:
        # ("storage", storage class, key, location, number of elements, view metadata)
        if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] != "storage":
            raise CheckpointError(f"{self._source}: a storage's record is not one torch writes")
        itemsize, key, numel = pid[1], pid[2], pid[4]
        if not _is_count(itemsize) or not _is_count(numel) or not isinstance(key, str):
            raise CheckpointError(f"{self._source}: a storage declares the size {numel!r}")
        self.declared[key] = numel * itemsize


def _declared_storage_bytes(data: bytes, source: str) -> int:
    """The bytes the storages in ``data`` (torch's legacy layout of a pickled storage) declare, checked to fit it.

    The layout is four pickles (magic number, protocol, system info, the object whose storages are persistent
    ids declaring their element counts), the storage keys, then each storage's bytes. torch allocates what the
    ids declare before reading the bytes, so the declaration is checked first."""
    file = io.BytesIO(data)
    scan = _StorageHeaderScan(file, source)
    try:
        for _ in range(3):
            header = _StorageHeaderScan(file, source).load()
            if not isinstance(header, int | dict):
                raise CheckpointError(f"{source}: a storage's bytes are not in the layout torch writes")
        scan.load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error, IndexError) as exc:
        raise CheckpointError(f"{source}: a storage's bytes are not in the layout torch writes ({exc})") from None
    declared = sum(scan.declared.values())
    if declared > len(data):
        raise CheckpointError(f"{source}: a storage declares {declared:,} bytes in a record of {len(data):,}")
    return declared


# ---------------------------------------------------------------------------------------------------------------
# From what was unpickled to plain records


class _Converter:
    """Turns the unpickled structure into plain values and records, counting nesting levels."""

    def __init__(self, limits: PickleLimits, source: str) -> None:
        self._limits = limits
        self._source = source

    def _check_depth(self, depth: int) -> None:
        if depth > self._limits.max_depth:
            raise CheckpointError(
                f"{self._source}: the pickle nests deeper than {self._limits.max_depth} levels, "
                "the limit of the reader (PickleLimits.max_depth)"
            )

    def plain(self, value: object, depth: int = 0, *, arrays_as_lists: bool = False) -> Any:
        """Plain Python values; tensors stay tensors, numpy arrays become arrays (or lists), records records."""
        self._check_depth(depth)
        if value is None or isinstance(value, bool | int | float | complex | str | bytes):
            return value
        if isinstance(value, torch.Tensor):
            return value
        inner = depth + 1
        if isinstance(value, dict):
            return {
                self.plain(k, inner, arrays_as_lists=arrays_as_lists): self.plain(
                    v, inner, arrays_as_lists=arrays_as_lists
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set):
            items = [self.plain(v, inner, arrays_as_lists=arrays_as_lists) for v in value]
            return tuple(items) if isinstance(value, tuple) else set(items) if isinstance(value, set) else items
        if isinstance(value, _NumpyArray):
            array = value.to_numpy()
            return array.tolist() if arrays_as_lists else array
        if isinstance(value, np.generic):  # a numpy scalar (only numeric ones are built)
            return value.item() if arrays_as_lists else np.asarray(value)
        if isinstance(value, _PersistentObject):
            return self.record(value, inner)
        if isinstance(value, _NumpyDtype):
            return str(value.dtype)
        raise CheckpointError(f"{self._source}: the pickle holds a {type(value).__name__} where plain data belongs")

    def record(self, top: _PersistentObject, depth: int) -> NetworkRecord:
        """The module tree under ``top``: tensors named as ``named_parameters()``/``named_buffers()`` name them."""
        parameters: dict[str, torch.Tensor] = {}
        buffers: dict[str, torch.Tensor] = {}
        classes: dict[str, str] = {}
        seen_modules: set[int] = set()
        seen_tensors: dict[str, set[int]] = {"_parameters": set(), "_buffers": set()}
        stores_fused_default = False

        def visit(module: _PersistentObject, prefix: str, level: int) -> None:
            nonlocal stores_fused_default
            self._check_depth(level)
            if id(module) in seen_modules:  # a module shared by two parents is named once, as torch does
                return
            seen_modules.add(id(module))
            classes[prefix[:-1]] = module.class_name
            state = module.state
            if module.class_name == "SynthesisBlock" and "fused_modconv_default" in state:
                stores_fused_default = True
            for group, out in (("_parameters", parameters), ("_buffers", buffers)):
                for name, tensor in self._mapping(state.get(group, {}), module.class_name, group).items():
                    if tensor is None:
                        continue
                    if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                        raise CheckpointError(
                            f"{self._source}: {module.class_name}.{group} holds a {type(tensor).__name__} "
                            f"under {name!r}, not a tensor"
                        )
                    if id(tensor) not in seen_tensors[group]:
                        seen_tensors[group].add(id(tensor))
                        out[prefix + name] = tensor
            for name, child in self._mapping(state.get("_modules", {}), module.class_name, "_modules").items():
                if child is None:
                    continue
                if not isinstance(name, str) or not isinstance(child, _PersistentObject):
                    raise CheckpointError(
                        f"{self._source}: the submodule {prefix}{name} of {module.class_name} is a "
                        f"{type(child).__name__}, not one of NVIDIA's persistent modules"
                    )
                visit(child, f"{prefix}{name}.", level + 1)

        visit(top, "", depth)
        state = top.state
        init_args = self.plain(state.get("_init_args", ()), depth + 1, arrays_as_lists=True)
        init_kwargs = self.plain(state.get("_init_kwargs", {}), depth + 1, arrays_as_lists=True)
        if not isinstance(init_args, tuple) or not isinstance(init_kwargs, dict):
            raise CheckpointError(
                f"{self._source}: {top.class_name}'s constructor arguments are not a tuple and a dict"
            )
        attributes = {
            key: self.plain(value, depth + 1, arrays_as_lists=True)
            for key, value in state.items()
            if isinstance(key, str) and not key.startswith("_") and key != "training"
            if not isinstance(value, torch.Tensor)
        }
        return NetworkRecord(
            class_name=_qualified_class_name(classes, stores_fused_default),
            init_args=init_args,
            init_kwargs=init_kwargs,
            state=parameters | buffers,
            attributes=attributes,
            module_classes=classes,
        )

    def _mapping(self, value: object, class_name: str, group: str) -> Mapping:
        if not isinstance(value, Mapping):
            raise CheckpointError(f"{self._source}: {class_name}.{group} is a {type(value).__name__}, not a dict")
        return value

    def tensorflow_network(self, stub: _TensorFlowNetworkStub, depth: int = 0) -> TensorFlowNetwork:
        """A TensorFlow network and its components, variables flattened with the components' names as prefixes."""
        self._check_depth(depth)
        state = getattr(stub, "state", None)
        if not isinstance(state, dict):
            raise CheckpointError(f"{self._source}: a TensorFlow network has no state")
        name, version, func = state.get("name"), state.get("version"), state.get("build_func_name")
        if not isinstance(name, str) or not _is_count(version) or not isinstance(func, str):
            raise CheckpointError(f"{self._source}: a TensorFlow network's state lacks its name, version or builder")
        static_kwargs = self.plain(state.get("static_kwargs", {}), depth + 1, arrays_as_lists=True)
        if not isinstance(static_kwargs, dict):
            raise CheckpointError(f"{self._source}: the TensorFlow network {name}'s static_kwargs are not a dict")
        variables: dict[str, np.ndarray] = {}
        pairs = state.get("variables", [])
        if not isinstance(pairs, list):
            raise CheckpointError(f"{self._source}: the TensorFlow network {name}'s variables are not a list")
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
                raise CheckpointError(f"{self._source}: the TensorFlow network {name} has a variable without a name")
            value = self.plain(pair[1], depth + 1)  # numpy scalars (TensorFlow's scalar variables) as 0-d arrays
            if not isinstance(value, np.ndarray):
                raise CheckpointError(f"{self._source}: the TensorFlow variable {name}/{pair[0]} is not an array")
            variables[pair[0]] = value
        components = state.get("components", {})
        if not isinstance(components, dict):
            raise CheckpointError(f"{self._source}: the TensorFlow network {name}'s components are not a dict")
        for component_name, component in components.items():
            if not isinstance(component_name, str) or not isinstance(component, _TensorFlowNetworkStub):
                raise CheckpointError(f"{self._source}: the TensorFlow network {name} has a component that is not one")
            inner = self.tensorflow_network(component, depth + 1)
            variables.update({f"{component_name}/{key}": value for key, value in inner.variables.items()})
        return TensorFlowNetwork(name, version, func, static_kwargs, variables)


def _qualified_class_name(classes: Mapping[str, str], stores_fused_default: bool) -> str:
    """The generator's class with its module, read from the structure (the module docstring says how)."""
    name = classes.get("", "")
    if (
        name != "Generator"
        or classes.get("mapping") != "MappingNetwork"
        or classes.get("synthesis") != "SynthesisNetwork"
    ):
        return name
    layers = {cls for path, cls in classes.items() if path.startswith("synthesis.") and path.count(".") == 1}
    if "SynthesisInput" in layers:
        return STYLEGAN3_GENERATOR
    if "SynthesisBlock" in layers:
        return STYLEGAN2_GENERATOR if stores_fused_default else STYLEGAN2_ADA_GENERATOR
    return name


# ---------------------------------------------------------------------------------------------------------------
# The public functions


def looks_like_nvidia_pickle(path: str | Path) -> bool:
    """Whether the file is a pickle naming NVIDIA's persistence reconstructor or TensorFlow network class near its
    start (every network snapshot does within its first records). Reads at most 1 MiB; runs nothing."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
    except OSError:
        return False
    return head[:1] == b"\x80" and any(signature in head for signature in _SIGNATURES)


def read_nvidia_pickle(path: str | Path, *, limits: PickleLimits = PickleLimits()) -> dict[str, Any]:
    """The entries of an NVIDIA pickle, read without running anything from it.

    A network snapshot gives its dict (``G``, ``D``, ``G_ema``, ``augment_pipe``,
    ``training_set_kwargs``) with each network a :class:`NetworkRecord` and every
    other value plain data. A TensorFlow-era pickle ``(G, D, Gs)`` gives ``G`` and
    ``G_ema`` (from ``Gs``) converted to stylegan2-ada-pytorch's Generator (see
    :mod:`gan_probe.models.nvidia.tf_variables`) and ``D`` as a
    :class:`TensorFlowNetwork`. A pickle of one network gives it under
    :data:`WHOLE_FILE`. Raises :class:`CheckpointError` for anything else, naming
    the global, limit or structure at fault."""
    file = Path(path)
    source = str(path)
    try:
        with open(file, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limits.max_file_bytes:
                raise CheckpointError(
                    f"{source}: {size:,} bytes, more than the reader's limit of {limits.max_file_bytes:,} "
                    "(PickleLimits.max_file_bytes)"
                )
            if size == 0:
                raise CheckpointError(f"{source}: an empty file, not a pickle")
            # mapped, not read: the pages are the file's, so only the unpickled objects take memory
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return _read_mapped(mapped, size, limits, source)
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint {source}: {exc.strerror or exc}") from None


def _read_mapped(mapped: mmap.mmap, size: int, limits: PickleLimits, source: str) -> dict[str, Any]:
    unpickler = _RestrictedUnpickler(mapped, file_bytes=size, limits=limits, source=source)
    converter = _Converter(limits, source)
    try:
        return _entries(unpickler.load(), converter, source)
    except CheckpointError as exc:
        if str(exc).startswith(f"{source}: "):
            raise
        raise CheckpointError(f"{source}: {exc}", param=exc.param) from None
    except RecursionError:
        raise CheckpointError(f"{source}: the pickle nests too deeply to read") from None
    except (pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointError(f"{source}: not a complete pickle ({exc or 'it ends early'})") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{source}: not a pickle NVIDIA's code writes ({type(exc).__name__}: {exc})") from None
    except MemoryError:
        raise CheckpointError(f"{source}: the pickle needs more memory than there is to read") from None


def _entries(top: object, converter: _Converter, source: str) -> dict[str, Any]:
    if isinstance(top, tuple) and len(top) == 3 and all(isinstance(n, _TensorFlowNetworkStub) for n in top):
        from gan_probe.models.nvidia.tf_variables import tensorflow_generator_record

        g, d, gs = (converter.tensorflow_network(n) for n in top)
        return {"G": tensorflow_generator_record(g), "D": d, "G_ema": tensorflow_generator_record(gs)}
    if isinstance(top, _PersistentObject):
        return {WHOLE_FILE: converter.record(top, 0)}
    if isinstance(top, dict) and all(isinstance(k, str) for k in top):
        return {key: converter.plain(value, 1, arrays_as_lists=True) for key, value in top.items()}
    raise CheckpointError(
        f"{source}: the pickle holds a {type(top).__name__}, not NVIDIA's dict of networks "
        "nor a TensorFlow (G, D, Gs) tuple"
    )


def describe_entry(value: object) -> str:
    """What an entry holds, in a few words: a network's class, a TensorFlow network's name, or the value's type."""
    if isinstance(value, NetworkRecord):
        return value.class_name
    if isinstance(value, TensorFlowNetwork):
        return f"TensorFlow network {value.name}"
    return "None" if value is None else type(value).__name__


def pick_generator(entries: Mapping[str, Any], key: str | None = None) -> tuple[str, NetworkRecord]:
    """The generator's entry: ``key`` when given, else ``G_ema``, else ``G``, else the whole file's one network.

    Returns (entry name, record). Raises :class:`CheckpointError` (``param="key"``)
    when the entry is missing, is not a network, or is a class gan-probe does not
    rebuild; the message lists the file's entries with what they hold."""
    listing = ", ".join(f"{name or '(whole file)'}: {describe_entry(value)}" for name, value in entries.items())
    if key is not None:
        if key not in entries:
            raise CheckpointError(f"the pickle has no entry {key!r}; its entries: {listing}", param="key")
        name = key
    else:
        found = [n for n in (*GENERATOR_ENTRIES, WHOLE_FILE) if isinstance(entries.get(n), NetworkRecord)]
        if not found:
            raise CheckpointError(
                f"the pickle has no generator entry ({' or '.join(GENERATOR_ENTRIES)}); its entries: {listing}; "
                "choose one with --key",
                param="key",
            )
        name = found[0]
    record = entries[name]
    if not isinstance(record, NetworkRecord):
        raise CheckpointError(
            f"the entry {name!r} holds {describe_entry(record)}, not a network; its entries: {listing}", param="key"
        )
    if record.class_name not in SUPPORTED_GENERATORS:
        raise CheckpointError(
            f"the entry {name or '(whole file)'!r} holds NVIDIA's class {record.class_name}, which gan-probe does not "
            f"rebuild (supported: {', '.join(SUPPORTED_GENERATORS)})",
            param="key",
        )
    return name, record
