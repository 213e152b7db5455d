"""NVIDIA's pickles read without running them: network snapshots (stylegan2-ada-pytorch, stylegan3) and
TensorFlow-era StyleGAN2 pickles, the names their tensors get, and every refusal.

The pickles are written here from the tests' own modules (tests/nvidia_pickles.py), with a module source that
would write a marker file if executed. ``data/tensorflow_stylegan2_tiny.safetensors`` holds two small
TensorFlow-style generators' variables (TensorFlow names and shapes, random values) and the state NVIDIA's own
converter (stylegan2-ada-pytorch's legacy.py at c233a91, ``convert_tf_generator``, run on CPU) made of them, with
its constructor arguments and attributes in the metadata.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from gan_probe.errors import CheckpointError
from gan_probe.models.nvidia.pickle_reader import (
    STYLEGAN2_ADA_GENERATOR,
    STYLEGAN2_GENERATOR,
    STYLEGAN3_GENERATOR,
    SUPPORTED_GENERATORS,
    WHOLE_FILE,
    NetworkRecord,
    PickleLimits,
    TensorFlowNetwork,
    looks_like_nvidia_pickle,
    pick_generator,
    read_nvidia_pickle,
)
from tests.nvidia_pickles import (
    Persistent,
    marker_source,
    stand_in_modules,
    tensorflow_generator_variables,
    write_snapshot,
    write_tensorflow_pickle,
)

DATA = Path(__file__).parent / "data"
TF_FIXTURE = DATA / "tensorflow_stylegan2_tiny.safetensors"


class EasyDict(dict):
    """Stands for dnnlib's EasyDict when the snapshot is written (a dict subclass, pickled by class name)."""


def _module(params=(), buffers=(), children=(), attributes=()) -> nn.Module:
    module = nn.Module()
    for name, value in dict(params).items():
        module.register_parameter(name, None if value is None else nn.Parameter(value, requires_grad=False))
    for name, value in dict(buffers).items():
        module.register_buffer(name, value)
    for name, child in dict(children).items():
        module.add_module(name, child)
    for name, value in dict(attributes).items():
        setattr(module, name, value)
    return module


def _fc(gen: torch.Generator, n_in: int, n_out: int) -> nn.Module:
    return _module(
        {"weight": torch.randn(n_out, n_in, generator=gen), "bias": torch.randn(n_out, generator=gen)},
        attributes={"activation": "lrelu", "weight_gain": np.float64(0.25), "bias_gain": 0.01},
    )


def _layer(gen: torch.Generator, c_in: int, c_out: int, res: int) -> nn.Module:
    return _module(
        {
            "weight": torch.randn(c_out, c_in, 3, 3, generator=gen),
            "noise_strength": torch.randn((), generator=gen),
            "bias": torch.randn(c_out, generator=gen),
        },
        {"resample_filter": torch.rand(4, 4, generator=gen), "noise_const": torch.randn(res, res, generator=gen)},
        {"affine": _fc(gen, 4, c_in)},
        {"up": 2, "in_size": np.array([res, res], dtype=np.int64)},
    )


