"""Data-parallel runs under torchrun (gloo on the CPU): the reports of 1 and 2 processes agree field by field.

The torchrun tests start real process groups (``python -m torch.distributed.run --standalone``), two ranks
with one thread each; the single-process reference runs with the same thread count. The sharding and the
failure protocol are also tested in-process on their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from gan_probe import distributed
from gan_probe.distributed import World
from gan_probe.errors import GanProbeError

# --- in-process: the sharding and the failure rule ------------------------------------------------------------------


def test_chunks_are_those_of_one_process_and_every_chunk_has_one_owner():
    parts = distributed.chunks(10, 4)
    assert [(s.start, s.stop) for s in parts] == [(0, 4), (4, 8), (8, 10)]
    for size in (1, 2, 3, 5):
        owners = [distributed.owned(7, World(rank, size)) for rank in range(size)]
        assert sorted(i for o in owners for i in o) == list(range(7))
        assert all(o == list(range(rank, 7, size)) for rank, o in enumerate(owners))


def test_map_batches_in_one_process_keeps_finished_chunks_on_interrupt():
    calls = []

    def fn(sl: slice) -> int:
        if sl.start == 4:
            raise KeyboardInterrupt
        calls.append(sl.start)
        return sl.stop - sl.start

    done, interrupted = distributed.map_batches(10, 2, fn, keep_on_interrupt=True)
    assert (done, interrupted) == ([2, 2], True)
    with pytest.raises(KeyboardInterrupt):
        distributed.map_batches(10, 2, fn)


def test_nested_map_batches_and_exchange_stay_local():
    with distributed.local():
        assert distributed.exchange(3) == [3]
        done, _ = distributed.map_batches(5, 2, lambda sl: sl.start)
    assert done == [0, 2, 4]


@pytest.mark.parametrize(
    "messages, expected, code",
    [
        ([("ok", None), ("fail", ("boom", 1))], "rank 1: boom", 1),
        ([("fail", ("a", 1)), ("fail", ("b", 1))], "rank 0: a", 1),
        ([("fail", ("same", 1)), ("fail", ("same", 1))], "same", 1),  # every rank alike: no rank to name
        ([("fail", ("interrupted", 130)), ("fail", ("interrupted", 130))], "interrupted", 130),
        ([("ok", None), ("fail", ("interrupted", 130))], "rank 1: interrupted", 130),
    ],
)
def test_failure_rule(messages, expected, code):
    failure = distributed._failure(messages)
    assert failure is not None and str(failure) == expected and failure.code == code
    assert distributed._failure([("ok", 1), ("ok", 2)]) is None


# --- torchrun: 1 and 2 processes -------------------------------------------------------------------------------------

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("RANK", None)
ENV.pop("WORLD_SIZE", None)


def _single(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gan_probe", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )


def _torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.run(
        [*launcher, "-m", "--", "gan_probe", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )


#: provenance that differs between runs by design; everything else must be equal
VOLATILE = {"argv", "timings", "world", "files", "torch_threads"}


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in one" for k in set(a) ^ set(b) if k not in VOLATILE]
        for k in set(a) & set(b):
            if k not in VOLATILE and not k.endswith("_s"):
                out += _differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


CASES = {
    "loglik-grid": ["loglik", "--num", "6", "--batch-size", "2", "--grid", "--grid-size", "4"],
    "loglik-slq": ["loglik", "--num", "5", "--batch-size", "2", "--method", "slq", "--check"],
    "eigvecs": ["eigvecs", "--num", "3", "--batch-size", "1", "--top", "3", "--traversal-steps", "3"],
    "veff": ["veff", "--num", "5", "--batch-size", "2", "--k", "6"],
    "ascend": ["ascend", "--num", "3", "--batch-size", "1", "--steps", "3"],
    "pag": ["pag", "--limit", "6", "--batch-size", "2", "--steps", "15", "--prior-samples", "40", "--top", "2"],
    # 8 held-out points and 8 model samples in batches of 4: both ranks evaluate, refine and run AIS chains
    "divergence": [
        "divergence",
        *("--limit", "32", "--batch-size", "4", "--steps", "3", "--importance", "2", "--model-samples", "8"),
        *("--refine", "2", "--ais", "2"),
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_write_what_one_writes(case, tmp_path):
    args = [*CASES[case], "--json"]
    one = _single([*args, "--out", "one"], tmp_path)
    two = _torchrun([*args, "--out", "two"], tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)  # rank 1 printed nothing: one JSON document
    assert b["world"] == {"size": 2, "backend": "gloo"} and a["world"] == {"size": 1, "backend": None}
    assert _differences(a, b) == []
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        if name != "report.json":
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_bench_throughput_is_the_aggregate_of_two_processes(tmp_path):
    args = ["bench", "throughput", "--num", "8", "--batch-sizes", "2", "--json", "--out", "b"]
    run = _torchrun(args, tmp_path)
    assert run.returncode == 0, run.stderr
    res = json.loads(run.stdout)["results"]
    (row,) = res["rows"]
    assert row["world_size"] == 2 and row["idle_ranks"] == 0 and row["num_latents"] == 8
    assert row["latents_per_s"] == pytest.approx(8 / row["seconds"])
    sc = res["scaling"]
    assert sc["speedup"] == pytest.approx(sc["latents_per_s"] / sc["single_process_latents_per_s"])
    assert [t["met"] for t in res["targets"]] == [None, None]  # GPU targets do not apply on the CPU
    refused = _torchrun(["bench", "--out", "c"], tmp_path)
    assert refused.returncode == 1 and "gan-probe bench throughput" in refused.stdout + refused.stderr


FAILING = textwrap.dedent(
    """
    import os

    import torch


    def picky():
        if os.environ.get("RANK") == "1":
            raise RuntimeError("no weights on this machine")
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.Tanh())
    """
)


def _error_lines(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("error:")]


def test_a_failing_rank_stops_every_rank_with_one_line_naming_it(tmp_path):
    (tmp_path / "picky_mod.py").write_text(FAILING)
    args = ["loglik", "--generator", "picky_mod:picky", "--nz", "4", "--num", "8", "--batch-size", "2"]
    run = _torchrun([*args, "--out", "never"], tmp_path)
    assert run.returncode == 1
    (line,) = _error_lines(run)
    assert line.startswith("error: rank 1: ") and "no weights on this machine" in line, line
    assert not (tmp_path / "never").exists()
    assert "Traceback (most recent call last)" not in run.stdout  # torchrun's own summary goes to stderr
    alone = _single([*args, "--out", "fine"], tmp_path)  # the same generator in one process (rank unset) works
    assert alone.returncode == 0, alone.stderr


def test_the_same_error_on_every_rank_is_one_line_without_a_rank(tmp_path):
    run = _torchrun(["loglik", "missing.safetensors", "--out", "never"], tmp_path)
    assert run.returncode == 1
    (line,) = _error_lines(run)
    assert "missing.safetensors" in line and "rank" not in line, line
    assert not (tmp_path / "never").exists()


def test_fewer_batches_than_ranks_is_said(tmp_path):
    run = _torchrun(["loglik", "--num", "2", "--batch-size", "2", "--out", "o"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "1 of 2 ranks had nothing to do for 2 items in batches of 2" in " ".join(run.stderr.split())


def test_world_of_one_under_torchrun_is_a_single_process(tmp_path):
    run = _torchrun(["loglik", "--num", "2", "--json", "--out", "o"], tmp_path, nproc=1)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["world"] == {"size": 1, "backend": None}


def test_a_torch_without_distributed_is_one_line_under_torchrun(monkeypatch):
    """Launched as one of two ranks by a torch built without torch.distributed: a one-line error naming the
    fix, and no process group joined (the runs above show the gloo group of a torch that has one)."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    with pytest.raises(GanProbeError, match="this torch build has no torch.distributed: run without torchrun"):
        distributed.setup(torch.device("cpu"))
    assert not distributed.joined() and not torch.distributed.is_initialized()


