"""Exact Jacobians J = dG/dz of a batched map, column block by column block.

The exact Jacobian is built from nz forward-mode products (one per latent
axis) under :func:`torch.func.vmap`, in chunks of ``chunk_size`` axes so that
memory stays bounded: the primal forward pass is shared inside a chunk and only
the tangents are batched. :class:`gan_probe.spectral.operator.JacobianOperator`
is the public face of these routines.

Routes (docs/design.md §2.1). Forward mode is the default. Where it fails (an
operator without a forward-mode rule, such as a custom ``autograd.Function``
without ``jvp``, or one vmap cannot batch), J comes from the double-VJP route:
J v as the VJP of the linear map u -> J^T u, reverse mode only, about twice the
cost. Where a command differentiates J itself (``ascend`` differentiates the
exact ln det M), forward mode must also have a derivative; some formulas have
none (GLU's ``glu_jvp``), so one column is tried first and the double-VJP route
is taken when that fails. A :class:`JacobianRoutes` remembers, per generator,
which route works at first order and under differentiation, the randomness mode
of the vmaps (``same`` for a generator whose noise is frozen), and the notes to
show the user. When every route fails the error names the operator.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.func import jvp, vmap

from gan_probe.errors import GanProbeError, first_line

#: A batched map (B, nz) -> (B, N), samples independent (a generator in eval mode, flattened).
Fn = Callable[[torch.Tensor], torch.Tensor]

#: Forward evaluations (latents x tangents) allowed in flight by default.
DEFAULT_FORWARD_BUDGET = 1024

FORWARD = "forward"
REVERSE = "reverse"


@dataclass
class JacobianRoutes:
    """How J is built for one generator, learnt by trying and then remembered.

    ``value``: the route that works when J is not differentiated, ``grad`` when
    it is (``forward`` or ``reverse``; None: not tried yet). ``randomness``: the
    vmap randomness mode (``error``, or ``same`` for a generator whose noise is
    frozen, so that every tangent sees the primal's noise). ``notes``: what the
    user should be told (a fallback taken).
    """

    value: str | None = None
    grad: str | None = None
    randomness: str = "error"
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def default_chunk_size(batch: int, nz: int, budget: int = DEFAULT_FORWARD_BUDGET) -> int:
    """Latent axes per vmap call so that ``batch * chunk <= budget`` (at least 1, at most nz)."""
    return max(1, min(nz, budget // max(1, batch)))


def jacobian(
    fn: Fn, z: torch.Tensor, *, chunk_size: int | None = None, routes: JacobianRoutes | None = None
) -> torch.Tensor:
    """Per-sample Jacobians of a batched map.

    ``fn`` maps (B, nz) to (B, N) and treats samples independently. Returns J
    of shape (B, N, nz) in z's dtype, with J[b, :, k] = dG(z_b)/dz_k.
    Differentiable w.r.t. z and the parameters of fn when grad mode is on.
    ``routes`` (one per generator) remembers which way works; None tries afresh.
    """
    batch, nz = z.shape
    chunk = chunk_size or default_chunk_size(batch, nz)
    blocks = [axis_tangents(z, start, min(nz, start + chunk)) for start in range(0, nz, chunk)]
    cols = jvp_blocks(fn, z, blocks, routes)
    return torch.cat(cols, dim=0).permute(1, 2, 0)


def axis_tangents(z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(stop - start, B, nz): tangent k is e_{start+k} for every sample."""
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)[start:stop]
    return eye[:, None, :].expand(stop - start, z.shape[0], z.shape[1])


def batched_jvp(fn: Fn, z: torch.Tensor, tangents: torch.Tensor, randomness: str = "error") -> torch.Tensor:
    """J v for a batch of tangents: z (B, nz), tangents (P, B, nz) -> (P, B, N), by vmap over jvp."""
    with warnings.catch_warnings():
        # torch's own advice to file an issue when an operator (e.g. glu_jvp) has no batching rule
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
        return vmap(lambda t: jvp(fn, (z,), (t,))[1], randomness=randomness)(tangents)


