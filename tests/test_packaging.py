"""What the wheel carries: every sub-package, the bundled files (a non-editable install runs with no CKPT),
py.typed, one version; and not sample_checkpoints/train.py, a script rather than a module."""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import gan_probe

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ("*.safetensors", "*.npz", "README.md", "samples/*.png")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def wheel_files_from_config() -> set[str]:
    """Paths inside the wheel that setuptools' build_py produces from pyproject.toml (modules and package data).

    Reads the configuration the way a build does (including the build_py hook it names) and
    asks build_py for its modules and package data; builds nothing and writes nothing.
    """
    from setuptools.dist import Distribution

    with contextlib.chdir(ROOT):
        dist = Distribution()
        dist.script_name = "setup.py"  # what setuptools.build_meta names it
        dist.parse_config_files()
        build_py = dist.get_command_obj("build_py")
        build_py.ensure_finalized()
        files = {"/".join([*package.split("."), f"{module}.py"]) for package, module, _ in build_py.find_all_modules()}
        for package, _, _, names in build_py.get_data_files_without_manifest():
            files |= {"/".join([*package.split("."), *Path(name).parts]) for name in names}
    return files


def test_every_subpackage_is_listed_in_pyproject():
    config = pyproject()["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gan_probe").rglob("__init__.py")}
    assert on_disk <= listed, f"missing from [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert config["package-dir"]["gan_probe.sample_checkpoints"] == "sample_checkpoints"


def test_version_lives_in_one_place():
    project = pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "gan_probe._version.__version__"
    tree = ast.parse((ROOT / "gan_probe" / "_version.py").read_text())
    (assign,) = [node for node in tree.body if isinstance(node, ast.Assign)]
    assert [t.id for t in assign.targets] == ["__version__"]
    assert gan_probe.__version__ == ast.literal_eval(assign.value)


def test_python_floor_matches_ruff_target():
    """The floor is the oldest Python the suite is run on (no torch for 3.10 could be installed to test it)."""
    config = pyproject()
    assert config["project"]["requires-python"] == ">=3.11"
    assert config["tool"]["ruff"]["target-version"] == "py311"


def test_wheel_ships_code_data_and_py_typed_but_not_train_py():
    files = wheel_files_from_config()
    modules = {"/".join(p.relative_to(ROOT).parts) for p in (ROOT / "gan_probe").rglob("*.py")}
    assert modules <= files, f"modules left out of the wheel: {sorted(modules - files)}"
    assert "gan_probe/py.typed" in files
    bundled = {
        "gan_probe/sample_checkpoints/" + "/".join(p.relative_to(ROOT / "sample_checkpoints").parts)
        for pattern in BUNDLED
        for p in (ROOT / "sample_checkpoints").glob(pattern)
    }
    assert {
        "gan_probe/sample_checkpoints/mnist-dcgan-nz32.safetensors",
        "gan_probe/sample_checkpoints/mnist-heldout.npz",
    } <= bundled
    assert bundled <= files, f"bundled files left out of the wheel: {sorted(bundled - files)}"
    assert (ROOT / "sample_checkpoints" / "train.py").is_file()
    assert not any(f.startswith("gan_probe/sample_checkpoints/") and f.endswith(".py") for f in files)
    assert not any(f.startswith(("tests/", "build_hooks")) for f in files)


def test_sdist_keeps_what_the_wheel_leaves_out():
    """build_hooks.py is needed to build a wheel from the sdist; train.py is how the checkpoints were made."""
    lines = (ROOT / "MANIFEST.in").read_text().splitlines()
    assert "include build_hooks.py" in lines and "include sample_checkpoints/train.py" in lines
    assert pyproject()["tool"]["setuptools"]["cmdclass"] == {"build_py": "build_hooks.BuildPy"}


def test_built_wheel_contents_and_bundled_checkpoint(tmp_path):
    """Build the real wheel from a copy of the sources (about 4 s); its gan_probe finds the checkpoint inside itself."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", "build_hooks.py"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "gan_probe", src / "gan_probe", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "sample_checkpoints", src / "sample_checkpoints")
    out = tmp_path / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("gan_probe-*.whl")
    assert wheel.name.startswith(f"gan_probe-{gan_probe.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    shipped = {n for n in names if ".dist-info/" not in n}
    assert shipped == wheel_files_from_config()
    assert "gan_probe/sample_checkpoints/train.py" not in names
    code = "from gan_probe.models.bundled import default_checkpoint; print(default_checkpoint())"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (
        Path(proc.stdout.strip())
        == tmp_path / "site" / "gan_probe" / "sample_checkpoints" / "mnist-dcgan-nz32.safetensors"
    )
