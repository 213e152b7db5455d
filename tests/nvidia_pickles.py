"""Pickles in NVIDIA's formats, written by the tests from their own modules (no NVIDIA source).

A network snapshot of stylegan2-ada-pytorch / stylegan3 pickles each network as
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta`` =
dict(type='class', version, module_src, class_name, state=the module's __dict__);
a TensorFlow-era pickle is a tuple of ``dnnlib.tflib.network.Network`` objects
whose state holds ``static_kwargs``, ``components`` and ``variables``. Pickle
names a global by its module and name, so the writers here install stand-in
modules under NVIDIA's names while they dump (and only then): the stand-in
reconstructor and the embedded module source both write a marker file if
anything ever runs them, which the tests check never appears.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

PERSISTENCE_VERSION = 6


def marker_source(marker: Path) -> str:
    """Module source that, if anything executed it, would write ``marker`` and stop."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('module_src ran')\nraise SystemExit(1)\n"


@contextlib.contextmanager
def stand_in_modules(**modules: Mapping[str, Any]) -> Iterator[None]:
    """Modules named as NVIDIA's (``torch_utils.persistence=dict(name=obj)``, dots spelled ``__``) in sys.modules
    while the block runs, so that pickle can name their globals; removed afterwards, parents included."""
    added = []
    for dotted, attributes in modules.items():
        name = dotted.replace("__", ".")
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in sys.modules:
                sys.modules[prefix] = types.ModuleType(prefix)
                added.append(prefix)
        for key, value in attributes.items():
            value.__module__ = name
            value.__qualname__ = key
            setattr(sys.modules[name], key, value)
    try:
        yield
    finally:
        for prefix in reversed(added):
            del sys.modules[prefix]


class Persistent:
    """Pickles as NVIDIA's persistent object: the reconstructor applied to (meta,), children persistent too.

    ``classes``: the class name of each module by its dotted path (``""`` the top)."""

    def __init__(
        self,
        module: torch.nn.Module,
        classes: Mapping[str, str],
        *,
        module_src: str,
        init_kwargs: dict | None = None,
        path: str = "",
        extra_state: Mapping[str, Any] | None = None,
    ) -> None:
        self.module, self.classes, self.module_src, self.path = module, classes, module_src, path
        self.init_kwargs = init_kwargs or {}
        self.extra_state = dict(extra_state or {})

    def __reduce__(self) -> tuple:
        state = dict(self.module.__dict__)
        state["_modules"] = {
            name: None
            if child is None
            else Persistent(
                child, self.classes, module_src=self.module_src, path=f"{self.path}{'.' if self.path else ''}{name}"
            )
            for name, child in self.module._modules.items()
        }
        state["_init_args"] = ()
        state["_init_kwargs"] = self.init_kwargs
        state.update(self.extra_state)
        meta = dict(
            type="class",
            version=PERSISTENCE_VERSION,
            module_src=self.module_src,
            class_name=self.classes[self.path],
            state=state,
        )
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


def _never_called(*args: object) -> None:
    raise AssertionError("NVIDIA's reconstructor must never run")


