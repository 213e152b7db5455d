"""TorchScript and torch.export programs as generators: they carry their own architecture.

A TorchScript archive (``torch.jit.save`` of a traced or scripted module) holds
TorchScript code and its weights; a torch.export archive (``torch.export.save``,
``.pt2``) holds an ATen graph and its weights. Either loads with no
``--generator`` and runs tensor operations, not Python:

- TorchScript is recognised by its content (a zip holding ``code/`` or
  ``constants.pkl``, whatever the extension) and loaded by TorchScript's own
  unpickler and interpreter (no Python objects). Loading runs a class's
  ``__setstate__``, so an archive whose code defines one is refused before it is
  loaded. Then every function and method the archive compiled to, called from
  ``forward`` or not, is checked in every block and nested graph (``If``/``Loop``
  bodies, ``prim::fork`` subgraphs) against the operator allow-list of
  :mod:`gan_probe.models.operators`; anything else is refused by name. Its
  ``nz`` and ``output_range`` attributes, when present, must be a positive
  integer and a finite LOW < HIGH pair.
- torch.export's loader can run Python from a crafted file (sympy expressions
  are evaluated, guard code is executed, non-tensor constants are unpickled,
  AOTInductor libraries are loaded), so the archive is checked first
  (:func:`check_export_archive`): only the members a plain export writes, every
  pickled payload loadable with ``weights_only=True``, symbolic expressions made
  of symbols, numbers and sympy's integer functions, guard code that only
  compares input sizes (checked on its syntax tree), and every graph node an
  operator allowed by :mod:`gan_probe.models.operators` (or one of a few
  arithmetic builtins on sizes), nested graphs of ``cond``/``while_loop``/``map``
  included. The loaded graph is checked again before it runs. Members are read
  with the bounds of :mod:`gan_probe.models.archive` (sizes, JSON depth, every
  field's type).

A program's evaluations run under :func:`gan_probe.models.watchdog.evaluating`
(Ctrl-C at once, a bound on the time of one evaluation, on the command line)
with its warnings silenced.

What a program does not record comes from flags: ``--nz`` (read from a scripted
module's ``nz`` attribute or the export's input spec otherwise), the prior, and
``--output-range`` (a scripted module's ``output_range`` attribute otherwise).
A program exported with a fixed batch size is refused with the
``torch.export.Dim`` to use; a program whose samples mix in a batch (traced or
exported in training mode) is refused too.
"""

from __future__ import annotations

import ast
import io
import math
import operator
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan_probe.errors import CheckpointError, first_line
from gan_probe.models.archive import check_inflation, field, parse_json, read_member
from gan_probe.models.loaded import LoadedGenerator, LoadOptions, file_sha256, resolve_prior, wrap_module
from gan_probe.models.operators import export_target_refusal, schema_refusal, script_refusals
from gan_probe.models.watchdog import evaluating

NAME = "program"
TORCHSCRIPT = "torchscript"
EXPORT = "torch.export"

#: The largest ``nz`` attribute taken from a program (a larger one is a damaged or hostile attribute).
NZ_ATTRIBUTE_MAX = 1 << 20
#: Python callables an exported graph may call: arithmetic on sizes.
_EXPORT_BUILTINS: dict[str, Any] = {
    **{
        f"_operator.{n}": getattr(operator, n)
        for n in (
            "getitem",
            "add",
            "sub",
            "mul",
            "floordiv",
            "truediv",
            "mod",
            "neg",
            "pow",
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "and_",
            "or_",
            "not_",
        )
    },  # fmt: skip
    **{f"torch.{n}": getattr(torch, n) for n in ("sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite")},
    **{f"math.{n}": getattr(math, n) for n in ("floor", "ceil", "sqrt", "trunc")},
}
_ARCHIVE_MEMBERS = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[\w.-]+\.json|data/weights/[\w.-]+|data/constants/[\w.-]+|data/sample_inputs/[\w.-]+\.pt"
    r"|extra/[\w./-]+)"
)
_SYMBOL = re.compile(r"[a-z]{1,8}\d+")
_SYMPY_NAMES = {
    "Symbol", "Integer", "Float", "Rational", "true", "false", "True", "False", "oo", "zoo", "nan", "int_oo",
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite",
    "Max", "Min", "Abs", "Mod", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Piecewise", "ITE",
    "sqrt", "floor", "ceiling", "Pow", "Mul", "Add",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat",
    "Identity",
}  # fmt: skip


