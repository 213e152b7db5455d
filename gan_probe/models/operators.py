"""Which operators a TorchScript or torch.export program may call: an allow-list, decided by name and schema.

A program is a graph of operator calls; gan-probe runs it only when every
operator is tensor maths, shape arithmetic or control flow. The rule:

- ``prim::`` operators: only those named in :data:`PRIM_ALLOWED` (constants,
  attributes, containers, ``If``/``Loop``, calls of the program's own methods
  and functions, raising an error, type and shape queries).
- ``aten::`` (and torch.export's ``prims::``) operators: an overload is allowed
  when its registered schema (``torch._C._jit_get_all_schemas``) speaks only of
  values (every argument and result typed with :data:`VALUE_TYPES`: tensors,
  numbers, booleans, strings, devices, and lists, tuples, dicts and optionals
  of them; a random ``Generator?`` may only be None, since no allowed operator
  makes one), and either returns something or writes one of its own
  arguments. An operator that returns nothing and writes no argument can only
  act outside the program (``aten::save``, ``aten::_print``,
  ``aten::manual_seed``, ``aten::set_grad_enabled``); one that takes a
  ``Storage``, ``Future``, ``RRef``, ``Stream`` or custom class reaches
  memory, threads or processes (``aten::wait``, ``aten::to_here``).
- :data:`REFUSED` names the operators refused whatever their schema, with the
  reason given in the message: the few whose schema looks like maths but which
  touch files or global state (``aten::from_file``, ``aten::set_``), and every
  printing, thread, remote-call and Python operator.
- Any other namespace (custom operators, ``quantized::``, ``c10d::``) is refused.

``aten::warn`` is allowed: TorchScript's own ``nn.functional`` code calls it
(``F.interpolate``), and :class:`~gan_probe.models.programs.ProgramModule`
silences the warnings of a program while it runs. ``prim::RaiseException`` is
allowed too: it only ends an evaluation with an error (torch's own modules
check their inputs with it).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import torch

#: prim:: operators a program may call (everything else in prim:: is refused).
PRIM_ALLOWED = frozenset(
    {
        "prim::Constant", "prim::GetAttr", "prim::SetAttr", "prim::CallMethod", "prim::CallFunction",
        "prim::If", "prim::Loop", "prim::RaiseException", "prim::Uninitialized",
        "prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct", "prim::TupleUnpack", "prim::TupleIndex",
        "prim::TupleSlice", "prim::DictConstruct", "prim::DictIndex", "prim::CreateObject", "prim::ConstantChunk",
        "prim::NumToTensor", "prim::unchecked_cast", "prim::unchecked_unwrap_optional", "prim::isinstance",
        "prim::StringIndex", "prim::EnumName", "prim::EnumValue", "prim::tolist", "prim::rangelist",
        "prim::dtype", "prim::device", "prim::layout", "prim::requires_grad", "prim::data", "prim::shape",
        "prim::itemsize", "prim::nbytes", "prim::min", "prim::max", "prim::abs", "prim::index",
        "prim::is_cpu", "prim::is_cuda", "prim::is_xpu", "prim::is_mps", "prim::is_meta", "prim::is_sparse",
        "prim::is_sparse_csr", "prim::is_quantized", "prim::is_mkldnn", "prim::is_nested",
    }
)  # fmt: skip

#: Operators refused by name, with what they do.
REFUSED: dict[str, str] = {
    "prim::Print": "prints",
    "aten::_print": "prints",
    "aten::save": "writes a file",
    "aten::from_file": "reads a file",
    "aten::load": "reads a file",
    "prim::fork": "starts a thread",
    "aten::wait": "waits on a thread",
    "prim::awaitable": "starts a deferred call",
    "prim::awaitable_wait": "waits on a deferred call",
    "prim::awaitable_nowait": "starts a deferred call",
    "prim::rpc_async": "calls another process",
    "prim::rpc_sync": "calls another process",
    "prim::rpc_remote": "calls another process",
    "prim::PythonOp": "runs Python",
    "prim::IgnoredPythonOp": "runs Python",
    "prim::Enter": "enters a context manager",
    "prim::Exit": "leaves a context manager",
    "aten::manual_seed": "sets the global random seed",
    "aten::seed": "reseeds a random generator",
    "aten::set_grad_enabled": "switches autograd on or off",
    "aten::set_": "swaps a tensor's storage",
    "aten::set_data": "swaps a tensor's storage",
    "aten::get_gradients": "reads distributed autograd state",
    "aten::backward": "runs autograd",
    "aten::_backward": "runs autograd",
    "aten::dist_backward": "runs distributed autograd",
}

#: Type names an allowed aten schema may mention (``t``, ``t1``, ``tVal``: the element types of generic containers).
VALUE_TYPES = frozenset(
    {"Tensor", "int", "float", "bool", "complex", "number", "str", "Device", "NoneType", "SymInt", "SymFloat",
     "SymBool", "ScalarType", "Layout", "MemoryFormat", "List", "Optional", "Tuple", "Dict", "t", "t1", "t2", "tVal"}
)  # fmt: skip
_TYPE_NAME = re.compile(r"[A-Za-z_][\w.]*")
#: Allowed although they return nothing: a warning, silenced while a program runs (see the module docstring).
SILENCED = frozenset({"aten::warn"})


def schema_refusal(schema: Any) -> str | None:
    """None when an ``aten::``/``prims::`` overload (a ``torch.FunctionSchema``) is allowed, else why not."""
    name = schema.name
    if name in REFUSED:
        return REFUSED[name]
    if name in SILENCED:
        return None
    writes = any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
    if not schema.returns and not writes:
        return "returns nothing: it acts outside the program"
    for arg in [*schema.arguments, *schema.returns]:
        text = str(arg.type)
        if text == "Optional[Generator]":
            continue
        odd = [t for t in _TYPE_NAME.findall(text) if t not in VALUE_TYPES]
        if odd:
            return f"takes or returns {odd[0]}"
    return None


@cache
def _schemas(name: str) -> tuple[Any, ...]:
    try:
        return tuple(torch._C._jit_get_schemas_for_operator(name))
    except RuntimeError:
        return ()


def operator_refusal(name: str, overload: str | None = None) -> str | None:
    """None when operator ``name`` (``ns::op``) is allowed, else why not.

    ``overload``: the overload's name ("" for the default one); None checks every overload of the name (all must
    be allowed), for a call whose overload is not known."""
    if name in REFUSED:
        return REFUSED[name]
    namespace = name.split("::", 1)[0]
    if namespace == "prim":
        return None if name in PRIM_ALLOWED else "is not a tensor, shape or control-flow operator"
    if namespace not in ("aten", "prims"):
        return "is not an ATen operator (a custom or backend operator)"
    schemas = [s for s in _schemas(name) if overload is None or s.overload_name == overload]
    if not schemas:
        return "is not a registered ATen operator"
    for schema in schemas:
        why = schema_refusal(schema)
        if why is not None:
            return why
    return None


def script_node_refusal(node: Any) -> str | None:
    """None when a TorchScript graph node may run, else why not (its schema decides for aten operators)."""
    kind = node.kind()
    if kind == "prim::CallMethod":
        receiver = str(node.inputsAt(0).type())
        if receiver.startswith("__torch__.torch.classes."):
            return f"calls a method of the compiled class {receiver}"
        return None
    if kind.startswith(("aten::", "prims::")) and kind not in REFUSED:
        text = node.schema()
        if text != "(no schema)":
            try:
                return schema_refusal(torch._C.parse_schema(text))
            except RuntimeError:
                pass
        return operator_refusal(kind)
    return operator_refusal(kind)


def script_graphs(graph: Any) -> list[Any]:
    """``graph`` and every graph nested in it: node blocks (``If``/``Loop`` bodies) and graph-valued attributes
    (``prim::fork`` subgraphs, closures), depth first; each item is a block or graph with ``nodes()``."""
    found: list[Any] = []
    stack = [graph]
    while stack:
        block = stack.pop()
        found.append(block)
        for node in block.nodes():
            stack.extend(node.blocks())
            for attr in node.attributeNames():
                kind = node.kindOf(attr)
                if kind == "g":
                    stack.append(node.g(attr))
                elif kind == "gs":
                    stack.extend(node.gs(attr))
    return found


def script_refusals(functions: list[Any]) -> list[str]:
    """What is refused in a compiled TorchScript program, one line each ("aten::save (writes a file) in
    __torch__.helper"), for every function and method its compilation unit holds, called or not."""
    refused: dict[str, str] = {}
    for function in functions:
        where = function.qualified_name
        if where.rsplit(".", 1)[-1] == "__setstate__":
            refused.setdefault("__setstate__", f"__setstate__ (runs while the file loads) in {where}")
        for block in script_graphs(function.graph):
            for node in block.nodes():
                why = script_node_refusal(node)
                if why is not None:
                    refused.setdefault(node.kind(), f"{node.kind()} ({why}) in {where}")
    return [refused[k] for k in sorted(refused)]


#: torch.export higher-order operators whose bodies are graphs the check walks.
EXPORT_HIGHER_ORDER = frozenset({"cond", "while_loop", "map_impl", "scan", "invoke_subgraph"})


def export_target_refusal(target: str) -> str | None:
    """None when a torch.export graph's call target (``torch.ops.aten.add.Tensor``) is allowed, else why not."""
    parts = target.split(".")
    if len(parts) < 4 or parts[:2] != ["torch", "ops"] or not all(p.isidentifier() for p in parts):
        return "is not an operator"
    namespace, op = parts[2], parts[3]
    if namespace == "higher_order":
        return None if len(parts) == 4 and op in EXPORT_HIGHER_ORDER else "is not an allowed higher-order operator"
    if len(parts) > 5:
        return "is not an operator"
    overload = parts[4] if len(parts) == 5 else None
    return operator_refusal(f"{namespace}::{op}", "" if overload == "default" else overload)


__all__ = [
    "EXPORT_HIGHER_ORDER",
    "PRIM_ALLOWED",
    "REFUSED",
    "SILENCED",
    "VALUE_TYPES",
    "export_target_refusal",
    "operator_refusal",
    "schema_refusal",
    "script_graphs",
    "script_node_refusal",
    "script_refusals",
]