def write_snapshot(path: Path, entries: Mapping[str, Any], *, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    """``pickle.dump(entries)`` with :class:`Persistent` values pickled as NVIDIA's persistent objects."""
    with stand_in_modules(torch_utils__persistence={"_reconstruct_persistent_obj": _never_called}):
        path.write_bytes(pickle.dumps(dict(entries), protocol=protocol))


class TensorFlowNetwork:
    """Pickles as ``dnnlib.tflib.network.Network`` (version 4): the state NVIDIA's __getstate__ writes."""

    def __init__(self, name: str, static_kwargs: dict, variables: Mapping[str, np.ndarray], components: dict) -> None:
        self.state = dict(
            version=4,
            name=name,
            static_kwargs=static_kwargs,
            components=components,
            build_module_src="",
            build_func_name=f"training.networks_stylegan2.{name}",
            variables=list(variables.items()),
        )

    def __getstate__(self) -> dict:
        return self.state


def write_tensorflow_pickle(
    path: Path,
    static_kwargs: dict,
    variables: Mapping[str, np.ndarray],
    *,
    module_src: str = "",
    protocol: int = 4,
) -> None:
    """A TensorFlow-era pickle (G, D, Gs) whose G and Gs hold ``variables`` (names as flattened by the reader:
    ``mapping/...`` and ``synthesis/...`` go to those components, the rest to the network itself)."""

    def network(name: str) -> Any:
        own = {k: v for k, v in variables.items() if "/" not in k or k.split("/")[0] not in ("mapping", "synthesis")}
        parts = {
            part: Network(
                f"G_{part}",
                static_kwargs,
                {k[len(part) + 1 :]: v for k, v in variables.items() if k.startswith(part + "/")},
                {},
            )
            for part in ("mapping", "synthesis")
        }
        return Network(name, static_kwargs, own, parts)

    class Network(TensorFlowNetwork):
        pass

    with stand_in_modules(dnnlib__tflib__network={"Network": Network}):
        objects = (network("G"), Network("D", {}, {"Output/weight": np.zeros((2, 1), np.float32)}, {}), network("Gs"))
        for obj in objects:
            obj.state["build_module_src"] = module_src
        path.write_bytes(pickle.dumps(objects, protocol=protocol))


def tensorflow_generator_variables(
    *,
    resolution: int,
    channels: Mapping[int, int],
    z_dim: int,
    w_dim: int,
    img_channels: int,
    mapping_layers: int,
    c_dim: int = 0,
    architecture: str = "skip",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random float32 variables named and shaped as a TensorFlow StyleGAN2 generator's (Gs, its mapping and its
    synthesis), for ``channels[r]`` feature maps at resolution ``r``."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    v: dict[str, np.ndarray] = {"lod": np.zeros((), np.float32), "dlatent_avg": normal(w_dim)}
    features = z_dim
    if c_dim:
        v["mapping/LabelEmbed/weight"], v["mapping/LabelEmbed/bias"] = normal(c_dim, w_dim), normal(w_dim)
        features += w_dim
    for i in range(mapping_layers):
        v[f"mapping/Dense{i}/weight"], v[f"mapping/Dense{i}/bias"] = normal(features, w_dim), normal(w_dim)
        features = w_dim

    def layer(scope: str, kernel: int, cin: int, cout: int, noise: bool = True) -> None:
        v[f"{scope}/weight"] = normal(kernel, kernel, cin, cout)
        v[f"{scope}/mod_weight"], v[f"{scope}/mod_bias"] = normal(w_dim, cin), normal(cin)
        v[f"{scope}/bias"] = normal(cout)
        if noise:
            v[f"{scope}/noise_strength"] = normal()

    top = resolution.bit_length() - 1
    v["synthesis/4x4/Const/const"] = normal(1, channels[4], 4, 4)
    layer("synthesis/4x4/Conv", 3, channels[4], channels[4])
    v["synthesis/noise0"] = normal(1, 1, 4, 4)
    if architecture == "skip":
        layer("synthesis/4x4/ToRGB", 1, channels[4], img_channels, noise=False)
    for log2 in range(3, top + 1):
        r = 2**log2
        cin, cout = channels[r // 2], channels[r]
        layer(f"synthesis/{r}x{r}/Conv0_up", 3, cin, cout)
        layer(f"synthesis/{r}x{r}/Conv1", 3, cout, cout)
        v[f"synthesis/noise{2 * log2 - 5}"] = normal(1, 1, r, r)
        v[f"synthesis/noise{2 * log2 - 4}"] = normal(1, 1, r, r)
        if architecture == "skip" or log2 == top:
            layer(f"synthesis/{r}x{r}/ToRGB", 1, cout, img_channels, noise=False)
        if architecture == "resnet":
            v[f"synthesis/{r}x{r}/Skip/weight"] = normal(1, 1, cin, cout)
    return v
