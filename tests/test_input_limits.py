"""Sizes, dtypes and paths refused up front: every size a flag sets has a bound (gan_probe.limits) checked before
any allocation; weights that are not floating point, latents that are not real numbers, arrays whose headers
declare more than their file holds and paths that are not regular files are refused by name; ``--out`` never
names the working folder. Each case ends in one line naming the value and the flag, exit 1, nothing written.

The table runs in-process through Typer's CliRunner, on a tiny DCGAN and (the cases about noise, nz and
estimator sizes) on the bundled StyleGAN2 too.
"""

from __future__ import annotations

import os
import stat
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gan_probe.analyses.common import load_latents
from gan_probe.errors import CheckpointError, GanProbeError
from gan_probe.limits import MAX_COUNT, MAX_DEGREE, MAX_KRYLOV_STEPS, MAX_NZ, MAX_PROBES, SEED_MAX, check_count
from gan_probe.models.checkpoint import LoadOptions, load_generator, read_state_file
from gan_probe.models.latent_spaces import parse_noise
from gan_probe.spectral.estimators import ChebyshevParams, SLQParams, TaylorParams
from tests.conftest import assert_flags_exist, run_refused, save_tiny_dcgan

ROOT = Path(__file__).resolve().parent.parent
STYLEGAN2 = ROOT / "sample_checkpoints" / "mnist-stylegan2.safetensors"
NZ = 8


def _npy_with_header(path: Path, shape: tuple[int, ...], descr: str = "<f8", data: bytes = b"\0" * 128) -> None:
    """An .npy file whose header declares ``shape`` but which holds only ``data``."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
        fh.write(data)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every file of the table, made once."""
    d = tmp_path_factory.mktemp("limits")
    module = save_tiny_dcgan(d / "tiny.safetensors", provenance="tests")  # nz = NZ
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    weight = state["main.0.weight"]
    for name, value in {
        "w_int32": weight.to(torch.int32),
        "w_int64": weight.round().to(torch.int64),
        "w_uint8": weight.abs().mul(100).to(torch.uint8),
        "w_bool": weight > 0,
    }.items():
        save_file({**state, "main.0.weight": value}, str(d / f"{name}.safetensors"))
    torch.save({**state, "main.0.weight": weight > 0}, d / "w_bool.pth")
    torch.save({**state, "main.4.weight": state["main.4.weight"].to(torch.int16)}, d / "w_int16_later.pth")
    torch.save({**state, "main.0.weight": torch.complex(weight, weight)}, d / "w_complex.pth")
    # stride-0 views: a few stored values behind a huge declared shape
    torch.save({**state, "main.0.weight": torch.zeros(1).expand(10**6, 10**6)}, d / "stride0_huge.pth")
    torch.save({**state, "main.0.weight": torch.zeros(1, 1).expand(2**16, 2**16)}, d / "stride0_2d.pth")
    torch.save({**state, "extra": torch.zeros(1).expand(3 * 10**9)}, d / "stride0_extra.pth")
    torch.save({**state, "main.0.weight": torch.zeros(1).expand(*weight.shape)}, d / "stride0_fits.pth")

    rng = np.random.default_rng(0)
    np.save(d / "z_timedelta.npy", np.zeros((2, NZ), dtype="timedelta64[s]"))
    np.savez(d / "z_timedelta.npz", z=np.zeros((2, NZ), dtype="timedelta64[ns]"))
    np.save(d / "z_datetime.npy", np.zeros((2, NZ), dtype="datetime64[D]"))
    np.save(d / "z_object.npy", np.array([[object()] * NZ] * 2), allow_pickle=True)
    np.savez(d / "z_object.npz", latents=np.array([[1.0] * NZ] * 2, dtype=object))
    np.save(d / "z_record.npy", np.zeros((2, NZ), dtype=[("a", "f8")]))
    np.save(d / "z_bytes.npy", np.array([[b"1"] * NZ] * 2))
    np.save(d / "z_complex64.npy", np.ones((2, NZ), dtype=np.complex64))
    save_file({"z": torch.ones(2, NZ, dtype=torch.bool)}, str(d / "z_bool.safetensors"))
    np.save(d / "z_int.npy", rng.integers(-2, 3, size=(2, NZ)))
    _npy_with_header(d / "z_lying.npy", (10**7, NZ))
    _npy_with_header(d / "z_lying_huge.npy", (10**12, NZ))
    _npy_with_header(d / "z_lying_object.npy", (2, NZ), descr="|O")
    with zipfile.ZipFile(d / "z_lying.npz", "w") as zf:
        zf.write(d / "z_lying_huge.npy", "z.npy")
    (d / "z_folder.npy").mkdir()
    os.mkfifo(d / "z_fifo.npy")
    os.mkfifo(d / "x_fifo.npy")
    os.mkfifo(d / "x_fifo.png")
    return d