def tiny_generator(seed: int = 0, *, family: str = "ada") -> tuple[nn.Module, dict[str, str]]:
    """A module tree laid out and named like stylegan2-ada-pytorch's Generator (or, with ``family``, like the
    stylegan3 repository's StyleGAN2, StyleGAN3, or an unknown Generator), with the class name of each module."""
    gen = torch.Generator().manual_seed(seed)
    blocks: dict[str, nn.Module] = {}
    classes = {"": "Generator", "mapping": "MappingNetwork", "synthesis": "SynthesisNetwork"}
    if family == "stylegan3":
        blocks["input"] = _module(
            {"weight": torch.randn(4, 4, generator=gen)},
            {"transform": torch.eye(3), "freqs": torch.randn(4, 2, generator=gen)},
            {"affine": _fc(gen, 4, 4)},
        )
        classes |= {"synthesis.input": "SynthesisInput", "synthesis.input.affine": "FullyConnectedLayer"}
        blocks["L0_8_4"] = _module(
            {"weight": torch.randn(4, 4, 3, 3, generator=gen)}, {"magnitude_ema": torch.ones(())}
        )
        classes["synthesis.L0_8_4"] = "SynthesisLayer"
    elif family in ("ada", "stylegan2"):
        for res, c_in in ((4, 0), (8, 4)):
            layers: dict[str, nn.Module] = {}
            if c_in:
                layers["conv0"] = _layer(gen, c_in, 4, res)
            layers["conv1"] = _layer(gen, 4, 4, res)
            layers["torgb"] = _module(
                {"weight": torch.randn(3, 4, 1, 1, generator=gen), "bias": torch.randn(3, generator=gen)},
                children={"affine": _fc(gen, 4, 4)},
            )
            extra = {"fused_modconv_default": "inference_only"} if family == "stylegan2" else {}
            params = {} if c_in else {"const": torch.randn(4, 4, 4, generator=gen)}
            blocks[f"b{res}"] = _module(params, {"resample_filter": torch.rand(4, 4, generator=gen)}, layers, extra)
            classes[f"synthesis.b{res}"] = "SynthesisBlock"
            for name in layers:
                path = f"synthesis.b{res}.{name}"
                classes[path] = "ToRGBLayer" if name == "torgb" else "SynthesisLayer"
                classes[f"{path}.affine"] = "FullyConnectedLayer"
    mapping = _module(
        buffers={"w_avg": torch.randn(4, generator=gen)},
        children={"fc0": _fc(gen, 4, 4), "fc1": _fc(gen, 4, 4)},
        attributes={"num_layers": 2, "w_avg_beta": 0.995},
    )
    classes |= {"mapping.fc0": "FullyConnectedLayer", "mapping.fc1": "FullyConnectedLayer"}
    root = _module(
        children={"synthesis": _module(children=blocks, attributes={"num_ws": 4}), "mapping": mapping},
        attributes={"z_dim": 4, "c_dim": 0, "w_dim": 4, "img_resolution": 8, "img_channels": 3, "num_ws": 4},
    )
    return root, classes


def tiny_discriminator(seed: int = 1) -> tuple[nn.Module, dict[str, str]]:
    gen = torch.Generator().manual_seed(seed)
    b4 = _module({"weight": torch.randn(2, 3, generator=gen), "bias": None}, {"count": torch.arange(3)})
    return _module(children={"b4": b4}), {"": "Discriminator", "b4": "DiscriminatorEpilogue"}


def flat_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters()) | dict(module.named_buffers())


INIT_KWARGS = {
    "z_dim": 4,
    "w_dim": 4,
    "mapping_kwargs": EasyDict(num_layers=2),
    "synthesis_kwargs": EasyDict(channel_base=32, channel_max=4, architecture="skip", resample_filter=[1, 3, 3, 1]),
    "c_dim": 0,
    "img_resolution": 8,
    "img_channels": 3,
}


def write_tiny_snapshot(path: Path, marker: Path, *, protocol: int = 4, family: str = "ada", **extra) -> nn.Module:
    """A snapshot like NVIDIA's training loop writes: G, D, G_ema, augment_pipe, training_set_kwargs."""
    src = marker_source(marker)
    g, classes = tiny_generator(0, family=family)
    g_ema, _ = tiny_generator(1, family=family)
    d, d_classes = tiny_discriminator()
    entries = {
        "G": Persistent(g, classes, module_src=src, init_kwargs=INIT_KWARGS),
        "D": Persistent(d, d_classes, module_src=src, init_kwargs={"c_dim": 0}),
        "G_ema": Persistent(g_ema, classes, module_src=src, init_kwargs=INIT_KWARGS),
        "augment_pipe": None,
        "training_set_kwargs": EasyDict(path="data.zip", resolution=8, use_labels=False),
        **extra,
    }
    with stand_in_modules(dnnlib__util={"EasyDict": EasyDict}):
        write_snapshot(path, entries, protocol=protocol)
    return g_ema


def assert_nothing_ran(marker: Path) -> None:
    assert not marker.exists(), "the pickle's module source was executed"
    assert not {"torch_utils", "dnnlib", "training"} & set(sys.modules), "a module of NVIDIA's was imported"


# ---------------------------------------------------------------------------------------------------------------
# Network snapshots