def jvp_columns(fn: Fn, z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(k, B, N): J e_i for i in [start, stop), by vmap over forward-mode products."""
    return batched_jvp(fn, z, axis_tangents(z, start, stop))


def double_vjp_columns(fn: Fn, z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(k, B, N): J e_i via the VJP of the linear map u -> J^T u (reverse mode only)."""
    return _DoubleVJP(fn, z)(axis_tangents(z, start, stop))


class _DoubleVJP:
    """J v by reverse mode only, for any number of tangent blocks after one forward pass.

    J^T u is linear in u, so its VJP with cotangent v is J v. Differentiable
    (create_graph) when grad mode is on where it is built.
    """

    def __init__(self, fn: Fn, z: torch.Tensor) -> None:
        self.create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            z_ = z if z.requires_grad else z.detach().requires_grad_(True)
            x = fn(z_)
            self.u = torch.zeros_like(x, requires_grad=True)
            (self.jt_u,) = torch.autograd.grad(x, z_, self.u, create_graph=True)

    def __call__(self, tangents: torch.Tensor) -> torch.Tensor:
        """tangents (P, B, nz) -> (P, B, N)."""
        tangents = tangents.to(self.jt_u.dtype)
        with torch.enable_grad():
            try:
                (cols,) = torch.autograd.grad(
                    self.jt_u,
                    self.u,
                    tangents,
                    is_grads_batched=True,
                    retain_graph=True,
                    create_graph=self.create_graph,
                )
            except torch.OutOfMemoryError:
                raise
            except Exception:  # noqa: BLE001 - vmap cannot batch the backward graph: one tangent at a time
                cols = torch.stack(
                    [
                        torch.autograd.grad(self.jt_u, self.u, t, retain_graph=True, create_graph=self.create_graph)[0]
                        for t in tangents
                    ]
                )
        return cols


def jvp_blocks(
    fn: Fn, z: torch.Tensor, blocks: Sequence[torch.Tensor], routes: JacobianRoutes | None = None
) -> list[torch.Tensor]:
    """[J v for v in blocks]: each block (P, B, nz) -> (P, B, N), by the route ``routes`` says works.

    A route not yet known is tried: forward mode first, the double-VJP route
    when forward mode fails (and, under grad mode, when forward mode's
    derivative fails on one column). The outcome and a note are stored in
    ``routes``. When both routes fail, a :class:`GanProbeError` names the operator.
    """
    routes = routes if routes is not None else JacobianRoutes()
    differentiable = torch.is_grad_enabled()
    if differentiable and routes.grad is None:
        routes.grad = _differentiable_route(fn, z, routes)
    route = routes.grad if differentiable else routes.value
    if route == REVERSE:
        return _reverse(fn, z, blocks)
    try:
        out = [batched_jvp(fn, z, t, routes.randomness) for t in blocks]
    except (torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as forward_exc:  # noqa: BLE001 - any failure of forward mode: try reverse mode
        if route == FORWARD:
            raise
        try:
            out = _reverse(fn, z, blocks)
        except (torch.OutOfMemoryError, KeyboardInterrupt):
            raise
        except Exception as reverse_exc:  # noqa: BLE001 - both routes failed: say where
            raise GanProbeError(
                "cannot differentiate the generator: forward mode fails "
                f"{_where(forward_exc)}; reverse mode fails {_where(reverse_exc)}"
            ) from reverse_exc
        routes.value = REVERSE
        if differentiable:
            routes.grad = REVERSE
        routes.note(
            "forward-mode AD is not available through this generator, so J is built by reverse mode (double VJP), "
            f"about twice the cost; forward mode fails {_where(forward_exc)}"
        )
        return out
    if not differentiable and routes.value is None:
        routes.value = FORWARD
    return out


def _reverse(fn: Fn, z: torch.Tensor, blocks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    route = _DoubleVJP(fn, z)
    return [route(t) for t in blocks]


def _differentiable_route(fn: Fn, z: torch.Tensor, routes: JacobianRoutes) -> str:
    """Forward mode, unless differentiating one forward-mode column fails (e.g. no derivative of glu_jvp)."""
    if routes.value == REVERSE:
        return REVERSE
    z1 = z[:1].detach().requires_grad_(True)
    try:
        with torch.enable_grad():
            col = batched_jvp(fn, z1, axis_tangents(z1, 0, 1), routes.randomness)
            if col.requires_grad:
                torch.autograd.grad(col.sum(), z1, allow_unused=True)
    except (torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - this generator's forward mode cannot be differentiated
        routes.note(
            "forward-mode AD has no derivative through this generator, so where J itself is differentiated it is "
            f"built by reverse mode (double VJP); differentiating forward mode fails {_where(exc)}"
        )
        return REVERSE
    return FORWARD


def _where(exc: BaseException) -> str:
    """'in OPERATOR: first line of the message' for an autograd failure, naming the operator when it can."""
    message = first_line(exc)
    if len(message) > 200:
        message = message[:197] + "..."
    op = operator_name(exc)
    return f"in {op}: {message}" if op else f"with {type(exc).__name__}: {message}"


def operator_name(exc: BaseException) -> str | None:
    """The operator an autograd failure comes from: an aten op named in the message, or the custom
    ``autograd.Function`` (or other user code) whose frame raised it; None when nothing names one."""
    text = str(exc)
    found = re.search(r"aten::[A-Za-z0-9_.]+", text)
    if found:
        return found.group(0)
    for pattern in (r"forward AD with '?([A-Za-z_][\w.]*)", r"derivative for '?([A-Za-z_][\w.]*)", r"vmap over (\w+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    name = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        code, local = frame.f_code, frame.f_locals
        cls = local.get("cls")
        if code.co_name in ("forward", "backward", "jvp", "vjp", "setup_context") and "ctx" in local:
            name = code.co_qualname.rsplit(".", 1)[0]
        elif isinstance(cls, type) and issubclass(cls, torch.autograd.Function):
            name = cls.__name__
        tb = tb.tb_next
    return name
