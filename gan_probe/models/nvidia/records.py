"""What the NVIDIA pickle reader hands on: networks as plain data, and the generator classes gan-probe rebuilds.

Its own module so that :mod:`gan_probe.models.nvidia.pickle_reader` and
:mod:`gan_probe.models.nvidia.tf_variables` (which turns a TensorFlow network
into a record) both import it and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

#: Generator classes gan-probe rebuilds, as named in :attr:`NetworkRecord.class_name`.
STYLEGAN2_ADA_GENERATOR = "training.networks.Generator"
STYLEGAN2_GENERATOR = "training.networks_stylegan2.Generator"
STYLEGAN3_GENERATOR = "training.networks_stylegan3.Generator"
SUPPORTED_GENERATORS = (STYLEGAN2_ADA_GENERATOR, STYLEGAN2_GENERATOR, STYLEGAN3_GENERATOR)


@dataclass(frozen=True)
class NetworkRecord:
    """One of NVIDIA's networks as plain data.

    ``class_name``: qualified as in :data:`SUPPORTED_GENERATORS` for a generator
    (see the module docstring for how), else the class's bare name. ``init_args``
    and ``init_kwargs``: the constructor's arguments as stored, in plain Python
    values (dict, list, tuple, str, int, float, bool, None). ``state``: the module
    tree's tensors keyed as ``dict(G.named_parameters()) | dict(G.named_buffers())``
    would key them (``mapping.fc0.weight``, ``synthesis.b8.conv0.noise_const``).
    ``attributes``: the top module's plain attributes (``z_dim``, ``num_ws``, ...).
    ``module_classes``: every module's stored class name by its dotted path
    (``""`` the top module; empty for a network converted from TensorFlow).
    """

    class_name: str
    init_args: tuple
    init_kwargs: dict
    state: dict[str, torch.Tensor]
    attributes: dict
    module_classes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorFlowNetwork:
    """A ``dnnlib.tflib.network.Network`` of a TensorFlow-era pickle, as plain data.

    ``variables``: its own and its components' variables, named with the
    components' names as prefixes (``mapping/Dense0/weight``, ``synthesis/noise0``,
    ``dlatent_avg``), as numpy arrays. ``static_kwargs``: the build function's
    keyword arguments. The build function's source is not kept.
    """

    name: str
    version: int
    build_func_name: str
    static_kwargs: dict
    variables: dict[str, np.ndarray]