@pytest.mark.parametrize("protocol", [3, 4])  # 3: Python 3.7's default (sets as builtins.set), 4: 3.8+
def test_snapshot_state_comes_back_bit_exact_under_torch_names(tmp_path, protocol):
    marker = tmp_path / "executed"
    g_ema = write_tiny_snapshot(tmp_path / "snapshot.pkl", marker, protocol=protocol)
    entries = read_nvidia_pickle(tmp_path / "snapshot.pkl")
    assert_nothing_ran(marker)
    assert list(entries) == ["G", "D", "G_ema", "augment_pipe", "training_set_kwargs"]
    key, record = pick_generator(entries)
    assert key == "G_ema"
    expected = flat_state(g_ema)
    assert list(record.state) == list(expected)  # named_parameters() order, then named_buffers()
    for name, tensor in expected.items():
        got = record.state[name]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape and torch.equal(got, tensor), name
    assert record.class_name == STYLEGAN2_ADA_GENERATOR
    assert record.init_args == ()
    assert record.init_kwargs == INIT_KWARGS
    assert type(record.init_kwargs["mapping_kwargs"]) is dict  # EasyDict read as the dict it is
    assert record.attributes == {
        "z_dim": 4,
        "c_dim": 0,
        "w_dim": 4,
        "img_resolution": 8,
        "img_channels": 3,
        "num_ws": 4,
    }
    assert record.module_classes["synthesis.b8.conv0.affine"] == "FullyConnectedLayer"
    assert entries["training_set_kwargs"] == {"path": "data.zip", "resolution": 8, "use_labels": False}
    assert entries["augment_pipe"] is None
    d = entries["D"]
    assert isinstance(d, NetworkRecord) and d.class_name == "Discriminator"
    assert list(d.state) == ["b4.weight", "b4.count"]  # the None bias skipped, as named_parameters() does
    assert d.state["b4.count"].dtype == torch.int64


def test_numpy_attributes_become_plain_python_values(tmp_path):
    marker = tmp_path / "executed"
    g, classes = tiny_generator(0)
    g.extra = np.float32(0.5)
    g.sizes = np.array([[1, 2], [3, 4]], dtype=np.int16)
    write_snapshot(tmp_path / "t.pkl", {"G": Persistent(g, classes, module_src=marker_source(marker))})
    attributes = read_nvidia_pickle(tmp_path / "t.pkl")["G"].attributes
    assert attributes["extra"] == 0.5 and type(attributes["extra"]) is float
    assert attributes["sizes"] == [[1, 2], [3, 4]]
    assert_nothing_ran(marker)


def test_numpy_1_module_names_read_as_numpy_2s(tmp_path):
    """Files written under numpy 1 name numpy.core.multiarray; numpy 2 writes numpy._core.multiarray."""
    data = pickle.dumps({"G": {"gain": np.float64(0.125), "size": np.arange(3, dtype=np.int32)}}, protocol=3)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\nscalar" in old and b"numpy.core.multiarray\n_reconstruct" in old
    for payload in (data, old):
        (tmp_path / "n.pkl").write_bytes(payload)
        assert read_nvidia_pickle(tmp_path / "n.pkl") == {"G": {"gain": 0.125, "size": [0, 1, 2]}}


@pytest.mark.parametrize(
    "family, class_name",
    [("ada", STYLEGAN2_ADA_GENERATOR), ("stylegan2", STYLEGAN2_GENERATOR), ("stylegan3", STYLEGAN3_GENERATOR)],
)
def test_the_generators_module_is_read_from_its_structure(tmp_path, family, class_name):
    marker = tmp_path / "executed"
    write_tiny_snapshot(tmp_path / "s.pkl", marker, family=family)
    _, record = pick_generator(read_nvidia_pickle(tmp_path / "s.pkl"))
    assert record.class_name == class_name
    assert_nothing_ran(marker)


def test_a_generator_of_unknown_structure_is_refused_naming_the_supported_ones(tmp_path):
    write_tiny_snapshot(tmp_path / "s.pkl", tmp_path / "executed", family="other")
    entries = read_nvidia_pickle(tmp_path / "s.pkl")
    assert entries["G_ema"].class_name == "Generator"
    with pytest.raises(CheckpointError, match="class Generator, which gan-probe does not rebuild") as err:
        pick_generator(entries)
    assert all(name in str(err.value) for name in SUPPORTED_GENERATORS)


