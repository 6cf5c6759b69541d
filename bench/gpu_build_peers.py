"""Build the GPU peers (mamba_ssm's selective scan, causal_conv1d) from their source archives, for this GPU only.

    python bench/gpu_build_peers.py --sources DIR --out BUILD     # DIR holds the two .tar.gz sdists
    export PYTHONPATH=BUILD:BUILD/mamba_ssm-2.3.2.post1:BUILD/causal_conv1d-1.7.0:$PYTHONPATH

Why not `pip install 'biomamba[cuda]'`: their setup.py compiles every kernel for eight GPU
architectures (sm_75 ... sm_121) and first tries to download a prebuilt wheel; on a machine without
network and with minutes to spare that does not finish. This builds the same sources with the same
nvcc flags (copied from their setup.py) through torch.utils.cpp_extension.load, which compiles for
the visible GPU's architecture only, in parallel (ninja), into BUILD/selective_scan_cuda*.so and
BUILD/causal_conv1d_cuda*.so; their Python packages are used from the unpacked archives.
"""
import argparse
import shutil
import tarfile
import time
from pathlib import Path

# mamba_ssm 2.3.2 / causal_conv1d 1.7.0 setup.py's nvcc flags, less their -gencode list
NVCC_FLAGS = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
              "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo"]

SCAN_SOURCES = ["selective_scan.cpp", "selective_scan_fwd_fp32.cu", "selective_scan_fwd_fp16.cu",
                "selective_scan_fwd_bf16.cu"] + [f"selective_scan_bwd_{dtype}_{kind}.cu"
                                                 for dtype in ("fp32", "fp16", "bf16")
                                                 for kind in ("real", "complex")]
CONV_SOURCES = ["causal_conv1d.cpp", "causal_conv1d_fwd.cu", "causal_conv1d_bwd.cu", "causal_conv1d_update.cu"]


def unpack(archive: Path, out: Path) -> Path:
    """The archive's top folder under out (unpacked once)."""
    with tarfile.open(archive) as tar:
        top = out / tar.getnames()[0].split("/")[0]
        if not top.is_dir():
            tar.extractall(out, filter="data")
    return top


def build(name: str, source_dir: Path, sources: list, out: Path, verbose: bool) -> float:
    from torch.utils.cpp_extension import load

    start = time.perf_counter()
    # Each extension in its own build folder: ninja keeps one build.ninja per folder, and two builds
    # running side by side in one folder overwrite each other's (2026-12-04: causal_conv1d's .so was
    # never linked). The built .so is then copied up to `out`, the folder put on PYTHONPATH.
    build_dir = out / f"build-{name}"
    build_dir.mkdir(parents=True, exist_ok=True)
    module = load(name=name, sources=[str(source_dir / s) for s in sources],
                  extra_include_paths=[str(source_dir)], extra_cflags=["-O3", "-std=c++17"],
                  extra_cuda_cflags=NVCC_FLAGS, build_directory=str(build_dir), verbose=verbose)
    shutil.copy2(module.__file__, out / Path(module.__file__).name)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", required=True, type=Path, help="folder with mamba_ssm-*.tar.gz, causal_conv1d-*.tar.gz")
    parser.add_argument("--out", required=True, type=Path, help="build folder (put it on PYTHONPATH)")
    parser.add_argument("--only", choices=("mamba_ssm", "causal_conv1d"), help="build one of the two")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():  # cpp_extension would otherwise compile for every architecture
        raise SystemExit("gpu_build_peers: needs a CUDA device (it builds for the visible GPU only)")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = {"mamba_ssm": ("selective_scan_cuda", "mamba_ssm-*.tar.gz", "csrc/selective_scan", SCAN_SOURCES),
            "causal_conv1d": ("causal_conv1d_cuda", "causal_conv1d-*.tar.gz", "csrc", CONV_SOURCES)}
    for package, (module, pattern, csrc, sources) in jobs.items():
        if args.only and args.only != package:
            continue
        archives = sorted(args.sources.glob(pattern))
        if not archives:
            raise SystemExit(f"gpu_build_peers: no {pattern} in {args.sources} "
                             f"(`pip download --no-deps --no-binary :all: {package}` on a machine with network)")
        top = unpack(archives[-1], args.out)
        seconds = build(module, top / csrc, sources, args.out, args.verbose)
        print(f"built {module} ({package}, {top.name}) in {seconds:.0f} s; python sources in {top}")


if __name__ == "__main__":
    main()