# --- devices, the environment and the chunk size (no GPU needed) ----------------------------------------------------


def test_each_local_rank_takes_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert distributed.local_device(torch.device("cuda"), 2) == torch.device("cuda", 2)
    assert distributed.local_device(torch.device("cuda:0"), 3) == torch.device("cuda", 3)
    assert distributed.local_device(torch.device("cuda:1"), 3) == torch.device("cuda", 1)  # an explicit index stays
    assert distributed.local_device(torch.device("cpu"), 3) == torch.device("cpu")
    with pytest.raises(GanProbeError, match="local rank 4 has no GPU of its own: this machine has 4"):
        distributed.local_device(torch.device("cuda"), 4)


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (1, 4, 1)),
        ({"RANK": "5", "WORLD_SIZE": "8"}, (5, 8, 5)),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "not integers"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "not in 0..WORLD_SIZE-1"),
    ],
)
def test_launch_environment(monkeypatch, env, expected):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if isinstance(expected, str):
        with pytest.raises(GanProbeError, match=expected):
            distributed.launched()
    else:
        assert distributed.launched() == expected


def test_auto_chunk_size_follows_free_memory(dcgan_gen):
    from dataclasses import replace

    from gan_probe.analyses.memory import activation_elements
    from gan_probe.spectral.jacobian import default_chunk_size
    from gan_probe.spectral.plan import PlanSizes, choose_chunk

    nz, batch = dcgan_gen.nz, 2
    act = activation_elements(dcgan_gen)
    sizes = PlanSizes(nz=nz, output_dim=dcgan_gen.output_dim, batch=batch, itemsize=8, activations=act, available=None)
    default = default_chunk_size(batch, nz)
    assert choose_chunk(sizes) == default  # unknown memory: the fixed budget
    per_axis = 2 * batch * act * 8  # float64 generator
    held = batch * dcgan_gen.output_dim * nz * (8 + 16)
    assert choose_chunk(replace(sizes, available=held + 2 * 3 * per_axis)) == min(default, 3)  # half the rest: 3 axes
    assert choose_chunk(replace(sizes, available=held // 2)) == 1  # never below 1: the memory check refuses the rest
    assert choose_chunk(replace(sizes, available=10**15)) == default  # the CPU never goes beyond the budget
    assert choose_chunk(replace(sizes, available=10**15, on_gpu=True)) == nz  # a GPU takes every axis that fits