def test_entries_are_picked_g_ema_then_g_then_by_key(tmp_path):
    write_tiny_snapshot(tmp_path / "s.pkl", tmp_path / "executed")
    entries = read_nvidia_pickle(tmp_path / "s.pkl")
    assert pick_generator(entries)[0] == "G_ema"
    assert pick_generator({k: v for k, v in entries.items() if k != "G_ema"})[0] == "G"
    assert pick_generator({**entries, "G_ema": None})[0] == "G"
    name, record = pick_generator(entries, key="G")
    assert name == "G" and record is entries["G"]
    with pytest.raises(CheckpointError, match="'D' holds NVIDIA's class Discriminator") as err:
        pick_generator(entries, key="D")
    assert err.value.param == "key" and STYLEGAN3_GENERATOR in str(err.value)
    with pytest.raises(CheckpointError, match="no entry 'G_avg'; its entries: G: training.networks.Generator, D: Disc"):
        pick_generator(entries, key="G_avg")
    with pytest.raises(CheckpointError, match="'training_set_kwargs' holds dict, not a network"):
        pick_generator(entries, key="training_set_kwargs")
    with pytest.raises(CheckpointError, match="no generator entry .G_ema or G.; its entries: D: Discriminator"):
        pick_generator({"D": entries["D"]})


def test_a_pickle_of_one_network_is_the_whole_file_entry(tmp_path):
    g, classes = tiny_generator(2)
    with stand_in_modules(torch_utils__persistence={"_reconstruct_persistent_obj": lambda meta: None}):
        data = pickle.dumps(Persistent(g, classes, module_src=marker_source(tmp_path / "executed")))
    (tmp_path / "g.pkl").write_bytes(data)
    name, record = pick_generator(read_nvidia_pickle(tmp_path / "g.pkl"))
    assert name == WHOLE_FILE and record.class_name == STYLEGAN2_ADA_GENERATOR
    assert all(torch.equal(record.state[k], v) for k, v in flat_state(g).items())


def test_looks_like_nvidia_pickle(tmp_path):
    write_tiny_snapshot(tmp_path / "s.pkl", tmp_path / "executed")
    write_tensorflow_pickle(tmp_path / "tf.pkl", {}, {"dlatent_avg": np.zeros(2, np.float32)})
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"w": [1, 2]}))
    assert looks_like_nvidia_pickle(tmp_path / "s.pkl") and looks_like_nvidia_pickle(tmp_path / "tf.pkl")
    assert not looks_like_nvidia_pickle(tmp_path / "plain.pt") and not looks_like_nvidia_pickle(tmp_path / "plain.pkl")
    assert not looks_like_nvidia_pickle(tmp_path / "missing.pkl")


# ---------------------------------------------------------------------------------------------------------------
# Refusals


def _global_call(module: str, name: str, arg: str, *, stack_global: bool) -> bytes:
    """A pickle that calls module.name(arg): GLOBAL (protocol 2) or STACK_GLOBAL (protocol 4) then REDUCE."""
    text = arg.encode()
    call = b"X" + len(text).to_bytes(4, "little") + text + b"\x85R."  # BINUNICODE, TUPLE1, REDUCE, STOP
    if stack_global:
        m, n = module.encode(), name.encode()
        return b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93" + call
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + call


@pytest.mark.parametrize(
    "module, name",
    [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("subprocess", "Popen"),
        ("torch", "load"),
        ("numpy", "load"),
        ("functools", "partial"),
        ("torch_utils.persistence", "_src_to_module"),
        ("torch_utils.persistence", "persistent_class"),
        ("dnnlib.util", "construct_class_by_name"),
        ("torch.storage", "_load_from_bytes_unsafe"),
    ],
)
@pytest.mark.parametrize("stack_global", [False, True])
def test_every_other_global_is_refused_by_name_before_it_runs(tmp_path, module, name, stack_global):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_global_call(module, name, f"touch {marker}", stack_global=stack_global))
    with pytest.raises(CheckpointError) as err:
        read_nvidia_pickle(path)
    assert f"refers to the global {module}.{name}, which gan-probe does not load" in str(err.value)
    assert "tensors and NVIDIA's network records only" in str(err.value)
    assert not marker.exists()


def _legacy_storage_bytes(numel: int, data: bytes, storage_class: object = torch.FloatStorage) -> bytes:
    """torch's legacy layout of one pickled storage whose persistent id declares ``numel`` elements of
    ``storage_class`` (a global reference), followed by ``data``."""

    class Declares(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_class, "0", "cpu", numel, None) if obj is stored else None

    stored = object()
    buffer = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    Declares(buffer, protocol=2).dump(stored)
    pickle.dump(["0"], buffer, protocol=2)
    buffer.write(len(data).to_bytes(8, "little") + data)
    return buffer.getvalue()


