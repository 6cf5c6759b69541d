// The instruction set the CPU kernels use here, chosen at run time: the extensions are built
// without -march flags (a cached build stays portable), and each kernel is compiled for the
// baseline, AVX2+FMA and AVX-512 inside functions with a target attribute.
#pragma once

#include <algorithm>
#include <cstdlib>

namespace biomamba_isa {

// 3 = AVX-512 with VNNI (vpdpbusd: the decoding step's int8 x int8 dot products of int8-dynamic; Ice Lake
// and Zen 4 on), 2 = AVX-512 (F, VL, DQ, BW: the decoding step's masked 8- and 16-bit loads), 1 = AVX2+FMA,
// 0 = baseline (SSE2/NEON); the scans use nothing past 2. BIOMAMBA_CPU_ISA=0/1/2/3 caps it, read on every
// call, so that tests run every path the CPU has (the decoding step reads it once per call: a token, or a
// whole prompt). An empty value counts as unset.
inline int isa_level() {
  int level = 0;
#if defined(__x86_64__) || defined(__i386__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = 1;
  if (level == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
    level = 2;
  if (level == 2 && __builtin_cpu_supports("avx512vnni")) level = 3;
#endif
  const char* cap = std::getenv("BIOMAMBA_CPU_ISA");
  if (cap != nullptr && *cap != '\0') level = std::min(level, std::atoi(cap));
  return level;
}

}  // namespace biomamba_isa

#if defined(__x86_64__) || defined(__i386__)
#define ISA_AVX2 __attribute__((target("avx2,fma")))
#define ISA_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define ISA_AVX512_VNNI __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx512vnni,avx2,fma")))
#else  // no such paths: isa_level() is 0, and these build as baseline copies
#define ISA_AVX2
#define ISA_AVX512
#define ISA_AVX512_VNNI
#endif