T = "{d}/tiny.safetensors"
S = str(STYLEGAN2)
BIG = str(10**20)
#: (id, arguments, a fragment of the one-line message). {d}: the folder of the files; every case exits 1.
CASES: list[tuple[str, list[str], str]] = [
    # --- the latent size
    ("nz-1e12", ["info", T, "--nz", "1000000000000"], f"from 1 to {MAX_NZ:,}, got 1000000000000 (--nz)"),
    ("nz-above-bound", ["loglik", T, "--nz", str(MAX_NZ + 1)], "(--nz)"),
    (
        "nz-1e12-factory",
        ["info", "--generator", "limfactory:make", "--nz", "1000000000000"],
        "got 1000000000000 (--nz)",
    ),
    # --- estimator degrees, steps and probes
    (
        "chebyshev-m-1e7",
        ["loglik", T, "--method", "chebyshev", "--m", "10000000"],
        f"to {MAX_DEGREE:,}, got 10000000 (--m)",
    ),
    ("chebyshev-m-above", ["loglik", T, "--method", "chebyshev", "--m", str(MAX_DEGREE + 1)], "(--m)"),
    ("chebyshev-p-1e7", ["loglik", T, "--method", "chebyshev", "--p", "10000000"], "got 10000000 (--p)"),
    ("chebyshev-t-1e7", ["loglik", T, "--method", "chebyshev", "--t", "10000000"], "got 10000000 (--t)"),
    ("taylor-m-1e7", ["loglik", T, "--method", "taylor", "--m", "10000000"], "got 10000000 (--m)"),
    ("slq-steps-1e8", ["loglik", T, "--method", "slq", "--steps", "100000000"], f"to {MAX_KRYLOV_STEPS:,}, got"),
    ("slq-steps-1e20", ["loglik", T, "--method", "slq", "--steps", BIG], f"got {BIG} (--steps)"),
    ("slq-probes-1e8", ["loglik", T, "--method", "slq", "--probes", "100000000"], f"to {MAX_PROBES:,}, got"),
    ("ascend-slq-steps", ["ascend", T, "--method", "slq", "--slq-steps", "100000000"], "(--slq-steps)"),
    # --- counts
    ("bench-repeats-1e9", ["bench", T, "--repeats", "1000000000"], "got 1000000000 (--repeats)"),
    ("bench-repeats-above", ["bench", T, "--repeats", "1001"], "(--repeats)"),
    ("bench-warmup-1e9", ["bench", T, "--warmup", "1000000000"], "(--warmup)"),
    ("bench-n-1e20", ["bench", T, "--n", BIG], "(--n)"),
    ("bench-naive-rows", ["bench", T, "--naive-rows", BIG], "(--naive-rows)"),
    ("bench-synthetic-nz", ["bench", "spectrum", "--synthetic-nz", "1000000000000"], "--synthetic-nz"),
    ("bench-batch-sizes", ["bench", "throughput", T, "--batch-sizes", f"1,{BIG}"], "--batch-sizes"),
    ("grid-size-3000", ["loglik", T, "--grid", "--grid-size", "3000"], "from 2 to 1,024, got 3000 (--grid-size)"),
    ("grid-size-1025", ["loglik", T, "--grid", "--grid-size", "1025"], "(--grid-size)"),
    ("loglik-n-1e20", ["loglik", T, "--n", BIG], f"to {MAX_COUNT:,}, got {BIG} (--n)"),
    ("sample-n-1e20", ["sample", T, "--n", BIG], "(--n)"),
    ("batch-size-1e20", ["loglik", T, "--batch-size", BIG], f"--batch-size must be an integer from 1 to {MAX_COUNT:,}"),
    ("batch-size-negative", ["veff", T, "--batch-size", "-4"], "--batch-size"),
    ("chunk-size-1e20", ["loglik", T, "--chunk-size", BIG], "(--chunk-size)"),
    ("veff-chunk-size-1e20", ["veff", T, "--chunk-size", BIG], "(--chunk-size)"),
    # --- seeds
    ("seed-2-63", ["loglik", T, "--seed", str(2**63)], f"from 0 to {SEED_MAX:,}, got {2**63} (--seed)"),
    ("seed-negative", ["sample", T, "--seed", "-5"], "(--seed)"),
    ("noise-seed-negative", ["info", T, "--noise", "seed:-1"], "got -1 (--noise)"),
    ("noise-seed-huge", ["info", T, "--noise", f"seed:{2**64}"], "(--noise)"),
    # --- weights that are not floating point
    ("weights-int32", ["info", "{d}/w_int32.safetensors"], "tensor 'main.0.weight' has dtype int32"),
    ("weights-int64", ["info", "{d}/w_int64.safetensors"], "has dtype int64"),
    ("weights-uint8", ["info", "{d}/w_uint8.safetensors"], "has dtype uint8"),
    ("weights-bool", ["info", "{d}/w_bool.safetensors"], "tensor 'main.0.weight' has dtype bool"),
    ("weights-bool-pth", ["info", "{d}/w_bool.pth"], "has dtype bool"),
    ("weights-int16-later", ["info", "{d}/w_int16_later.pth"], "tensor 'main.4.weight' has dtype int16"),
    ("weights-complex", ["info", "{d}/w_complex.pth"], "has dtype complex64"),
    # --- declared sizes beyond what a checkpoint may hold (stride-0 views)
    ("stride0-1e12", ["info", "{d}/stride0_huge.pth"], "tensor 'main.0.weight' declares shape (1000000, 1000000)"),
    ("stride0-2d", ["info", "{d}/stride0_2d.pth"], "declares shape (65536, 65536)"),
    ("stride0-extra-entry", ["info", "{d}/stride0_extra.pth"], "tensor 'extra' declares shape (3000000000,)"),
    # --- latents that are not real numbers
    ("latents-timedelta", ["loglik", T, "--latents", "{d}/z_timedelta.npy"], "(dtype timedelta64[s])"),
    ("latents-timedelta-npz", ["loglik", T, "--latents", "{d}/z_timedelta.npz"], "(dtype timedelta64[ns])"),
    ("latents-timedelta-grid", ["loglik", T, "--grid", "--grid-center", "{d}/z_timedelta.npy"], "(--grid-center)"),
    ("latents-datetime", ["eigvecs", T, "--latents", "{d}/z_datetime.npy"], "(dtype datetime64[D])"),
    ("latents-object", ["loglik", T, "--latents", "{d}/z_object.npy"], "(dtype object)"),
    ("latents-object-npz", ["veff", T, "--latents", "{d}/z_object.npz"], "array 'latents') are not real numbers"),
    ("latents-record", ["loglik", T, "--latents", "{d}/z_record.npy"], "not real numbers"),
    ("latents-bytes", ["loglik", T, "--latents", "{d}/z_bytes.npy"], "(dtype |S1)"),
    ("latents-bool-safetensors", ["ascend", T, "--latents", "{d}/z_bool.safetensors"], "(dtype bool)"),
    ("latents-complex64", ["loglik", T, "--latents", "{d}/z_complex64.npy"], "complex (complex64)"),
    # --- latents whose header declares more than the file holds
    ("latents-lying-header", ["loglik", T, "--latents", "{d}/z_lying.npy"], "declare shape (10000000, 8)"),
    ("latents-lying-huge", ["loglik", T, "--latents", "{d}/z_lying_huge.npy"], "truncated or corrupt (--latents)"),
    ("latents-lying-npz", ["loglik", T, "--latents", "{d}/z_lying.npz"], "(array 'z') declare shape"),
    ("latents-lying-object", ["loglik", T, "--latents", "{d}/z_lying_object.npy"], "(dtype object)"),
    # --- paths that are not regular files
    ("latents-folder", ["loglik", T, "--latents", "{d}/z_folder.npy"], "z_folder.npy is a directory"),
    ("latents-fifo", ["loglik", T, "--latents", "{d}/z_fifo.npy"], "is not a regular file (a FIFO)"),
    ("latents-fifo-ascend", ["ascend", T, "--latents", "{d}/z_fifo.npy"], "(a FIFO); give a file (--latents)"),
    ("grid-center-fifo", ["loglik", T, "--grid", "--grid-center", "{d}/z_fifo.npy"], "(a FIFO); give a file (--grid"),
    ("grid-center-folder", ["loglik", T, "--grid", "--grid-center", "{d}/z_folder.npy"], "is a directory"),
    ("data-fifo-npy", ["pag", T, "--data", "{d}/x_fifo.npy"], "x_fifo.npy is not a regular file (a FIFO)"),
    ("data-fifo-png", ["pag", T, "--data", "{d}/x_fifo.png"], "(a FIFO); give a file (--data)"),
    # --- --out naming the working folder or one holding it
    ("out-empty", ["loglik", T, "--n", "1", "--out", ""], "is the working folder"),
    ("out-dot", ["sample", T, "--n", "1", "--out", "."], "is the working folder"),
    ("out-parent", ["loglik", T, "--n", "1", "--out", ".."], "holds the working folder"),
    ("out-root", ["loglik", T, "--n", "1", "--out", "/"], "holds the working folder"),
]