class _Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2 over a real storage with the given layout."""

    def __init__(self, storage, size, stride) -> None:
        self.args = (storage, 0, size, stride, False, OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _LoadFromBytes:
    """Pickles as torch.storage._load_from_bytes(payload), as a storage inside a tensor does."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.payload,))


def _storage_pickle(payload: bytes, copies: int = 1, numel: int = 2) -> bytes:
    """{"G": [tensor, ...]}: ``copies`` tensors of ``numel`` elements, each over a storage loaded from ``payload``
    (one bytes object, stored once in the pickle and loaded once per tensor)."""
    return pickle.dumps({"G": [_Tensor(_LoadFromBytes(payload), (numel,), (1,)) for _ in range(copies)]}, protocol=4)


def test_a_huge_storage_declared_in_a_tiny_file_is_refused_before_allocation(tmp_path):
    # the persistent id declares 10**12 float32 elements; the file holds 8 bytes of data
    payload = _legacy_storage_bytes(10**12, b"\0" * 8)
    path = tmp_path / "huge.pkl"
    path.write_bytes(_storage_pickle(payload))
    assert path.stat().st_size < 1024
    with pytest.raises(CheckpointError, match="declares 4,000,000,000,000 bytes in a record of"):
        read_nvidia_pickle(path)


def test_one_storage_loaded_many_times_counts_each_time(tmp_path):
    real = torch.arange(64, dtype=torch.float32).untyped_storage()
    payload = torch.storage.TypedStorage(wrap_storage=real, dtype=torch.float32, _internal=True).__reduce__()[1][0]
    path = tmp_path / "shared.pkl"
    path.write_bytes(_storage_pickle(payload, copies=50, numel=64))  # the bytes are stored once, loaded 50 times
    with pytest.raises(CheckpointError, match=r"the storages declare [\d,]+ bytes in all, more than the file's"):
        read_nvidia_pickle(path)
    path.write_bytes(_storage_pickle(payload, copies=1, numel=64))
    (tensor,) = read_nvidia_pickle(path)["G"]
    assert torch.equal(tensor, torch.arange(64, dtype=torch.float32))


def test_storages_saved_on_a_gpu_are_read_to_the_cpu(tmp_path):
    real = torch.arange(4, dtype=torch.float32).untyped_storage()
    payload = torch.storage.TypedStorage(wrap_storage=real, dtype=torch.float32, _internal=True).__reduce__()[1][0]
    on_gpu = payload.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")  # the location torch records
    assert b"cuda:0" in on_gpu
    (tmp_path / "g.pkl").write_bytes(_storage_pickle(on_gpu, numel=4))
    (tensor,) = read_nvidia_pickle(tmp_path / "g.pkl")["G"]
    assert tensor.device.type == "cpu" and torch.equal(tensor, torch.arange(4, dtype=torch.float32))


def test_a_storage_record_naming_another_global_is_refused(tmp_path):
    payload = _legacy_storage_bytes(2, b"\0" * 8, storage_class=os.system)
    path = tmp_path / "s.pkl"
    path.write_bytes(_storage_pickle(payload))
    with pytest.raises(CheckpointError, match=f"storage's record refers to the global {os.system.__module__}.system"):
        read_nvidia_pickle(path)


@pytest.mark.parametrize("size, stride", [((100,), (1,)), ((10**9,), (0,)), ((4, 4), (4, 1))])
def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path, size, stride):
    storage = torch.zeros(8).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    (tmp_path / "t.pkl").write_bytes(pickle.dumps({"G": _Tensor(typed, size, stride)}))
    with pytest.raises(CheckpointError, match="reaches past its storage of 8 elements"):
        read_nvidia_pickle(tmp_path / "t.pkl")


def test_a_deep_pickle_is_refused_with_the_limit(tmp_path):
    depth = 100_000
    # {"G_ema": [[[...]]]}: EMPTY_DICT, the key, 100,000 EMPTY_LISTs, 99,999 APPENDs, SETITEM, STOP
    data = b"\x80\x04}\x8c\x05G_ema" + b"]" * depth + b"a" * (depth - 1) + b"s."
    (tmp_path / "deep.pkl").write_bytes(data)
    with pytest.raises(CheckpointError, match="nests deeper than 100 levels"):
        read_nvidia_pickle(tmp_path / "deep.pkl")


