"""Copies of tensors in transparent huge pages (2 MB), for the weights a CPU decoding step streams every token.

A 130m step reads 0.13-0.52 GB of weights a token: in 4 KB pages that is 32k-128k pages, far more than the TLB
holds, so each is a miss and a page walk. In 2 MB pages the same weights are 64-256 pages. Measured on a
2-vCPU Zen 4 EPYC (2026-12-07, `python bench/huge_pages.py`, the same model both ways in turns, 8 rounds):
130m decoded 1.03-1.12x as fast with its step's weights in huge pages (Mamba-1 and Mamba-2; fp32,
bf16-weights, int8), and a bare 300 MB read took 37.1 GB/s against 33.8.

Linux backs an anonymous private mapping with 2 MB pages where madvise(MADV_HUGEPAGE) asks for them and
/sys/kernel/mm/transparent_hugepage/enabled is "always" or "madvise" (most distributions' default is
madvise). torch's allocator asks for them only under THP_MEM_ALLOC_ENABLE=1, read once per process, so the
copies here make their own mapping. Elsewhere (another OS, THP "never", a tensor off the CPU) `copies`
returns plain contiguous copies and nothing else changes; BIOMAMBA_HUGE_PAGES=0 asks for that everywhere.
"""
import functools
import mmap
import os
import sys

import torch

HUGE_PAGE = 2 << 20
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
ALIGN = 4096  # each copy starts on its own 4 KB page within a shared mapping


def available() -> bool:
    """Whether copies go to huge pages: the system allows them (Linux, THP "always" or "madvise") and
    BIOMAMBA_HUGE_PAGES is not 0 (read on every call: a benchmark sets it to measure the difference)."""
    return os.environ.get("BIOMAMBA_HUGE_PAGES", "1").strip() != "0" and _system_allows()


@functools.lru_cache(maxsize=None)
def _system_allows() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        with open(THP_SETTING) as setting:
            return "[never]" not in setting.read()
    except OSError:
        return False


def _mapping(nbytes):
    """(a fresh anonymous private mapping of at least nbytes past `start`, start): `start` is where a 2 MB page
    begins, and the whole 2 MB pages from there are advised huge (a part page at the end stays in 4 KB pages:
    asking for it would commit all 2 MB)."""
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    address = torch.frombuffer(region, dtype=torch.uint8).data_ptr()  # (the view is dropped at once)
    start = -address % HUGE_PAGE
    if nbytes >= HUGE_PAGE:
        region.madvise(mmap.MADV_HUGEPAGE, start, nbytes - nbytes % HUGE_PAGE)
    return region, start


def copies(tensors):
    """Contiguous copies of `tensors` (same values, dtype and shape) laid out one after another in one mapping
    backed by huge pages where `available`; plain contiguous copies where not, or when one is off the CPU.
    Each copy has a storage of its own, exactly its bytes (torch.save writes no more), which holds the mapping
    for as long as it lives."""
    tensors = list(tensors)
    if not available() or any(t.device.type != "cpu" for t in tensors):
        return [t.detach().clone(memory_format=torch.contiguous_format) for t in tensors]
    offsets, end = [], 0
    for t in tensors:
        offsets.append(end)
        end += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
    region, start = _mapping(max(end, 1))
    out = []
    for t, offset in zip(tensors, offsets):
        nbytes = t.numel() * t.element_size()
        if nbytes == 0:
            out.append(torch.empty(t.shape, dtype=t.dtype))
            continue
        copy = torch.frombuffer(region, dtype=torch.uint8, count=nbytes, offset=start + offset)
        copy = copy.view(t.dtype).view(t.shape)
        copy.copy_(t.detach())
        out.append(copy)
    return out


def is_advised(tensor) -> bool:
    """Whether the memory under `tensor` lies in a mapping advised huge (its VmFlags carry "hg" in
    /proc/self/smaps): what `copies` asks of Linux, whether or not free 2 MB pages were found."""
    address = tensor.data_ptr()
    try:
        with open("/proc/self/smaps") as smaps:
            inside = False
            for line in smaps:
                head = line.split(maxsplit=1)[0]
                if "-" in head and not head.endswith(":"):
                    low, high = (int(bound, 16) for bound in head.split("-"))
                    inside = low <= address < high
                elif inside and head == "VmFlags:":
                    return "hg" in line.split()[1:]
    except OSError:
        return False
    return False