#: The cases about noise, nz and sizes, on the bundled StyleGAN2 (its --nz is its latent space's: 64 in z).
STYLEGAN2_CASES: list[tuple[str, list[str], str]] = [
    ("sg2-noise-seed-negative", ["info", S, "--noise", "seed:-1"], "got -1 (--noise)"),
    ("sg2-noise-seed-huge", ["loglik", S, "--noise", f"seed:{2**63}"], "(--noise)"),
    ("sg2-noise-seed-text", ["info", S, "--noise", "seed:x"], "seed:N"),
    ("sg2-nz-1e12", ["info", S, "--nz", "1000000000000"], "(--nz)"),
    ("sg2-nz-mismatch", ["info", S, "--nz", "7", "--space", "w"], "nz = 64 in its w space"),
    ("sg2-chebyshev-m", ["loglik", S, "--method", "chebyshev", "--m", "10000000"], "(--m)"),
    ("sg2-slq-steps", ["loglik", S, "--space", "w+", "--method", "slq", "--steps", BIG], "(--steps)"),
    ("sg2-slq-probes", ["loglik", S, "--method", "slq", "--probes", "100000000"], "(--probes)"),
    ("sg2-grid-size", ["loglik", S, "--grid", "--grid-size", "3000"], "(--grid-size)"),
    ("sg2-n-1e20", ["loglik", S, "--n", BIG], "(--n)"),
    ("sg2-batch-size", ["loglik", S, "--batch-size", BIG], "--batch-size"),
    ("sg2-repeats", ["bench", S, "--repeats", "1000000000"], "(--repeats)"),
    ("sg2-latents-timedelta", ["loglik", S, "--latents", "{d}/z_timedelta.npy"], "(dtype timedelta64[s])"),
    ("sg2-latents-fifo", ["loglik", S, "--latents", "{d}/z_fifo.npy"], "(a FIFO)"),
    ("sg2-out-empty", ["loglik", S, "--out", ""], "is the working folder"),
]

