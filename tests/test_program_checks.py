"""Hostile programs and archives: every TorchScript function and nested graph is checked against the operator
allow-list before anything runs, archives are read with bounds, and a program that never returns is stopped.

Each hostile file is built in tmp_path and run through the command line; the run must end with exit 1, one
line naming the operator, field or member, nothing in --out, and no side effect (the file aten::save would
write does not exist)."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gan_probe.models import DCGANGenerator, LoadOptions, MLPGenerator, archive, load_generator
from gan_probe.models.operators import export_target_refusal, operator_refusal
from tests.conftest import assert_refused, invoke
from tests.test_programs import NZ, Small, _export, _tampered

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


@torch.jit.script
def save_to(z: torch.Tensor, path: str) -> torch.Tensor:
    torch.save(z, path)
    return z


class Payload(nn.Module):
    """A generator (B, nz) -> (B, nz) whose forward is harmless; subclasses hide ``torch.save(z, path)``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.nz = NZ
        self.path = path

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z)


class Forked(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.jit.wait(torch.jit.fork(save_to, z, self.path)) * 2


class Awaited(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.jit._awaitable_wait(torch.jit._awaitable(save_to, z, self.path)) * 2


class InIf(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if bool(z.sum() > -1e30):
            torch.save(z, self.path)
        return torch.tanh(z)


class InLoop(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for _ in range(z.shape[0]):
            torch.save(z, self.path)
        return torch.tanh(z)


class Writer(nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z

    @torch.jit.export
    def write(self, z: torch.Tensor) -> torch.Tensor:
        torch.save(z, self.path)
        return z


class CallsMethod(Payload):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.sub = Writer(path)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.sub.write(z) * 2


class CallsFunction(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return save_to(z, self.path) * 2


class OtherMethod(Payload):
    @torch.jit.export
    def dump(self, z: torch.Tensor) -> torch.Tensor:
        torch.save(z, self.path)
        return z


class Prints(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        print('{"not": "json"}')
        return torch.tanh(z)


class ReadsFile(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, size=4, dtype=torch.uint8)
        return z + data.sum().to(z.dtype)


class Seeds(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)
        return torch.tanh(z)


HOSTILE = [
    (Forked, "prim::fork (starts a thread)"),
    (Awaited, "prim::awaitable"),
    (InIf, "aten::save (writes a file)"),
    (InLoop, "aten::save (writes a file)"),
    (CallsMethod, "aten::save (writes a file) in __torch__.tests.test_program_checks.Writer.write"),
    (CallsFunction, "aten::save (writes a file) in __torch__.tests.test_program_checks.save_to"),
    (OtherMethod, "aten::save (writes a file) in __torch__.tests.test_program_checks.OtherMethod.dump"),
    (Prints, "prim::Print (prints)"),
    (ReadsFile, "aten::from_file (reads a file)"),
    (Seeds, "aten::manual_seed (sets the global random seed)"),
]


@pytest.mark.parametrize(("module", "needle"), HOSTILE, ids=[m.__name__ for m, _ in HOSTILE])
def test_hostile_torchscript_is_refused_before_it_runs(tmp_path, runner, module, needle):
    marker = tmp_path / "written.pt"
    target = marker
    if module is ReadsFile:  # from_file maps an existing file; the payload would read it
        target = tmp_path / "secret"
        target.write_bytes(b"abcd")
    path = tmp_path / "program.pt"
    torch.jit.save(torch.jit.script(module(str(target))), str(path))
    out = tmp_path / "o"
    result = invoke(runner, ["loglik", path, "--n", "2", "--out", out, "--json"])
    assert_refused(result, needle, out=out)
    assert "was refused: its TorchScript calls" in result.stderr
    assert not marker.exists()


class SetsState(Payload):
    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool, int]:
        return (self.path, self.training, self.nz)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool, int]) -> None:
        torch.save(torch.zeros(1), state[0])
        self.path = state[0]
        self.training = state[1]
        self.nz = state[2]


def test_setstate_is_refused_before_the_archive_loads(tmp_path, runner):
    marker = tmp_path / "written.pt"
    path = tmp_path / "program.pt"
    torch.jit.save(torch.jit.script(SetsState(str(marker))), str(path))
    assert not marker.exists()
    out = tmp_path / "o"
    assert_refused(invoke(runner, ["info", path, "--out", out]), "defines __setstate__", out=out)
    assert not marker.exists()


class Warns(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        warnings.warn("\x1b[31mred\x1b[0m from the program", stacklevel=2)
        return torch.tanh(z)


def test_program_warnings_are_allowed_and_silenced(tmp_path, runner):
    """aten::warn is on the allow-list (torch's own F.interpolate calls it); nothing it says reaches a stream."""
    path = tmp_path / "warns.pt"
    torch.jit.save(torch.jit.script(Warns(str(tmp_path / "unused"))), str(path))
    result = invoke(runner, ["loglik", path, "--n", "2", "--out", tmp_path / "o", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["results"]["summary"]["num_finite"] == 2
    assert "\x1b" not in result.stderr and "from the program" not in result.stderr


class StyleLike(nn.Module):
    """A StyleGAN-like scripted generator: mapping MLP, a loop over synthesis blocks with modulation, upsampling
    (F.interpolate, whose TorchScript code calls aten::warn), instance and group norms, a while loop."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.nz = NZ
        self.output_range = (-1.0, 1.0)
        self.mapping = nn.Sequential(nn.Linear(NZ, 8), nn.LeakyReLU(0.2), nn.Linear(8, 8))
        self.blocks = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1) for _ in range(2)])
        self.norms = nn.ModuleList([nn.InstanceNorm2d(8, affine=True), nn.GroupNorm(2, 8)])
        self.register_buffer("const", torch.randn(1, 8, 2, 2))
        self.to_img = nn.Conv2d(8, 1, 1)

    def modulate(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * (1 + 0.1 * w[:, :, None, None])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mapping(z)
        x = self.const.expand(z.shape[0], -1, -1, -1)
        for block, norm in zip(self.blocks, self.norms):
            x = self.modulate(nn.functional.leaky_relu(norm(block(x)), 0.2), w)
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        steps = 0
        while steps < 2:
            x = x + 0.01 * torch.tanh(x)
            steps += 1
        return torch.tanh(self.to_img(x))


@pytest.mark.parametrize("kind", ["scripted-dcgan", "traced-mlp", "scripted-stylegan", "exported-dcgan"])
def test_real_generator_programs_pass_the_allow_list(tmp_path, kind):
    torch.manual_seed(0)
    path = tmp_path / "g.pt"
    if kind == "scripted-dcgan":
        module: nn.Module = DCGANGenerator(NZ, 4, 1, 16).eval()
        torch.jit.save(torch.jit.script(module), str(path))
        z = torch.randn(3, NZ, dtype=torch.float64)
        reference = module.double()(z[:, :, None, None])
    elif kind == "traced-mlp":
        module = MLPGenerator(NZ, [12], [6], "tanh", "tanh").eval()
        torch.jit.save(torch.jit.trace(module, torch.randn(2, NZ)), str(path))
        z = torch.randn(3, NZ, dtype=torch.float64)
        reference = module.double()(z)
    elif kind == "scripted-stylegan":
        module = StyleLike().eval()
        torch.jit.save(torch.jit.script(module), str(path))
        z = torch.randn(3, NZ, dtype=torch.float64)
        reference = module.double()(z)
    else:
        module = DCGANGenerator(NZ, 4, 1, 16).eval()
        path = tmp_path / "g.pt2"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(
                module, (torch.randn(2, NZ, 1, 1),), dynamic_shapes={"z": {0: torch.export.Dim("batch")}}
            )
            torch.export.save(exported, path)
        z = torch.randn(3, NZ, dtype=torch.float64)
        reference = module.double()(z[:, :, None, None])
    gen = load_generator(path, LoadOptions(nz=NZ), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(gen(z), reference.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "overload", "allowed"),
    [
        ("aten::conv_transpose2d", "input", True),
        ("aten::add_", "Tensor", True),
        ("aten::warn", "", True),
        ("prim::If", None, True),
        ("aten::save", "", False),
        ("aten::_print", "", False),
        ("aten::set_grad_enabled", "", False),
        ("aten::wait", "", False),
        ("aten::record_stream", "", False),
        ("prim::PythonOp", None, False),
        ("prim::TimePoint", None, False),
        ("quantized::conv2d", None, False),
    ],
)
def test_operator_allow_list_by_schema(name, overload, allowed):
    assert (operator_refusal(name, overload) is None) is allowed


# --- attributes and load errors --------------------------------------------------------------------------------


class Attributes(nn.Module):
    def __init__(self, nz: Any, output_range: Any) -> None:
        super().__init__()
        self.nz = nz
        self.output_range = output_range

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z)


@pytest.mark.parametrize(
    ("nz", "output_range", "needle"),
    [
        (-5, (-1.0, 1.0), "nz attribute is -5"),
        (0, (-1.0, 1.0), "nz attribute is 0"),
        (10**12, (-1.0, 1.0), "nz attribute is 1000000000000"),
        (NZ, (1.0, -1.0), "output_range attribute is (1.0, -1.0)"),
        (NZ, (float("nan"), 1.0), "output_range attribute is (nan, 1.0)"),
        (NZ, (0.0, 1.0, 2.0), "output_range attribute is (0.0, 1.0, 2.0)"),
    ],
)
def test_bad_program_attributes_are_named(tmp_path, runner, nz, output_range, needle):
    path = tmp_path / "attrs.pt"
    torch.jit.save(torch.jit.script(Attributes(nz, output_range)), str(path))
    out = tmp_path / "o"
    assert_refused(invoke(runner, ["loglik", path, "--n", "2", "--out", out]), needle, out=out)


def test_bad_output_range_attribute_is_not_read_when_the_flag_gives_one(tmp_path):
    path = tmp_path / "attrs.pt"
    torch.jit.save(torch.jit.script(Attributes(NZ, (1.0, -1.0))), str(path))
    assert load_generator(path, LoadOptions(output_range="0,1")).output_range == (0.0, 1.0)


class Raises(Payload):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        raise ValueError("the program's own complaint")


def test_program_failures_say_what_failed_without_blaming_an_absent_flag(tmp_path, runner):
    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(Small()), str(good))
    code = next(n for n in zipfile.ZipFile(good).namelist() if "/code/" in n and n.endswith(".py"))
    broken = tmp_path / "broken.pt"
    _rezip(good, broken, set(), {code: b"class Small(Module:\n"})
    result = invoke(runner, ["info", broken])
    assert result.exit_code == 1 and "--generator" not in result.stderr
    assert "is not a readable TorchScript archive: " in result.stderr and len(result.stderr.splitlines()) == 1
    raises = tmp_path / "raises.pt"
    torch.jit.save(torch.jit.script(Raises("unused")), str(raises))
    result = invoke(runner, ["info", raises])
    assert result.exit_code == 1 and "--generator" not in result.stderr
    assert "the program's own complaint" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --- torch.export graphs ---------------------------------------------------------------------------------------


class Branches(nn.Module):
    """A cond on a buffer (not on the batch, so that samples stay apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Small(seed=3)
        self.register_buffer("flag", torch.ones(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cond(self.flag.sum() > 0, lambda v: self.body(v), lambda v: self.body(v) * 2, (z,))


def _nested_nodes(model: dict) -> list[dict]:
    """The nodes of the graphs nested in an exported model.json (a cond's branches), not the top graph's."""
    top = model["graph_module"]["graph"]["nodes"]
    found: list[dict] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            if "nodes" in obj and obj["nodes"] is not top:
                found.extend(n for n in obj["nodes"] if isinstance(n, dict) and "target" in n)
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(model)
    return found


def test_export_target_nested_in_a_cond_branch_is_checked(tmp_path, runner):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = _export(tmp_path, Branches(), "cond.pt2")
    assert load_generator(path, dtype=torch.float64).nz == NZ  # the plain cond program loads

    def edit(members: dict[str, bytes], root: str) -> None:
        name = root + "models/model.json"
        model = json.loads(members[name])
        node = next(n for n in _nested_nodes(model) if n["target"].startswith("torch.ops.aten."))
        node["target"] = "torch.ops.aten.save.default"
        members[name] = json.dumps(model).encode()

    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    root = next(iter(members)).split("/", 1)[0] + "/"
    edit(members, root)
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    out = tmp_path / "o"
    assert_refused(
        invoke(runner, ["loglik", bad, "--n", "2", "--out", out]), "calls 'torch.ops.aten.save.default'", out=out
    )


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("torch.ops.aten.linear.default", True),
        ("torch.ops.aten.conv_transpose2d.input", True),
        ("torch.ops.higher_order.cond", True),
        ("torch.ops.aten.from_file.default", False),
        ("torch.ops.aten._print.default", False),
        ("torch.ops.higher_order.triton_kernel_wrapper_mutation", False),
        ("torch.ops.higher_order.with_effects", False),
        ("torch.ops.mylib.evil.default", False),
        ("torch.ops.aten.linear.nosuchoverload", False),
    ],
)
def test_export_targets_by_allow_list(target, allowed):
    assert (export_target_refusal(target) is None) is allowed


# --- bounded archives ------------------------------------------------------------------------------------------


def _set_model(value: Any) -> Callable[[dict[str, bytes], str], None]:
    def edit(members: dict[str, bytes], root: str) -> None:
        members[root + "models/model.json"] = json.dumps(value).encode()

    return edit


def _edit_model_field(key: str, value: Any) -> Callable[[dict[str, bytes], str], None]:
    def edit(members: dict[str, bytes], root: str) -> None:
        name = root + "models/model.json"
        model = json.loads(members[name])
        model[key] = value
        members[name] = json.dumps(model).encode()

    return edit


def _set_constants(value: Any) -> Callable[[dict[str, bytes], str], None]:
    def edit(members: dict[str, bytes], root: str) -> None:
        members[root + "data/constants/model_constants_config.json"] = json.dumps(value).encode()

    return edit


def _deep_json(members: dict[str, bytes], root: str) -> None:
    members[root + "models/model.json"] = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_set_model([1, 2, 3]), "models/model.json is an array, not an object"),
        (_edit_model_field("guards_code", {"a": 1}), "models/model.json.guards_code is an object, not an array"),
        (_edit_model_field("range_constraints", [1]), "models/model.json.range_constraints is an array"),
        (_set_constants([]), "model_constants_config.json is an array, not an object"),
        (_set_constants({"config": []}), "model_constants_config.json.config is an array, not an object"),
        (_set_constants({"config": {"c": [1]}}), "config['c'] is an array, not an object"),
        (_set_constants({"config": {"c": {"path_name": 3}}}), "config['c'].path_name is a number, not a string"),
        (_deep_json, "models/model.json nests 100000 levels deep"),
    ],
    ids=[
        "model-list",
        "guards-dict",
        "constraints-list",
        "constants-list",
        "config-list",
        "entry-list",
        "path-number",
        "deep-json",
    ],  # fmt: skip
)
def test_export_archive_fields_are_type_checked(tmp_path, runner, edit, needle):
    path = _tampered(tmp_path, edit)
    out = tmp_path / "o"
    assert_refused(invoke(runner, ["loglik", path, "--n", "2", "--out", out]), needle, out=out)


def _rezip(source: Path, dest: Path, compress: set[str], pad: dict[str, bytes] | None = None) -> None:
    """``source`` rewritten to ``dest``: members whose name ends with one in ``compress`` deflated, ``pad`` members
    added or replaced."""
    with zipfile.ZipFile(source) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members.update(pad or {})
    with zipfile.ZipFile(dest, "w") as zf:
        for name, data in members.items():
            method = zipfile.ZIP_DEFLATED if any(name.endswith(c) for c in compress) else zipfile.ZIP_STORED
            zf.writestr(name, data, compress_type=method)


def test_member_inflating_past_the_limit_is_refused(tmp_path, runner, monkeypatch):
    monkeypatch.setattr(archive, "MEMBER_LIMIT", 1 << 20)
    monkeypatch.setattr(archive, "INFLATION_BUDGET", 64 << 20)
    good = _export(tmp_path, Small())
    root = zipfile.ZipFile(good).namelist()[0].split("/", 1)[0]
    model = json.loads(zipfile.ZipFile(good).read(f"{root}/models/model.json"))
    padded = json.dumps(model).encode() + b" " * (3 << 20)  # valid JSON, 3 MB of trailing spaces
    bomb = tmp_path / "bomb.pt2"
    _rezip(good, bomb, {"model.json"}, {f"{root}/models/model.json": padded})
    assert bomb.stat().st_size < 1 << 20
    out = tmp_path / "o"
    assert_refused(
        invoke(runner, ["loglik", bomb, "--n", "2", "--out", out]),
        f"member '{root}/models/model.json' declares",
        out=out,
    )


def _lie_about_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size ``member``'s local and central headers declare."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data[info.header_offset + 22 : info.header_offset + 26] = struct.pack("<I", size)
    name = member.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack("<H", data[at + 28 : at + 30])[0]
        if bytes(data[at + 46 : at + 46 + length]) == name:
            data[at + 24 : at + 28] = struct.pack("<I", size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def test_member_whose_header_lies_about_its_size_is_refused(tmp_path, runner):
    good = _export(tmp_path, Small())
    root = zipfile.ZipFile(good).namelist()[0].split("/", 1)[0]
    lying = tmp_path / "lying.pt2"
    _rezip(good, lying, {"model.json"})
    _lie_about_size(lying, f"{root}/models/model.json", 100)
    out = tmp_path / "o"
    result = invoke(runner, ["loglik", lying, "--n", "2", "--out", out])
    assert_refused(result, f"member '{root}/models/model.json' is corrupt", out=out)


@pytest.mark.parametrize("kind", ["torch.save", "torchscript", "torch.export"])
def test_archives_read_by_torch_have_an_inflation_budget(tmp_path, runner, monkeypatch, kind):
    monkeypatch.setattr(archive, "INFLATION_BUDGET", 1 << 20)
    source = tmp_path / "source"
    zeros = torch.zeros(1 << 20)  # 4 MiB that deflate to a few kB
    if kind == "torch.save":
        torch.save({"fc.weight": zeros}, source)
        weights = ""
    elif kind == "torchscript":
        holder = Small()
        holder.register_buffer("padding", zeros)
        torch.jit.save(torch.jit.script(holder), str(source))
        weights = ""
    else:
        source = _export(tmp_path, Small())
        weights = "weight_0"
    bomb = tmp_path / ("bomb.pt2" if kind == "torch.export" else "bomb.pt")
    names = zipfile.ZipFile(source).namelist()
    root = names[0].split("/", 1)[0]
    pad = {f"{root}/data/weights/{weights}": zeros.numpy().tobytes()} if weights else None
    _rezip(source, bomb, {"/data/0", "/data/1", "weight_0"} if weights else {"/data/0", "/data/1", "/data/2"}, pad)
    assert bomb.stat().st_size < 1 << 20
    out = tmp_path / "o"
    assert_refused(invoke(runner, ["loglik", bomb, "--n", "2", "--out", out]), "inflate by", out=out)


def test_json_depth_is_counted_outside_strings():
    assert archive.json_depth(b'{"a": [[1], {"b": "[[[[["}]}') == 3
    assert archive.json_depth(b'"\\"[[["') == 0


# --- a program that never returns ------------------------------------------------------------------------------


class Spins(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.nz = NZ

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        while bool(x.sum() == x.sum()):
            x = x * 1.0
        return x


def _spinning(tmp_path: Path, seconds: str) -> subprocess.Popen:
    path = tmp_path / "spins.pt"
    torch.jit.save(torch.jit.script(Spins()), str(path))
    env = {**os.environ, "GAN_PROBE_PROGRAM_SECONDS": seconds}
    return subprocess.Popen(
        [sys.executable, "-m", "gan_probe", "loglik", str(path), "--n", "2", "--out", str(tmp_path / "o")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_program_that_never_returns_ends_after_the_time_bound(tmp_path):
    proc = _spinning(tmp_path, "2")
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert "ran for more than 2 s on one evaluation" in stderr and "GAN_PROBE_PROGRAM_SECONDS" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "o").exists()


def _pipes(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("pipe:")
        except OSError:
            pass
    return count


def test_ctrl_c_stops_a_program_that_never_returns(tmp_path):
    proc = _spinning(tmp_path, "300")
    try:
        # the watchdog's signal pipe (two fds beside stdout and stderr) appears when the first evaluation begins
        deadline = time.monotonic() + 90
        while proc.poll() is None and _pipes(proc.pid) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and _pipes(proc.pid) >= 4
        time.sleep(1)  # inside the loop that never ends
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        waited = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert waited < 5, waited
    assert "interrupted" in stderr and "Traceback" not in stderr and not (tmp_path / "o").exists()


def test_watchdog_is_off_outside_the_command_line(tmp_path, monkeypatch):
    """The Python API runs a program unguarded: no thread is started, the process is never ended for it."""
    from gan_probe.models import watchdog

    monkeypatch.setattr(watchdog._State, "started", False)
    path = tmp_path / "small.pt"
    torch.jit.save(torch.jit.script(Small()), str(path))
    gen = load_generator(path)
    with torch.no_grad():
        gen(torch.zeros(2, NZ))
    assert not watchdog._State.started


@pytest.mark.parametrize("module", [Forked, SetsState])
def test_the_payloads_are_real(tmp_path, module):
    """Loaded and run by torch itself (no gan-probe), the payloads write their file: the refusals above matter."""
    marker = tmp_path / "written.pt"
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module(str(marker))), buffer)
    buffer.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(buffer)(torch.zeros(1, NZ))
    assert marker.exists()
