"""A regular install (a wheel, as users install a library) works away from the source checkout."""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCAN_CHECK = """
import sys, torch
import biomamba, biomamba.train.loop, biomamba.eval.perplexity
from biomamba import ops
from biomamba.ops import cpu
assert sys.prefix in str(cpu.SOURCE_DIR), cpu.SOURCE_DIR  # the wheel's own kernel sources
g = torch.Generator().manual_seed(0)
u, dt, z = (torch.randn(2, 6, 33, generator=g, dtype=torch.float64) for _ in range(3))
A = -torch.rand(6, 4, generator=g, dtype=torch.float64) - 0.1
B, C = (torch.randn(2, 4, 33, generator=g, dtype=torch.float64) for _ in range(2))
got = ops.selective_scan(u, dt, A, B, C, z=z, delta_softplus=True, backend="cpu")
ref = ops.selective_scan(u, dt, A, B, C, z=z, delta_softplus=True, backend="ref")
assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10)
assert ops.resolve_backend("auto", torch.device("cpu")) == "cpu"
try:
    import train
except ImportError:
    pass
else:
    raise AssertionError("a top-level `train` package was installed: " + train.__file__)
print("ok")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, cwd=out)
    (path,) = out.glob("biomamba-*.whl")
    return path


def test_the_wheel_installs_one_top_level_package_and_carries_the_kernel_sources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"biomamba"}
    assert {"biomamba/train/loop.py", "biomamba/eval/perplexity.py", "biomamba/kernels/cpu/selective_scan.cpp",
            "biomamba/kernels/cpu/scan_kernel.h", "biomamba/kernels/cuda/selective_scan.cu"} <= set(names)


@pytest.mark.slow
def test_a_fresh_venv_with_the_wheel_builds_and_runs_the_cpu_kernel_from_any_directory(wheel, tmp_path):
    """Offline: the new venv reuses this environment's torch and dependencies through a .pth file;
    the kernel is JIT-built from the wheel's sources into an empty extensions directory."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "reuse_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions"),
           "PATH": f"{venv / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    scan = subprocess.run([str(python), "-c", SCAN_CHECK], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert scan.returncode == 0 and scan.stdout.strip() == "ok", scan.stderr[-3000:]
    help_text = subprocess.run([str(venv / "bin" / "biomamba"), "--help"], cwd=elsewhere, env=env,
                               capture_output=True, text=True)
    assert help_text.returncode == 0 and "pretrain" in help_text.stdout, help_text.stderr[-2000:]