def program_kind(file: Path) -> str | None:
    """``torchscript`` for a TorchScript archive (by content), ``torch.export`` for a torch.export archive, else
    None (a torch.save file, or not a zip at all)."""
    try:
        if not zipfile.is_zipfile(file):
            return EXPORT if file.suffix == ".pt2" else None
        with zipfile.ZipFile(file) as zf:
            names = zf.namelist()
    except OSError:
        return None
    rel = [n.split("/", 1)[1] if "/" in n else n for n in names]
    if any(r.startswith("code/") or r == "constants.pkl" for r in rel):
        return TORCHSCRIPT
    if "archive_format" in rel or file.suffix == ".pt2":
        return EXPORT
    return None


def detect(file: Path | None, options: LoadOptions) -> bool:
    """A TorchScript or torch.export archive (by content; a ``.safetensors`` file is never one)."""
    return file is not None and file.suffix != ".safetensors" and file.is_file() and program_kind(file) is not None


def load(file: Path | None, options: LoadOptions, *, device: torch.device | str, dtype: torch.dtype) -> LoadedGenerator:
    """The program in ``file`` as a generator (:func:`load_program`, its kind read again from the file)."""
    kind = program_kind(file) if file is not None else None
    if file is None or kind is None:  # detect() claims programs only
        raise CheckpointError(f"{file} is not a TorchScript or torch.export program")
    return load_program(file, kind, options, device=device, dtype=dtype)