def test_a_deep_module_tree_is_refused_with_the_limit(tmp_path):
    top = node = nn.Module()
    classes = {"": "Generator"}
    for i in range(30):
        child = nn.Module()
        node.add_module("m", child)
        node = child
        classes[".".join(["m"] * (i + 1))] = "Layer"
    write_snapshot(tmp_path / "s.pkl", {"G": Persistent(top, classes, module_src="")})
    assert read_nvidia_pickle(tmp_path / "s.pkl")["G"].module_classes[".".join(["m"] * 30)] == "Layer"
    with pytest.raises(CheckpointError, match="nests deeper than 20 levels"):
        read_nvidia_pickle(tmp_path / "s.pkl", limits=PickleLimits(max_depth=20))


def test_the_file_size_and_object_count_limits(tmp_path):
    write_tiny_snapshot(tmp_path / "s.pkl", tmp_path / "executed")
    size = (tmp_path / "s.pkl").stat().st_size
    with pytest.raises(CheckpointError, match=f"{size:,} bytes, more than the reader's limit of 1,000"):
        read_nvidia_pickle(tmp_path / "s.pkl", limits=PickleLimits(max_file_bytes=1000))
    with pytest.raises(CheckpointError, match="builds more than 50 objects"):
        read_nvidia_pickle(tmp_path / "s.pkl", limits=PickleLimits(max_objects=50))


def test_a_truncated_or_foreign_file_is_refused_in_one_line(tmp_path):
    write_tiny_snapshot(tmp_path / "s.pkl", tmp_path / "executed")
    data = (tmp_path / "s.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a complete pickle"):
        read_nvidia_pickle(tmp_path / "cut.pkl")
    (tmp_path / "text.pkl").write_bytes(b"hello, not a pickle")
    with pytest.raises(CheckpointError, match="text.pkl"):
        read_nvidia_pickle(tmp_path / "text.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="holds a list, not NVIDIA's dict of networks"):
        read_nvidia_pickle(tmp_path / "list.pkl")
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        read_nvidia_pickle(tmp_path / "missing.pkl")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pkl: an empty file, not a pickle"):
        read_nvidia_pickle(tmp_path / "empty.pkl")


def test_object_arrays_and_foreign_records_are_refused(tmp_path):
    (tmp_path / "o.pkl").write_bytes(pickle.dumps({"G": np.array([1, "a"], dtype=object)}))
    with pytest.raises(CheckpointError, match="o.pkl: the numpy dtype 'O8' is not a plain numeric type"):
        read_nvidia_pickle(tmp_path / "o.pkl")

    with stand_in_modules(torch_utils__persistence={"_reconstruct_persistent_obj": lambda meta: None}):

        class Reduce:
            def __init__(self, meta):
                self.meta = meta

            def __reduce__(self):
                return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))

        function = pickle.dumps({"G": Reduce({"type": "function", "class_name": "f", "state": {}})})
        bad_name = pickle.dumps({"G": Reduce({"type": "class", "class_name": "os.system", "state": {}})})
    (tmp_path / "f.pkl").write_bytes(function)
    with pytest.raises(CheckpointError, match="not that of a class"):
        read_nvidia_pickle(tmp_path / "f.pkl")
    (tmp_path / "n.pkl").write_bytes(bad_name)
    with pytest.raises(CheckpointError, match="has the class name 'os.system'"):
        read_nvidia_pickle(tmp_path / "n.pkl")


# ---------------------------------------------------------------------------------------------------------------
# TensorFlow-era pickles


def _tf_fixture() -> tuple[dict, dict[str, dict[str, np.ndarray]], dict[str, dict[str, torch.Tensor]]]:
    with safe_open(TF_FIXTURE, "pt") as f:
        configs = json.loads(f.metadata()["configs"])
        variables: dict[str, dict[str, np.ndarray]] = {c: {} for c in configs}
        expected: dict[str, dict[str, torch.Tensor]] = {c: {} for c in configs}
        for key in f.keys():
            config, kind, name = key.split("/", 2)
            tensor = f.get_tensor(key)
            if kind == "variables":
                array = tensor.numpy()
                # TensorFlow returns a scalar variable as a numpy scalar; lod is kept as a 0-d array
                variables[config][name] = array[()] if array.ndim == 0 and name != "lod" else array
            else:
                expected[config][name] = tensor
    return configs, variables, expected