FACTORY = """
import torch


class Flat(torch.nn.Module):
    nz = 4

    def forward(self, z):
        return z * 2


def make():
    return Flat()
"""


@contextmanager
def _fifos_unblocked(folder: Path) -> Iterator[None]:
    """While the block runs, feed any FIFO of ``folder`` that something opened for reading a few bytes and
    close it: code that wrongly opens one then fails (on garbage) instead of blocking the test for ever."""
    done = threading.Event()

    def feed() -> None:
        fifos = [p for p in folder.iterdir() if stat.S_ISFIFO(p.lstat().st_mode)]
        while not done.wait(0.05):
            for fifo in fifos:
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while no reader has it open
                except OSError:
                    continue
                try:
                    os.write(fd, b"not an array")
                finally:
                    os.close(fd)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _run_case(args, fragment, files, runner, tmp_path, monkeypatch):
    (tmp_path / "limfactory.py").write_text(FACTORY)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = sorted(os.listdir(tmp_path))
    with _fifos_unblocked(files):
        result = run_refused(runner, args, fragment, folder=files, out=tmp_path / "out")
    assert "out of memory" not in result.stderr
    assert os.listdir(work) == [] and sorted(os.listdir(tmp_path)) == before  # nor into the working folder


@pytest.mark.parametrize(("args", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_size_dtype_or_path_ends_in_one_named_line(args, fragment, files, runner, tmp_path, monkeypatch):
    _run_case(args, fragment, files, runner, tmp_path, monkeypatch)


@pytest.mark.parametrize(("args", "fragment"), [c[1:] for c in STYLEGAN2_CASES], ids=[c[0] for c in STYLEGAN2_CASES])
def test_bad_sizes_on_the_bundled_stylegan2(args, fragment, files, runner, tmp_path, monkeypatch):
    _run_case(args, fragment, files, runner, tmp_path, monkeypatch)


def test_the_flag_a_refusal_names_is_one_its_command_takes():
    """Each message above names the flag that fixes it ("... (--n)"): the command the user ran must take it."""
    assert_flags_exist(CASES + STYLEGAN2_CASES)


# --------------------------------------------------------------------------- the one check and its bounds


def test_check_count_takes_its_bounds_and_refuses_beyond():
    assert check_count(1, "x", param="p") == 1
    assert check_count(MAX_COUNT, "x", param="p") == MAX_COUNT
    assert check_count(0, "x", param="p", low=0, high=0) == 0
    for bad in (0, MAX_COUNT + 1, -1, True, 2.0, "3", None):
        with pytest.raises(GanProbeError, match=r"x must be an integer from 1 to 2,147,483,647") as info:
            check_count(bad, "x", param="p")
        assert info.value.param == "p"
    with pytest.raises(CheckpointError):
        check_count(-1, "x", param=None, error=CheckpointError)


@pytest.mark.parametrize(
    ("cls", "field", "high"),
    [
        (ChebyshevParams, "m", MAX_DEGREE),
        (ChebyshevParams, "p", MAX_PROBES),
        (ChebyshevParams, "t", MAX_KRYLOV_STEPS),
        (TaylorParams, "m", MAX_DEGREE),
        (TaylorParams, "p", MAX_PROBES),
        (TaylorParams, "t", MAX_KRYLOV_STEPS),
        (SLQParams, "steps", MAX_KRYLOV_STEPS),
        (SLQParams, "probes", MAX_PROBES),
    ],
)
def test_estimator_parameters_take_the_bound_and_refuse_one_more(cls, field, high):
    assert getattr(cls(**{field: high}), field) == high
    with pytest.raises(GanProbeError, match=rf"must be an integer from \d+ to {high:,}, got {high + 1}") as info:
        cls(**{field: high + 1})
    assert info.value.param.endswith(f".{field}")


def test_noise_seeds_run_from_zero_to_the_seed_bound():
    assert parse_noise("seed:0") == 0
    assert parse_noise(f"seed:{SEED_MAX}") == SEED_MAX
    for bad in ("seed:-1", f"seed:{SEED_MAX + 1}", "seed:1e3", "seed:"):
        with pytest.raises(CheckpointError) as info:
            parse_noise(bad)
        assert info.value.param == "noise"


# --------------------------------------------------------------------------- what still loads


def test_integer_buffers_and_a_stride0_view_of_the_right_shape_still_load(files):
    state, _ = read_state_file(files / "tiny.safetensors")
    assert state["main.1.num_batches_tracked"].dtype == torch.int64  # BatchNorm's counter stays an integer
    gen = load_generator(files / "tiny.safetensors")
    assert gen.module.main[1].num_batches_tracked.dtype == torch.int64
    viewed = load_generator(files / "stride0_fits.pth", LoadOptions(arch="dcgan"))
    assert torch.equal(viewed.module.main[0].weight, torch.zeros_like(viewed.module.main[0].weight))


def test_integer_latents_load_as_their_values(files):
    z = load_latents(files / "z_int.npy", NZ)
    assert z.dtype == torch.float64
    assert torch.equal(z, torch.from_numpy(np.load(files / "z_int.npy")).double())


def test_the_header_checks_do_not_change_what_a_good_file_reads(tmp_path):
    z = np.random.default_rng(1).normal(size=(3, NZ))
    np.save(tmp_path / "a.npy", z)
    np.savez_compressed(tmp_path / "b.npz", z=z, labels=np.arange(3))
    save_file({"latents": torch.from_numpy(z)}, str(tmp_path / "c.safetensors"))
    np.save(tmp_path / "d.npy", np.asfortranarray(z))
    with open(tmp_path / "e.npy", "wb") as fh:
        np.lib.format.write_array(fh, z, version=(2, 0))
    for name in ("a.npy", "b.npz", "c.safetensors", "d.npy", "e.npy"):
        assert torch.equal(load_latents(tmp_path / name, NZ), torch.from_numpy(z)), name