class ProgramModule(nn.Module):
    """A loaded program as an ``nn.Module`` mapping (B, nz) latents to outputs.

    A program's training mode was fixed when it was traced or exported, and a
    torch.export module refuses ``train()``/``eval()``: both are no-ops here.
    ``requires_grad_`` acts on the parameters one by one (ScriptModules refuse
    it). ``unsqueeze``: the program wants (B, nz, 1, 1).
    """

    def __init__(self, program: nn.Module, *, unsqueeze: bool = False) -> None:
        super().__init__()
        self.program = program
        self.unsqueeze = unsqueeze

    def train(self, mode: bool = True) -> ProgramModule:
        self.training = mode
        return self

    def requires_grad_(self, requires_grad: bool = True) -> ProgramModule:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.run(z[:, :, None, None] if self.unsqueeze else z)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The program on ``x`` as given, timed by the watchdog, its warnings (``aten::warn``) silenced."""
        with evaluating(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.program(x)


def load_torchscript(
    file: Path, *, read_range: bool = True
) -> tuple[nn.Module, int | None, tuple[float, float] | None]:
    """(the program, its ``nz`` attribute, its ``output_range`` attribute) from a TorchScript archive, checked
    (see the module docstring) before anything in it runs. ``read_range`` False: the range comes from a flag, the
    attribute is neither read nor checked."""
    _check_script_archive(file)
    # every function and method the archive defines ends up in this compilation unit (torch.jit.load's own steps;
    # torch's type stubs disagree with the bindings, hence Any)
    compiled: Any = torch._C.CompilationUnit()
    import_ir_module: Any = torch._C.import_ir_module
    try:
        cpp_module = import_ir_module(compiled, str(file), torch.device("cpu"), {}, False)
        program = torch.jit._recursive.wrap_cpp_module(cpp_module)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise CheckpointError(f"{file} is not a readable TorchScript archive: {_program_error(exc)}") from None
    refused = script_refusals(list(compiled.get_functions()))
    if refused:
        raise CheckpointError(
            f"{file} was refused: its TorchScript calls {'; '.join(refused[:3])}"
            f"{f' (and {len(refused) - 3} more)' if len(refused) > 3 else ''}; gan-probe runs programs made of "
            "tensor, shape and control-flow operators only"
        )
    if "forward" not in program._c._method_names():
        raise CheckpointError(f"{file}: the TorchScript program has no forward method")
    return program, _nz_attr(program, file), _range_attr(program, file) if read_range else None


def _check_script_archive(file: Path) -> None:
    """Bounded sizes (:func:`check_inflation`), and no ``__setstate__`` in the code: TorchScript runs it while the
    archive loads, before any check of the compiled program could."""
    try:
        with zipfile.ZipFile(file) as zf:
            check_inflation(file, zf)
            for name in zf.namelist():
                if name.endswith(".py") and "/code/" in f"/{name}":
                    if b"__setstate__" in read_member(file, zf, name):
                        raise CheckpointError(
                            f"{file} was refused: its TorchScript code ({name}) defines __setstate__, which "
                            "runs while the file loads; gan-probe never runs code from a checkpoint"
                        )
    except (OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{file} is not a readable TorchScript archive: {_program_error(exc)}") from None


def _nz_attr(program: Any, file: Path) -> int | None:
    if not hasattr(program, "nz"):
        return None
    value = program.nz
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= NZ_ATTRIBUTE_MAX:
        raise CheckpointError(
            f"{file}: the program's nz attribute is {value!r}; it must be an integer from 1 to {NZ_ATTRIBUTE_MAX}"
        )
    return value


def _range_attr(program: Any, file: Path) -> tuple[float, float] | None:
    if not hasattr(program, "output_range"):
        return None
    value = program.output_range
    if value is None:
        return None
    if not (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
        and value[0] < value[1]
    ):
        raise CheckpointError(
            f"{file}: the program's output_range attribute is {value!r}; it must be two finite numbers LOW < HIGH "
            "(--output-range overrides it)"
        )
    return float(value[0]), float(value[1])


def load_export(file: Path) -> tuple[nn.Module, int | None, bool]:
    """(the program's module, nz from its input spec, whether it wants (B, nz, 1, 1)) from a torch.export archive."""
    check_export_archive(file)
    try:
        ep = torch.export.load(str(file))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise CheckpointError(f"{file} is not a readable torch.export archive: {_program_error(exc)}") from None
    _check_export_graph(ep.graph_module, file)
    user_inputs = list(ep.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise CheckpointError(
            f"{file}: the exported program takes {len(user_inputs)} inputs ({', '.join(map(str, user_inputs))}); "
            "gan-probe feeds it one tensor of latents (B, nz)"
        )
    name = str(user_inputs[0])
    node = next((n for n in ep.graph.nodes if n.op == "placeholder" and n.name == name), None)
    val = node.meta.get("val") if node is not None else None
    shape = tuple(val.shape) if isinstance(val, torch.Tensor) else None
    if shape is None or not (len(shape) == 2 or (len(shape) == 4 and tuple(shape[2:]) == (1, 1))):
        raise CheckpointError(
            f"{file}: the exported program's input {name} has shape {shape}; gan-probe feeds latents (B, nz) "
            "or (B, nz, 1, 1)"
        )
    batch, width = shape[0], shape[1]
    if isinstance(batch, int):
        raise CheckpointError(
            f"{file}: the program was exported with a fixed batch size of {batch} (input {name}: "
            f"{[int(s) for s in shape]}); gan-probe evaluates batches of latents: export it with a dynamic batch, "
            f"torch.export.export(G, (z,), dynamic_shapes={{{name!r}: {{0: torch.export.Dim('batch')}}}})"
        )
    nz = int(width) if isinstance(width, int) else None
    return ProgramModule(ep.module(), unsqueeze=len(shape) == 4), nz, len(shape) == 4


def check_export_archive(file: Path) -> None:
    """Refuse a torch.export archive whose loading could run Python (see the module docstring)."""
    try:
        with zipfile.ZipFile(file) as zf:
            check_inflation(file, zf)
            names = [n for n in zf.namelist() if not n.endswith("/")]
            roots = {n.split("/", 1)[0] for n in names if "/" in n}
            if len(roots) != 1 or any("/" not in n for n in names):
                raise CheckpointError(f"{file} is not a torch.export archive (expected one top-level folder)")
            root = roots.pop() + "/"
            rel = {n[len(root) :]: n for n in names}
            if "archive_format" not in rel or read_member(file, zf, rel["archive_format"], 64) != b"pt2":
                raise CheckpointError(
                    f"{file} is not a torch.export archive in the current format (archive_format 'pt2'); "
                    "save it again with torch.export.save from torch >= 2.8"
                )
            for r in rel:
                if not _ARCHIVE_MEMBERS.fullmatch(r):
                    raise CheckpointError(
                        f"{file} was refused: it holds {r!r}, which a plain torch.export.save does not write "
                        "(compiled code or objects gan-probe does not load)"
                    )
            for r, n in rel.items():
                if r.startswith("models/"):
                    _check_model_json(parse_json(read_member(file, zf, n), file, r), file, r)
                elif r.endswith("_config.json"):
                    _check_payloads(zf, root, r, file)
                elif r.endswith(".pt"):
                    _check_pickle(read_member(file, zf, n), file, r)
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"{file} is not a readable torch.export archive: {_program_error(exc)}") from None


def _check_pickle(data: bytes, file: Path, member: str) -> None:
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything but plain tensors and containers is refused
        raise CheckpointError(
            f"{file} was refused: {member} holds pickled objects other than tensors ({_program_error(exc)}); "
            "gan-probe never runs code from a checkpoint"
        ) from None


def _check_payloads(zf: zipfile.ZipFile, root: str, member: str, file: Path) -> None:
    config = field(parse_json(read_member(file, zf, root + member), file, member), "config", dict, file, member, {})
    folder = member.rsplit("/", 1)[0] + "/"
    for fqn, meta in config.items():
        where = f"{member} config[{fqn!r}]"
        path = field(meta, "path_name", str, file, where, "")
        if path.startswith(("custom_obj_", "opaque_obj_")):
            raise CheckpointError(
                f"{file} was refused: constant {fqn!r} is a pickled object ({path}), not a tensor; "
                "gan-probe never runs code from a checkpoint"
            )
        if field(meta, "use_pickle", bool, file, where, False):
            if root + folder + path not in zf.NameToInfo:
                raise CheckpointError(f"{file} was refused: {where}.path_name names {path!r}, which it does not hold")
            _check_pickle(read_member(file, zf, root + folder + path), file, folder + path)


def _check_model_json(model: Any, file: Path, member: str) -> None:
    for guard in field(model, "guards_code", list, file, member, None) or []:
        if not isinstance(guard, str) or not _safe_guard(guard):
            raise CheckpointError(
                f"{file} was refused: {member} carries guard code {str(guard)[:80]!r} (Python source run on "
                "loading) that is not a plain comparison of input sizes; gan-probe never runs code from a checkpoint"
            )
    for node in _walk(model):
        target = node.get("target")
        if isinstance(target, str) and "inputs" in node:
            why = _target_refusal(target)
            if why is not None:
                raise CheckpointError(
                    f"{file} was refused: its graph calls {target!r} ({why}); gan-probe runs tensor, shape and "
                    "control-flow operators only"
                )
        expr = node.get("expr_str")
        if isinstance(expr, str) and not _safe_sym_expr(expr):
            raise CheckpointError(f"{file} was refused: its symbolic shape expression {expr[:80]!r} is not plain")
    for name in field(model, "range_constraints", dict, file, member, {}):
        if not _SYMBOL.fullmatch(str(name)):
            raise CheckpointError(f"{file} was refused: its range constraint names {str(name)[:40]!r}")


def _walk(obj: Any) -> Iterator[dict]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _target_refusal(target: str) -> str | None:
    """None when a call target in an exported graph's JSON is allowed (an operator by
    :func:`~gan_probe.models.operators.export_target_refusal`, or an arithmetic builtin on sizes), else why not."""
    if target in _EXPORT_BUILTINS:
        return None
    return export_target_refusal(target)


_GUARD_NODES = (
    ast.Expression, ast.Compare, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Constant, ast.Name, ast.Subscript, ast.Attribute,
    ast.Call, ast.Load,
)  # fmt: skip
_GUARD_ATTRIBUTES = {"size", "stride", "storage_offset", "dim", "shape", "isnan", "inf"}


def _safe_guard(text: str) -> bool:
    """A guard torch.export writes: comparisons of input sizes (``L['z'].size()[0] == L['noise'].size()[0]``),
    numbers and strings, ``math.isnan``/``math.inf``; no other names, attributes or calls."""
    if len(text) > 2000:
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            return False
        if isinstance(node, ast.Name) and node.id not in ("L", "math"):
            return False
        if isinstance(node, ast.Attribute) and node.attr not in _GUARD_ATTRIBUTES:
            return False
        if isinstance(node, ast.Call) and (node.keywords or not isinstance(node.func, ast.Attribute)):
            return False
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str, bool, type(None))):
            return False
    return True


