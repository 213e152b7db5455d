"""A TensorFlow-era StyleGAN2 generator as the state of stylegan2-ada-pytorch's Generator.

The TensorFlow StyleGAN2 (configs E and F) and StyleGAN2-ADA pickles hold the
generator ``Gs`` as a network whose ``static_kwargs`` configure it and whose
variables (with those of its components ``mapping`` and ``synthesis``) hold the
weights. They describe the same network as stylegan2-ada-pytorch's
``training.networks.Generator``, so they are renamed into its constructor
arguments and state, and one builder serves both. Constructor arguments:

==================  =====================================  ==========================================
TensorFlow          Generator                              note
==================  =====================================  ==========================================
latent_size         z_dim
label_size          c_dim
dlatent_size        w_dim
resolution          img_resolution
num_channels        img_channels
mapping_layers      mapping_kwargs.num_layers
label_fmaps         mapping_kwargs.embed_features
mapping_fmaps       mapping_kwargs.layer_features
mapping_lrmul       mapping_kwargs.lr_multiplier
w_avg_beta          mapping_kwargs.w_avg_beta              None (no tracking) becomes 1 (never moves)
fmap_base           synthesis_kwargs.channel_base          doubled: TF gives 2 fmap_base / res channels
fmap_max            synthesis_kwargs.channel_max
resample_kernel     synthesis_kwargs.resample_filter
nonlinearity        synthesis_kwargs.activation
==================  =====================================  ==========================================

and ``mapping_nonlinearity``, ``num_fp16_res``, ``conv_clamp``,
``architecture``, ``use_noise`` under their own names. The truncation and
style-mixing settings (``truncation_psi``, ``truncation_cutoff``,
``style_mixing_prob``) and ``structure`` are ignored; any other keyword is
refused with its name. Variables, with ``r`` a resolution:

====================================  ==========================================  ==============================
Generator state                       TensorFlow variable                         transform
====================================  ==========================================  ==============================
mapping.fc{i}.weight / .bias          mapping/Dense{i}/weight / bias              weight transposed ([in, out])
mapping.embed.weight / .bias          mapping/LabelEmbed/weight / bias            weight transposed
mapping.w_avg                         dlatent_avg
synthesis.b4.const                    synthesis/4x4/Const/const                   [1, C, 4, 4] -> [C, 4, 4]
synthesis.b{r}.conv0.*                synthesis/{r}x{r}/Conv0_up/*                weight flipped, see below
synthesis.b{r}.conv1.*                synthesis/{r}x{r}/Conv1/* (4x4: Conv/*)
  .weight                               weight                                    [kh, kw, in, out] -> [out, in, kh, kw]
  .bias / .noise_strength               bias / noise_strength
  .affine.weight / .affine.bias         mod_weight / mod_bias                     transposed / plus 1
  .noise_const                          synthesis/noise{k}                        [1, 1, r, r] -> [r, r]
synthesis.b{r}.torgb.*                synthesis/{r}x{r}/ToRGB/*                   as the convolutions
synthesis.b{r}.skip.weight            synthesis/{r}x{r}/Skip/weight               flipped and transposed
*.resample_filter                     (none: made from resample_kernel)           outer(k, k) / sum (conv1: [1,3,3,1])
====================================  ==========================================  ==============================

The noise index ``k`` counts the layers: 0 for the 4x4 convolution, then
``2 log2(r) - 5`` for conv0 and ``2 log2(r) - 4`` for conv1. TensorFlow adds 1
to the style at run time (``style = A w + b + 1``) where the Generator stores
the bias with the 1 in it. The kernels of ``Conv0_up`` and ``Skip`` (the
upsampling convolutions, which TensorFlow runs as transposed convolutions) are
stored mirrored in both spatial axes relative to the Generator's. The
Generator's conv1 layers do not resample and are not given the block's filter:
their buffer is made from the layer's default kernel [1, 3, 3, 1] whatever
``resample_kernel`` says. ``lod`` (the progressive-growing level, always 0 in
StyleGAN2) is not used; any other variable left over is refused with its name,
so a network the Generator does not describe (configs A to D, StyleGAN1) is not
silently misread. The correspondence was checked tensor by tensor, bit for bit,
against NVIDIA's own converter on two small configurations (skip; resnet with
labels and a 3-tap kernel): ``tests/data/tensorflow_stylegan2_tiny.safetensors``
holds the variables and the state it produced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from gan_probe.errors import CheckpointError
from gan_probe.models.nvidia.records import STYLEGAN2_ADA_GENERATOR, NetworkRecord, TensorFlowNetwork

#: (TensorFlow keyword, the Generator's sub-dict or None for the top level, the Generator's keyword, default)
GENERATOR_KWARGS: tuple[tuple[str, str | None, str, Any], ...] = (
    ("latent_size", None, "z_dim", 512),
    ("label_size", None, "c_dim", 0),
    ("dlatent_size", None, "w_dim", 512),
    ("resolution", None, "img_resolution", 1024),
    ("num_channels", None, "img_channels", 3),
    ("mapping_layers", "mapping_kwargs", "num_layers", 8),
    ("label_fmaps", "mapping_kwargs", "embed_features", None),
    ("mapping_fmaps", "mapping_kwargs", "layer_features", None),
    ("mapping_nonlinearity", "mapping_kwargs", "activation", "lrelu"),
    ("mapping_lrmul", "mapping_kwargs", "lr_multiplier", 0.01),
    ("w_avg_beta", "mapping_kwargs", "w_avg_beta", 0.995),
    ("fmap_base", "synthesis_kwargs", "channel_base", 16384),
    ("fmap_max", "synthesis_kwargs", "channel_max", 512),
    ("num_fp16_res", "synthesis_kwargs", "num_fp16_res", 0),
    ("conv_clamp", "synthesis_kwargs", "conv_clamp", None),
    ("architecture", "synthesis_kwargs", "architecture", "skip"),
    ("resample_kernel", "synthesis_kwargs", "resample_filter", [1, 3, 3, 1]),
    ("use_noise", "synthesis_kwargs", "use_noise", True),
    ("nonlinearity", "synthesis_kwargs", "activation", "lrelu"),
)
#: TensorFlow keywords that set how the network runs or trains, not what it is.
IGNORED_KWARGS = ("truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure")
#: TensorFlow variables that hold no weight of the Generator.
IGNORED_VARIABLES = ("lod",)
ARCHITECTURES = ("orig", "skip", "resnet")
#: The FIR kernel a synthesis layer makes its buffer from when it is not given one (conv1, which does not resample).
DEFAULT_RESAMPLE_KERNEL = (1, 3, 3, 1)


def tensorflow_generator_record(network: TensorFlowNetwork) -> NetworkRecord:
    """``network`` (a TensorFlow generator, ``G`` or ``Gs``) as stylegan2-ada-pytorch's Generator's record."""
    if network.version < 4:
        raise CheckpointError(
            f"the TensorFlow network {network.name} has pickle version {network.version}; "
            "gan-probe reads version 4 (StyleGAN2 and StyleGAN2-ADA)"
        )
    init_kwargs = generator_kwargs(network.static_kwargs, name=network.name)
    state = generator_state(network.variables, init_kwargs, name=network.name)
    resolution = init_kwargs["img_resolution"]
    attributes = {key: init_kwargs[key] for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    attributes["num_ws"] = 2 * int(math.log2(resolution)) - 2  # one per convolution and the last ToRGB
    return NetworkRecord(STYLEGAN2_ADA_GENERATOR, (), init_kwargs, state, attributes)


def generator_kwargs(static_kwargs: Mapping[str, Any], *, name: str = "Gs") -> dict[str, Any]:
    """The Generator's constructor arguments from a TensorFlow generator's ``static_kwargs`` (the table above)."""
    known = {tf_name for tf_name, *_ in GENERATOR_KWARGS} | set(IGNORED_KWARGS)
    unknown = sorted(set(static_kwargs) - known)
    if unknown:
        raise CheckpointError(
            f"the TensorFlow network {name} is configured with {unknown[0]}={static_kwargs[unknown[0]]!r}, "
            "which the StyleGAN2 Generator does not describe"
        )
    kwargs: dict[str, Any] = {"mapping_kwargs": {}, "synthesis_kwargs": {}}
    for tf_name, group, torch_name, default in GENERATOR_KWARGS:
        value = static_kwargs.get(tf_name, default)
        if tf_name == "w_avg_beta" and value is None:
            value = 1
        if tf_name == "fmap_base":
            value = _positive_int(value, tf_name, name) * 2
        if tf_name == "resample_kernel":
            value = list(value) if isinstance(value, list | tuple) else value
        (kwargs if group is None else kwargs[group])[torch_name] = value
    for key in ("z_dim", "w_dim", "img_resolution", "img_channels"):
        _positive_int(kwargs[key], key, name)
    if not isinstance(kwargs["c_dim"], int) or kwargs["c_dim"] < 0:
        raise CheckpointError(f"the TensorFlow network {name} has label_size={kwargs['c_dim']!r}")
    resolution = kwargs["img_resolution"]
    if resolution < 4 or resolution & (resolution - 1):
        raise CheckpointError(f"the TensorFlow network {name} has resolution={resolution}, not a power of 2 from 4")
    synthesis = kwargs["synthesis_kwargs"]
    if synthesis["architecture"] not in ARCHITECTURES:
        raise CheckpointError(
            f"the TensorFlow network {name} has architecture={synthesis['architecture']!r}; "
            f"StyleGAN2's are {', '.join(ARCHITECTURES)}"
        )
    kernel = synthesis["resample_filter"]
    if not isinstance(kernel, list) or not kernel or not all(isinstance(v, int | float) for v in kernel):
        raise CheckpointError(f"the TensorFlow network {name} has resample_kernel={kernel!r}, not a list of numbers")
    _positive_int(kwargs["mapping_kwargs"]["num_layers"], "mapping_layers", name)
    return kwargs


def _positive_int(value: object, key: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"the TensorFlow network {name} has {key}={value!r}, not a positive integer")
    return value


def resample_filter(kernel: list[float]) -> torch.Tensor:
    """The FIR filter buffer the Generator makes from a 1-D kernel: ``outer(k, k) / sum`` (float32), or ``k / sum``
    kept separable from 8 taps."""
    k = torch.tensor(kernel, dtype=torch.float32)
    f = k if k.numel() >= 8 else torch.outer(k, k)
    return f / f.sum()


class _Variables:
    """The TensorFlow variables by name, taken at most once each, with their shapes checked as they are taken."""

    def __init__(self, variables: Mapping[str, np.ndarray], name: str) -> None:
        self._variables = variables
        self._name = name
        self._taken: set[str] = set()

    def take(self, key: str, ndim: int) -> np.ndarray:
        if key not in self._variables:
            raise CheckpointError(f"the TensorFlow network {self._name} has no variable {key}")
        value = np.asarray(self._variables[key])
        if value.ndim != ndim:
            raise CheckpointError(f"the TensorFlow variable {self._name}/{key} has shape {value.shape}, not {ndim}-D")
        self._taken.add(key)
        return value

    def left_over(self) -> list[str]:
        return sorted(set(self._variables) - self._taken - set(IGNORED_VARIABLES))


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, order="C"))  # a C-ordered copy: flips have negative strides


def generator_state(
    variables: Mapping[str, np.ndarray], init_kwargs: Mapping[str, Any], *, name: str = "Gs"
) -> dict[str, torch.Tensor]:
    """The Generator's parameters and buffers, named as its ``named_parameters()``/``named_buffers()``, from
    TensorFlow's variables (the table above). Raises :class:`CheckpointError` naming a missing or left-over one."""
    tf = _Variables(variables, name)
    mapping = init_kwargs["mapping_kwargs"]
    synthesis = init_kwargs["synthesis_kwargs"]
    state: dict[str, torch.Tensor] = {}

    def dense(prefix: str, scope: str) -> None:
        state[f"{prefix}.weight"] = _tensor(tf.take(f"{scope}/weight", 2).T)
        state[f"{prefix}.bias"] = _tensor(tf.take(f"{scope}/bias", 1))

    def affine(prefix: str, scope: str) -> None:
        state[f"{prefix}.affine.weight"] = _tensor(tf.take(f"{scope}/mod_weight", 2).T)
        state[f"{prefix}.affine.bias"] = _tensor(tf.take(f"{scope}/mod_bias", 1)) + 1

    def conv_weight(scope: str, *, flip: bool) -> torch.Tensor:
        weight = tf.take(f"{scope}/weight", 4)  # [kh, kw, in, out]
        if flip:
            weight = weight[::-1, ::-1]
        return _tensor(weight.transpose(3, 2, 0, 1))

    if init_kwargs["c_dim"] > 0:
        dense("mapping.embed", "mapping/LabelEmbed")
    for i in range(mapping["num_layers"]):
        dense(f"mapping.fc{i}", f"mapping/Dense{i}")
    state["mapping.w_avg"] = _tensor(tf.take("dlatent_avg", 1))

    fir = resample_filter(synthesis["resample_filter"])
    layer_default_fir = resample_filter(list(DEFAULT_RESAMPLE_KERNEL))
    use_noise = bool(synthesis["use_noise"])
    architecture = synthesis["architecture"]
    top = int(math.log2(init_kwargs["img_resolution"]))
    for log2 in range(2, top + 1):
        r = 2**log2
        block, scope = f"synthesis.b{r}", f"synthesis/{r}x{r}"
        if r == 4:
            state[f"{block}.const"] = _tensor(tf.take(f"{scope}/Const/const", 4)[0])
            layers = [("conv1", f"{scope}/Conv", 0, False)]
        else:
            layers = [
                ("conv0", f"{scope}/Conv0_up", 2 * log2 - 5, True),
                ("conv1", f"{scope}/Conv1", 2 * log2 - 4, False),
            ]
        for layer, layer_scope, noise_index, up in layers:
            prefix = f"{block}.{layer}"
            state[f"{prefix}.weight"] = conv_weight(layer_scope, flip=up)
            if use_noise:
                state[f"{prefix}.noise_strength"] = _tensor(tf.take(f"{layer_scope}/noise_strength", 0))
            state[f"{prefix}.bias"] = _tensor(tf.take(f"{layer_scope}/bias", 1))
            affine(prefix, layer_scope)
            state[f"{prefix}.resample_filter"] = (fir if up else layer_default_fir).clone()
            if use_noise:
                state[f"{prefix}.noise_const"] = _tensor(tf.take(f"synthesis/noise{noise_index}", 4)[0, 0])
        if architecture == "skip" or r == 2**top:
            state[f"{block}.torgb.weight"] = conv_weight(f"{scope}/ToRGB", flip=False)
            state[f"{block}.torgb.bias"] = _tensor(tf.take(f"{scope}/ToRGB/bias", 1))
            affine(f"{block}.torgb", f"{scope}/ToRGB")
        if architecture == "resnet" and r > 4:
            state[f"{block}.skip.weight"] = conv_weight(f"{scope}/Skip", flip=True)
            state[f"{block}.skip.resample_filter"] = fir.clone()
        state[f"{block}.resample_filter"] = fir.clone()

    left = tf.left_over()
    if left:
        raise CheckpointError(
            f"the TensorFlow network {name} has variables the StyleGAN2 Generator does not hold: "
            f"{', '.join(left[:5])}{' ...' if len(left) > 5 else ''}"
        )
    return state