@pytest.mark.parametrize("config", ["skip", "resnet_conditional"])
def test_tensorflow_pickle_matches_nvidias_converter_bit_for_bit(tmp_path, config):
    configs, variables, expected = _tf_fixture()
    marker = tmp_path / "executed"
    write_tensorflow_pickle(
        tmp_path / "tf.pkl", configs[config]["static_kwargs"], variables[config], module_src=marker_source(marker)
    )
    entries = read_nvidia_pickle(tmp_path / "tf.pkl")
    assert_nothing_ran(marker)
    assert isinstance(entries["D"], TensorFlowNetwork) and entries["D"].name == "D"
    key, record = pick_generator(entries)
    assert key == "G_ema" and record.class_name == STYLEGAN2_ADA_GENERATOR
    assert set(record.state) == set(expected[config])
    for name, tensor in expected[config].items():
        got = record.state[name]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape and torch.equal(got, tensor), name
    assert record.init_kwargs == configs[config]["init_kwargs"]
    assert record.attributes == configs[config]["attributes"]
    assert set(entries["G"].state) == set(record.state)


def test_tensorflow_variables_of_the_generator_are_all_mapped(tmp_path):
    """The fixture's helper and the converter agree on the layout for every architecture, with no noise too."""
    for architecture in ("orig", "skip", "resnet"):
        variables = tensorflow_generator_variables(
            resolution=8,
            channels={4: 4, 8: 2},
            z_dim=3,
            w_dim=4,
            img_channels=1,
            mapping_layers=1,
            architecture=architecture,
        )
        static = {
            "resolution": 8,
            "latent_size": 3,
            "dlatent_size": 4,
            "num_channels": 1,
            "mapping_layers": 1,
            "fmap_base": 8,
            "fmap_max": 4,
            "architecture": architecture,
        }
        write_tensorflow_pickle(tmp_path / "tf.pkl", static, variables)
        record = read_nvidia_pickle(tmp_path / "tf.pkl")["G_ema"]
        assert ("synthesis.b4.torgb.weight" in record.state) == (architecture == "skip")
        assert ("synthesis.b8.skip.weight" in record.state) == (architecture == "resnet")
        assert record.state["synthesis.b8.conv1.noise_const"].shape == (8, 8)
        assert record.init_kwargs["synthesis_kwargs"]["channel_base"] == 16
    noiseless = {k: v for k, v in variables.items() if "noise" not in k}
    write_tensorflow_pickle(tmp_path / "tf.pkl", {**static, "use_noise": False}, noiseless)
    assert not any("noise" in k for k in read_nvidia_pickle(tmp_path / "tf.pkl")["G_ema"].state)


def _tiny_tf() -> tuple[dict, dict[str, np.ndarray]]:
    static = {"resolution": 8, "latent_size": 3, "dlatent_size": 4, "num_channels": 1, "mapping_layers": 1}
    variables = tensorflow_generator_variables(
        resolution=8, channels={4: 4, 8: 2}, z_dim=3, w_dim=4, img_channels=1, mapping_layers=1
    )
    return {**static, "fmap_base": 8, "fmap_max": 4}, variables


def test_tensorflow_pickles_the_generator_does_not_describe_are_refused(tmp_path):
    static, variables = _tiny_tf()
    path = tmp_path / "tf.pkl"
    write_tensorflow_pickle(path, {**static, "fmap_decay": 0.5}, variables)
    with pytest.raises(CheckpointError, match="configured with fmap_decay=0.5, which the StyleGAN2 Generator"):
        read_nvidia_pickle(path)
    write_tensorflow_pickle(path, static, {**variables, "mapping/LabelConcat/weight": np.zeros((2, 3), np.float32)})
    with pytest.raises(CheckpointError, match="variables the StyleGAN2 Generator does not hold: mapping/LabelConcat"):
        read_nvidia_pickle(path)
    write_tensorflow_pickle(path, static, {k: v for k, v in variables.items() if k != "synthesis/noise2"})
    with pytest.raises(CheckpointError, match="has no variable synthesis/noise2"):
        read_nvidia_pickle(path)
    write_tensorflow_pickle(path, {**static, "architecture": "progressive"}, variables)
    with pytest.raises(CheckpointError, match="architecture='progressive'"):
        read_nvidia_pickle(path)
    bad = dict(variables)
    bad["synthesis/8x8/Conv1/weight"] = bad["synthesis/8x8/Conv1/weight"][0]
    write_tensorflow_pickle(path, static, bad)
    with pytest.raises(CheckpointError, match="Conv1/weight has shape .3, 2, 2., not 4-D"):
        read_nvidia_pickle(path)