def _safe_sym_expr(text: str) -> bool:
    """A sympy expression made of symbols (s0, u1, ...), numbers and sympy's integer functions only."""
    if len(text) > 2000 or "__" in text or re.search(r"\.\s*[A-Za-z_]", text):
        return False
    if not re.fullmatch(r"[A-Za-z0-9_ +\-*/%(),.'<>=!&|~\[\]]*", text):
        return False
    if any(not _SYMBOL.fullmatch(q) for q in re.findall(r"'([^']*)'", text)):
        return False
    unquoted = re.sub(r"'[^']*'", "", text)
    return all(n in _SYMPY_NAMES or _SYMBOL.fullmatch(n) for n in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", unquoted))


def _check_export_graph(graph_module: nn.Module, file: Path) -> None:
    """Every node of every graph (nested graphs of higher-order operators included) is a placeholder, output,
    attribute or a call of an allowed operator (:mod:`gan_probe.models.operators`) or arithmetic builtin."""
    allowed = set(_EXPORT_BUILTINS.values())
    for module in graph_module.modules():
        graph = getattr(module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            target = node.target
            why: str | None = f"a {node.op} is not an operator call"
            if node.op == "call_function":
                if any(target is a for a in allowed):
                    why = None
                elif isinstance(target, torch._ops.HigherOrderOperator):
                    why = _target_refusal(f"torch.ops.higher_order.{target.name()}")
                elif isinstance(target, torch._ops.OpOverload):
                    why = schema_refusal(target._schema)
                else:
                    why = "is not an operator"
            if why is not None:
                raise CheckpointError(
                    f"{file} was refused: its graph has a {node.op} of {target!r} ({why}); gan-probe runs tensor, "
                    "shape and control-flow operators only"
                )


def _program_error(exc: BaseException) -> str:
    """The line of an error worth showing: its first (:func:`first_line`), or for an error raised inside the
    TorchScript interpreter (whose first line only says so) its last, where the program's own error is
    (``builtins.ValueError: ...``)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if "TorchScript interpreter" in (lines or [""])[0] and len(lines) > 1:
        return lines[-1].removeprefix("builtins.")
    return first_line(exc)


__all__ = [
    "EXPORT",
    "NAME",
    "TORCHSCRIPT",
    "ProgramModule",
    "check_export_archive",
    "detect",
    "load",
    "load_export",
    "load_program",
    "load_torchscript",
    "program_kind",
]


def load_program(
    file: Path, kind: str, options: LoadOptions, *, device: torch.device | str, dtype: torch.dtype
) -> LoadedGenerator:
    """A TorchScript (``kind`` TORCHSCRIPT) or torch.export (EXPORT) program as a generator."""
    for flag, value in (("--generator", options.generator), ("--arch", options.arch), ("--key", options.key)):
        if value is not None:
            raise CheckpointError(
                f"{file} is a {kind} program: it carries its own architecture and weights; drop {flag}"
            )
    unsqueeze = False
    range_attr = None
    if kind == TORCHSCRIPT:
        program, nz_found, range_attr = load_torchscript(file, read_range=options.output_range is None)
    else:
        program, nz_found, unsqueeze = load_export(file)
    if options.nz is not None and nz_found is not None and options.nz != nz_found:
        raise CheckpointError(f"{file}: --nz {options.nz} does not match the program, which takes nz = {nz_found}")
    nz = options.nz or nz_found
    if nz is None:
        raise CheckpointError(
            f"{file}: the {kind} program does not record its latent size (no 'nz' attribute); give --nz", param="nz"
        )
    module = program if isinstance(program, ProgramModule) else ProgramModule(program)
    if kind == TORCHSCRIPT:
        unsqueeze = _wants_4d(module, nz)
        module.unsqueeze = unsqueeze
    try:
        gen = wrap_module(
            module,
            nz=nz,
            prior=resolve_prior(None, options),
            arch=kind,
            config={"nz": nz, "input": "(B, nz, 1, 1)" if unsqueeze else "(B, nz)"},
            output_range=range_attr,
            provenance=f"{kind} program {file.name}",
            path=str(file),
            sha256=file_sha256(file),
            source=kind,
            device=device,
            dtype=dtype,
            seed=options.seed,
        )
    except CheckpointError as exc:
        if exc.param != "generator":
            raise
        # the check of a module's output names --generator, which a program does not come from; say what failed
        what = str(exc).removeprefix("the generator ")
        cause = exc.__context__
        if cause is not None:  # the module raised: show its own error, not TorchScript's first line
            what = f"{what.split(': ', 1)[0]}: {_program_error(cause)}"
        raise CheckpointError(f"{file}: the {kind} program {what}") from None
    _check_batch(gen, file)
    return gen


def _wants_4d(module: ProgramModule, nz: int) -> bool:
    """Whether a TorchScript program fails on (2, nz) latents but runs on (2, nz, 1, 1)."""
    param = next(iter(module.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    z = torch.zeros(2, nz, dtype=dtype)
    with torch.no_grad():
        try:
            module.run(z)
            return False
        except Exception:  # noqa: BLE001 - try the DCGAN-style (B, nz, 1, 1) input next
            try:
                module.run(z[:, :, None, None])
            except Exception:  # noqa: BLE001 - neither: wrap_module reports the (B, nz) failure
                return False
            return True


def _check_batch(gen: LoadedGenerator, file: Path) -> None:
    """The program must take any batch size and keep samples apart (no batch statistics)."""
    z = gen.prior.sample(3, gen.nz, generator=torch.Generator().manual_seed(7)).to(gen.device, gen.dtype)
    try:
        with torch.no_grad():
            whole, single = gen(z), gen(z[1:2])
    except Exception as exc:  # noqa: BLE001 - the program fixed a batch size when it was traced
        raise CheckpointError(
            f"{file}: the program fails on a batch of 3 latents ({_program_error(exc)}); it was probably traced "
            "with a fixed batch size: script it (torch.jit.script) or export it with a dynamic batch "
            "(torch.export.Dim)"
        ) from None
    scale = float(whole.abs().max()) + 1e-30
    if not torch.allclose(whole[1:2], single, rtol=1e-4, atol=1e-5 * scale):
        raise CheckpointError(
            f"{file}: the program's output for a latent depends on the other latents of its batch (traced or "
            "exported in training mode, e.g. BatchNorm on batch statistics?): save it after model.eval()"
        )
