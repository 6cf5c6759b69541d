// The vector loops of the decoding step (decode_step.cpp), each built for the baseline, AVX2+FMA (8 lanes)
// and AVX-512 (16 lanes, masked tails) in functions with a target attribute (isa.h); the entry points at the
// bottom take the level the step read once per call (BIOMAMBA_CPU_ISA caps it):
//   - dot / dot4: a weight row (float32, bfloat16 or int8) against float32 activations, one row or four;
//   - dot_bf16_pairs: the bfloat16 row two weights a 32-bit word (batch 1);
//   - ssd_channel: a Mamba-2 channel's state step s = decay s + dx B, returning <s, C>;
//   - mamba1_state_step: a Mamba-1 channel's s = s exp(delta A) + delta B x, returning <s, C>;
//   - silu_channels: out = silu(z) (the conv's activation) or silu(z) * y (the gates), a range of channels;
//   - Int8Activations / dot_int8_activations: int8-dynamic's activations rounded to int8 in blocks of 32, and an
//     int8 row's dot product with them in integers (AVX-512 VNNI, AVX2).
// A CPU without AVX-512 (AMD before Zen 4, most laptops) decoded through scalar loops until the AVX2 builds:
// 130m fp32 at 9-13 tok/s on a Zen 3 EPYC, 40-43 after (bench/RESULTS.md "A fourth CPU").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "isa.h"
#include "scan_math.h"  // Lanes<float, W>: the scan kernel's Cephes exp (libm's expf does not vectorise here)

#if defined(__x86_64__)
#include <immintrin.h>
#define BIOMAMBA_X86 1
#endif

namespace biomamba_decode {

enum Kind { kF32 = 0, kBF16 = 1, kI8 = 2 };

constexpr int64_t elem_size(Kind kind) { return kind == kF32 ? 4 : kind == kBF16 ? 2 : 1; }

inline float bf16_to_float(uint16_t bits) {
  uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

template <Kind K>
SCAN_INLINE float weight_at(const void* w, int64_t i) {
  if constexpr (K == kF32) return static_cast<const float*>(w)[i];
  else if constexpr (K == kBF16) return bf16_to_float(static_cast<const uint16_t*>(w)[i]);
  else return static_cast<float>(static_cast<const int8_t*>(w)[i]);
}

// ---------------------------------------------------------------------------- baseline

template <Kind K>
float dot_base(const void* w, const float* x, int64_t k) {
  float sum = 0.f;
  for (int64_t i = 0; i < k; ++i) sum += weight_at<K>(w, i) * x[i];
  return sum;
}

// The AVX-512 batch-1 dot products may ask for the weights 8 KB ahead of the ones they read (weight_hints).
// The hardware prefetcher alone left a Xeon (Sapphire Rapids class, 2 vCPUs) waiting on the weight loads:
// 130m Mamba-2 decoded at 57-61 tok/s in int8 without the hint and 84-89 with it (4 KB: 77-87, 2 KB: 72-80;
// fp32 30-33 against 36; 2026-12-06, interleaved runs).
constexpr int64_t kPrefetchBytes = 8192;

// Whether the AVX-512 dot products give that hint: on Intel only. AMD's prefetchers keep up alone and the
// hints cost it: on a Zen 4 EPYC (2 vCPUs, medians of 6 interleaved runs, 130m, 2026-12-06) Mamba-1 decoded
// at 150.5 tok/s in int8 without them against 129.9 with them, bf16 113.7 against 99.1, fp32 72.3 against 63.6,
// Mamba-2 bf16 113.1 against 101.1 (fp32 and int8 within the noise); the Zen 3 measure is at dot_avx2.
// BIOMAMBA_DECODE_HINTS=0/1 overrides the choice (read once per linear layer a call; an empty value is unset).
inline bool weight_hints() {
  const char* set = std::getenv("BIOMAMBA_DECODE_HINTS");
  if (set != nullptr && *set != '\0') return std::atoi(set) != 0;
#ifdef BIOMAMBA_X86
  return __builtin_cpu_is("intel");
#else
  return false;
#endif
}

// The states of the next channels (each head's (p, n) states lie one after another) are asked for 4 KB
// ahead (both vector builds): 130m Mamba-2 int8 decoded at 86-114 tok/s with it against 81-91 without
// (the same Xeon, interleaved runs); on a Zen 3 EPYC 85 against 81 (medians of 8, within the noise).
constexpr int64_t kStatePrefetchBytes = 4096;

// Four rows' dot products with x at once: x is loaded once for the four, four independent FMA chains,
// and (AVX-512, with weight_hints) the same columns of the next four rows are prefetched (kAhead rows
// ahead), so the reads stay a few KB ahead of the arithmetic through every row boundary.
constexpr int64_t kAhead = 4;

// The three builds of this recurrence are written out (not one Lanes<float, W> template as the Mamba-1 step):
// the vector ones need FMA without -ffp-contract, two partial sums, the AVX-512 one masked tails.
inline float ssd_channel_base(float* s, const float* B, const float* C, float decay, float dx, int64_t n) {
  float out = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    s[i] = decay * s[i] + dx * B[i];
    out += s[i] * C[i];
  }
  return out;
}

// W lanes of the state at a time (Lanes<float, W>: one exp per W states), then a scalar tail.
template <int W>
SCAN_INLINE float mamba1_state_lanes(float* s, const float* A, const float* B, const float* C, float delta, float x,
                                     int64_t n) {
  using Lanes = biomamba_cpu::Lanes<float, W>;
  auto sums = Lanes::set1(0.f);
  const auto dv = Lanes::set1(delta), dx = Lanes::set1(delta * x);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const auto state = Lanes::load(s + i) * Lanes::exp(dv * Lanes::load(A + i)) + dx * Lanes::load(B + i);
    Lanes::store(s + i, state);
    sums += state * Lanes::load(C + i);
  }
  float out = Lanes::sum(sums);
  for (; i < n; ++i) {
    s[i] = s[i] * std::exp(delta * A[i]) + delta * B[i] * x;
    out += s[i] * C[i];
  }
  return out;
}

// out[i] = silu(z[i]) * (y ? y[i] : 1) = z / (1 + exp(-z)) * y. Scalar (libm's expf through the PLT, one call a
// channel) these took 4% of a 16-token 130m Mamba-2 prompt pass (perf, a 2-vCPU Zen 4, 2026-12-07).
template <int W>
SCAN_INLINE void silu_lanes(const float* z, const float* y, float* out, int64_t n) {
  using Lanes = biomamba_cpu::Lanes<float, W>;
  const auto one = Lanes::set1(1.f);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const auto v = Lanes::load(z + i);
    const auto gated = v / (one + Lanes::exp(-v));
    Lanes::store(out + i, y ? gated * Lanes::load(y + i) : gated);
  }
  for (; i < n; ++i) {
    const float gated = z[i] / (1.f + std::exp(-z[i]));
    out[i] = y ? gated * y[i] : gated;
  }
}

inline void silu_base(const float* z, const float* y, float* out, int64_t n) { silu_lanes<4>(z, y, out, n); }

// mamba1_state_base / _avx2 / _avx512: one body (mamba1_state_lanes, always inlined), compiled once per
// instruction set by the function it is inlined into: these wrappers exist for their target attribute.
inline float mamba1_state_base(float* s, const float* A, const float* B, const float* C, float delta, float x,
                               int64_t n) {
  return mamba1_state_lanes<4>(s, A, B, C, delta, x, n);
}

#ifdef BIOMAMBA_X86
// ---------------------------------------------------------------------------- AVX2 + FMA: 8 lanes

// 8 weights of a row as floats.
template <Kind K>
ISA_AVX2 SCAN_INLINE __m256 load8(const void* w, int64_t i) {
  if constexpr (K == kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  } else if constexpr (K == kBF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(w) + i));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
}

ISA_AVX2 SCAN_INLINE float sum8(__m256 v) { return biomamba_cpu::lane_sum(static_cast<biomamba_cpu::v8sf>(v)); }

// One row front to back, 32 weights a turn in four accumulators (FMA latency); the last k % 8 columns in
// scalar. No prefetch hint here, unlike the AVX-512 build: on a Zen 3 EPYC (2 vCPUs) the 8 KB hint cut
// fp32 gemv reads from 27 to 22-24 GB/s and 130m Mamba-2 fp32 decoding from 39.7 to 35.5 tok/s (medians of 8
// interleaved runs; int8 85 against 88, within the noise; 2026-12-06).
template <Kind K>
ISA_AVX2 float dot_avx2(const void* w, const float* x, int64_t k) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    a0 = _mm256_fmadd_ps(load8<K>(w, i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(load8<K>(w, i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(load8<K>(w, i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(load8<K>(w, i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(load8<K>(w, i), _mm256_loadu_ps(x + i), a0);
  float sum = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < k; ++i) sum += weight_at<K>(w, i) * x[i];
  return sum;
}

// dot4_avx512 (below) in 8 lanes; `prefetch` is ignored, as in dot_avx2 (no weight hints in this build).
template <Kind K>
ISA_AVX2 void dot4_avx2(const char* w, int64_t row_bytes, const float* x, int64_t k, bool /*prefetch*/, float* out) {
  const char *w0 = w, *w1 = w + row_bytes, *w2 = w + 2 * row_bytes, *w3 = w + 3 * row_bytes;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    a0 = _mm256_fmadd_ps(load8<K>(w0, i), xv, a0);
    a1 = _mm256_fmadd_ps(load8<K>(w1, i), xv, a1);
    a2 = _mm256_fmadd_ps(load8<K>(w2, i), xv, a2);
    a3 = _mm256_fmadd_ps(load8<K>(w3, i), xv, a3);
  }
  out[0] = sum8(a0), out[1] = sum8(a1), out[2] = sum8(a2), out[3] = sum8(a3);
  for (; i < k; ++i) {
    out[0] += weight_at<K>(w0, i) * x[i];
    out[1] += weight_at<K>(w1, i) * x[i];
    out[2] += weight_at<K>(w2, i) * x[i];
    out[3] += weight_at<K>(w3, i) * x[i];
  }
}

// dot_bf16_pairs_avx512 (below) in 8 lanes: 32 weights a turn, without the prefetch hint (dot_avx2 says why).
inline ISA_AVX2 float dot_bf16_pairs_avx2(const uint16_t* w, const float* x, const float* pairs, int64_t k) {
  const float *even = pairs, *odd = pairs + (k + 1) / 2;
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 16));
    a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w0, 16)), _mm256_loadu_ps(even + i / 2), a0);
    a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(w0, high)), _mm256_loadu_ps(odd + i / 2), a1);
    a2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w1, 16)), _mm256_loadu_ps(even + i / 2 + 8), a2);
    a3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(w1, high)), _mm256_loadu_ps(odd + i / 2 + 8), a3);
  }
  float sum = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < k; ++i) sum += bf16_to_float(w[i]) * x[i];
  return sum;
}

inline ISA_AVX2 float ssd_channel_avx2(float* s, const float* B, const float* C, float decay, float dx, int64_t n) {
  const __m256 dv = _mm256_set1_ps(decay), xv = _mm256_set1_ps(dx);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(s + i) + kStatePrefetchBytes, _MM_HINT_T0);
    const __m256 s0 = _mm256_fmadd_ps(dv, _mm256_loadu_ps(s + i), _mm256_mul_ps(xv, _mm256_loadu_ps(B + i)));
    const __m256 s1 = _mm256_fmadd_ps(dv, _mm256_loadu_ps(s + i + 8), _mm256_mul_ps(xv, _mm256_loadu_ps(B + i + 8)));
    _mm256_storeu_ps(s + i, s0);
    _mm256_storeu_ps(s + i + 8, s1);
    a0 = _mm256_fmadd_ps(s0, _mm256_loadu_ps(C + i), a0);
    a1 = _mm256_fmadd_ps(s1, _mm256_loadu_ps(C + i + 8), a1);
  }
  float out = sum8(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) {
    s[i] = decay * s[i] + dx * B[i];
    out += s[i] * C[i];
  }
  return out;
}

inline ISA_AVX2 float mamba1_state_avx2(float* s, const float* A, const float* B, const float* C, float delta, float x,
                                 int64_t n) {
  return mamba1_state_lanes<8>(s, A, B, C, delta, x, n);
}

inline ISA_AVX2 void silu_avx2(const float* z, const float* y, float* out, int64_t n) { silu_lanes<8>(z, y, out, n); }

// ---------------------------------------------------------------------------- AVX-512: 16 lanes

// 16 weights of a row as floats; `mask` selects the tail's lanes.
template <Kind K>
ISA_AVX512 SCAN_INLINE __m512 load16(const void* w, int64_t i, __mmask16 mask) {
  if constexpr (K == kF32) {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(w) + i);
  } else if constexpr (K == kBF16) {
    const __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(w) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    const __m128i q = _mm_maskz_loadu_epi8(mask, static_cast<const int8_t*>(w) + i);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
  }
}

ISA_AVX512 SCAN_INLINE __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
}

// One row front to back: four accumulators keep the FMA latency hidden; the tail is masked; with Hint, the
// weights kPrefetchBytes ahead are asked for.
template <Kind K, bool Hint>
ISA_AVX512 float dot_avx512(const void* w, const float* x, int64_t k) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  int64_t i = 0;
  constexpr int64_t E = elem_size(K);
  const char* bytes = static_cast<const char*>(w);
  for (; i + 64 <= k; i += 64) {
    if constexpr (Hint)
      for (int64_t line = 0; line < 64 * E; line += 64)
        _mm_prefetch(bytes + i * E + line + kPrefetchBytes, _MM_HINT_T0);
    a0 = _mm512_fmadd_ps(load16<K>(w, i, 0xFFFF), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(load16<K>(w, i + 16, 0xFFFF), _mm512_loadu_ps(x + i + 16), a1);
    a2 = _mm512_fmadd_ps(load16<K>(w, i + 32, 0xFFFF), _mm512_loadu_ps(x + i + 32), a2);
    a3 = _mm512_fmadd_ps(load16<K>(w, i + 48, 0xFFFF), _mm512_loadu_ps(x + i + 48), a3);
  }
  for (; i < k; i += 16) {
    const __mmask16 mask = tail_mask(k - i);
    a0 = _mm512_fmadd_ps(load16<K>(w, i, mask), _mm512_maskz_loadu_ps(mask, x + i), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

template <Kind K>
ISA_AVX512 void dot4_avx512(const char* w, int64_t row_bytes, const float* x, int64_t k, bool prefetch, float* out) {
  constexpr int64_t E = elem_size(K);
  const char *w0 = w, *w1 = w + row_bytes, *w2 = w + 2 * row_bytes, *w3 = w + 3 * row_bytes;
  const int64_t ahead = kAhead * row_bytes;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 mask = tail_mask(k - i);
    if (prefetch && (i * E) % 64 == 0) {
      _mm_prefetch(w0 + i * E + ahead, _MM_HINT_T0);
      _mm_prefetch(w1 + i * E + ahead, _MM_HINT_T0);
      _mm_prefetch(w2 + i * E + ahead, _MM_HINT_T0);
      _mm_prefetch(w3 + i * E + ahead, _MM_HINT_T0);
    }
    const __m512 xv = _mm512_maskz_loadu_ps(mask, x + i);
    a0 = _mm512_fmadd_ps(load16<K>(w0, i, mask), xv, a0);
    a1 = _mm512_fmadd_ps(load16<K>(w1, i, mask), xv, a1);
    a2 = _mm512_fmadd_ps(load16<K>(w2, i, mask), xv, a2);
    a3 = _mm512_fmadd_ps(load16<K>(w3, i, mask), xv, a3);
  }
  out[0] = _mm512_reduce_add_ps(a0);
  out[1] = _mm512_reduce_add_ps(a1);
  out[2] = _mm512_reduce_add_ps(a2);
  out[3] = _mm512_reduce_add_ps(a3);
}

// bf16 weights two at a time: a 32-bit word holds two of them, and as float bits the upper one is the word
// with its low half cleared and the lower one the word shifted left by 16: one op per 16 weights where
// the widening load needs two. The lower weights meet x's even elements and the upper ones its odd
// elements, which `pairs` holds split (x[0::2] then x[1::2], made once per gemv). The last k % 32
// columns take the plain loop.
template <bool Hint>
ISA_AVX512 float dot_bf16_pairs_avx512(const uint16_t* w, const float* x, const float* pairs, int64_t k) {
  const float *even = pairs, *odd = pairs + (k + 1) / 2;
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  int64_t i = 0;
  const char* bytes = reinterpret_cast<const char*>(w);
  for (; i + 64 <= k; i += 64) {
    if constexpr (Hint) {
      _mm_prefetch(bytes + 2 * i + kPrefetchBytes, _MM_HINT_T0);
      _mm_prefetch(bytes + 2 * i + 64 + kPrefetchBytes, _MM_HINT_T0);
    }
    const __m512i w0 = _mm512_loadu_si512(w + i), w1 = _mm512_loadu_si512(w + i + 32);
    a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)), _mm512_loadu_ps(even + i / 2), a0);
    a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(w0, high)), _mm512_loadu_ps(odd + i / 2), a1);
    a2 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w1, 16)), _mm512_loadu_ps(even + i / 2 + 16), a2);
    a3 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(w1, high)), _mm512_loadu_ps(odd + i / 2 + 16), a3);
  }
  for (; i + 32 <= k; i += 32) {
    const __m512i w0 = _mm512_loadu_si512(w + i);
    a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)), _mm512_loadu_ps(even + i / 2), a0);
    a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(w0, high)), _mm512_loadu_ps(odd + i / 2), a1);
  }
  for (; i < k; i += 16) {
    const __mmask16 mask = tail_mask(k - i);
    a0 = _mm512_fmadd_ps(load16<kBF16>(w, i, mask), _mm512_maskz_loadu_ps(mask, x + i), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// In vectors with two partial sums: the baseline loop's one running sum is a chain of dependent adds that
// the compiler may not reorder, and it made Mamba-2's state step (24 layers x 24 heads x 64 x 128 states at
// 130m) a quarter of the int8 step's time.
inline ISA_AVX512 float ssd_channel_avx512(float* s, const float* B, const float* C, float decay, float dx, int64_t n) {
  const __m512 dv = _mm512_set1_ps(decay), xv = _mm512_set1_ps(dx);
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(s + i) + kStatePrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(s + i) + kStatePrefetchBytes + 64, _MM_HINT_T0);
    const __m512 s0 = _mm512_fmadd_ps(dv, _mm512_loadu_ps(s + i), _mm512_mul_ps(xv, _mm512_loadu_ps(B + i)));
    const __m512 s1 = _mm512_fmadd_ps(dv, _mm512_loadu_ps(s + i + 16), _mm512_mul_ps(xv, _mm512_loadu_ps(B + i + 16)));
    _mm512_storeu_ps(s + i, s0);
    _mm512_storeu_ps(s + i + 16, s1);
    a0 = _mm512_fmadd_ps(s0, _mm512_loadu_ps(C + i), a0);
    a1 = _mm512_fmadd_ps(s1, _mm512_loadu_ps(C + i + 16), a1);
  }
  for (; i < n; i += 16) {
    const __mmask16 mask = tail_mask(n - i);
    const __m512 b0 = _mm512_mul_ps(xv, _mm512_maskz_loadu_ps(mask, B + i));
    const __m512 s0 = _mm512_fmadd_ps(dv, _mm512_maskz_loadu_ps(mask, s + i), b0);
    _mm512_mask_storeu_ps(s + i, mask, s0);
    a0 = _mm512_fmadd_ps(s0, _mm512_maskz_loadu_ps(mask, C + i), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

inline ISA_AVX512 float mamba1_state_avx512(float* s, const float* A, const float* B, const float* C, float delta,
                                     float x, int64_t n) {
  return mamba1_state_lanes<16>(s, A, B, C, delta, x, n);
}

inline ISA_AVX512 void silu_avx512(const float* z, const float* y, float* out, int64_t n) {
  silu_lanes<16>(z, y, out, n);
}
#endif  // BIOMAMBA_X86

// ---------------------------------------------------------------------------- int8 activations (int8-dynamic)

// int8-dynamic rounds the activations entering in_proj, out_proj and the LM head to int8 in blocks of
// kActBlock columns, as llama.cpp's q8_0 does its activations: s_b = max|x_b| / 127, q = round(x / s_b) (to
// even; 0 where s_b is 0), exactly as biomamba/decode.py's round_activations, so both paths score the
// same numbers q * s_b. An int8 row then meets them 64 bytes an instruction with VNNI (vpdpbusd), 32 with
// AVX2 (vpmaddubsw), where the weight-only int8 path widens every weight to a float: the 50280 x 768 LM head
// from memory on a Zen 4 core pair, 21.6 G weights/s in int8 (AVX-512), 43.5 in int8-dynamic (bench/RESULTS.md).
constexpr int64_t kActBlock = 32;

struct Int8Activations {
  int64_t k = 0;
  std::vector<int8_t> q;           // k values, zeros up to a multiple of 64
  std::vector<float> scale;        // s_b, one per block
  std::vector<float> lane_scale;   // one per 4 columns (a vpdpbusd lane): the scale of their block
  std::vector<int32_t> lane_bias;  // one per 4 columns: -128 x the sum of their q (dot_int8_activations_vnni)

  // Rounds x[0 : k]; the buffers are reused from call to call.
  void round(const float* x, int64_t k_) {
    k = k_;
    const int64_t padded = (k + 63) / 64 * 64, blocks = (k + kActBlock - 1) / kActBlock;
    q.assign(padded, 0);
    scale.resize(blocks);
    lane_scale.assign(padded / 4, 0.f);
    lane_bias.assign(padded / 4, 0);
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kActBlock, end = std::min(k, begin + kActBlock);
      float amax = 0.f;
      for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float s = amax / 127.f;
      scale[b] = s;
      if (s > 0.f)
        for (int64_t i = begin; i < end; ++i) q[i] = static_cast<int8_t>(std::nearbyint(x[i] / s));
    }
    for (int64_t lane = 0; lane < padded / 4; ++lane) {
      lane_scale[lane] = lane * 4 < k ? scale[lane * 4 / kActBlock] : 0.f;
      for (int i = 0; i < 4; ++i) lane_bias[lane] -= 128 * q[lane * 4 + i];
    }
  }

  // x as rounded, q * s_b, into out[0 : k]: the same numbers for the paths without VNNI.
  void values(float* out) const {
    for (int64_t i = 0; i < k; ++i) out[i] = static_cast<float>(q[i]) * scale[i / kActBlock];
  }
};

// Sum over blocks of s_b <w_b, q_b> for an int8 row w of a.k columns. vpdpbusd multiplies unsigned bytes by
// signed ones, so the weights go in as w + 128 (w XOR 0x80) and each lane's sum starts from -128 x the sum
// of its four q (lane_bias): the integer sums are then exact, and one float multiply-add per lane applies
// the scales.
#ifdef BIOMAMBA_X86
inline ISA_AVX512_VNNI float dot_int8_activations_vnni(const int8_t* w, const Int8Activations& a) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const int8_t* q = a.q.data();
  const float* lane_scale = a.lane_scale.data();
  const int32_t* lane_bias = a.lane_bias.data();
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 128 <= a.k; i += 128) {
    const __m512i w0 = _mm512_xor_si512(_mm512_loadu_si512(w + i), flip);
    const __m512i w1 = _mm512_xor_si512(_mm512_loadu_si512(w + i + 64), flip);
    const __m512i d0 = _mm512_dpbusd_epi32(_mm512_loadu_si512(lane_bias + i / 4), w0, _mm512_loadu_si512(q + i));
    const __m512i d1 =
        _mm512_dpbusd_epi32(_mm512_loadu_si512(lane_bias + i / 4 + 16), w1, _mm512_loadu_si512(q + i + 64));
    a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_loadu_ps(lane_scale + i / 4), a0);
    a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_loadu_ps(lane_scale + i / 4 + 16), a1);
  }
  for (; i < a.k; i += 64) {  // the padded q and lane arrays are whole; the weights' tail is masked (w = 0)
    const __mmask64 mask = a.k - i >= 64 ? ~0ULL : (1ULL << (a.k - i)) - 1;
    const __m512i w0 = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, w + i), flip);
    const __m512i d0 = _mm512_dpbusd_epi32(_mm512_loadu_si512(lane_bias + i / 4), w0, _mm512_loadu_si512(q + i));
    a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_loadu_ps(lane_scale + i / 4), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
#endif

// The same in AVX2, 32 bytes an instruction as llama.cpp's q8_0 does there: vpmaddubsw multiplies |w|
// (unsigned) by q with w's sign (signed) into 16-bit pair sums, at most 2 x 127 x 127 (no saturation:
// quantize keeps w within +-127), and vpmaddwd adds the pairs into 32-bit lanes of 4 products; the last
// k % 32 columns in scalar.
#ifdef BIOMAMBA_X86
inline ISA_AVX2 __m256 int8_products_avx2(const int8_t* w, const int8_t* q, const float* lane_scale, __m256 sum) {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(qv, wv));
  const __m256i lanes = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_loadu_ps(lane_scale), sum);
}

inline ISA_AVX2 float dot_int8_activations_avx2(const int8_t* w, const Int8Activations& a) {
  const int8_t* q = a.q.data();
  const float* lane_scale = a.lane_scale.data();
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= a.k; i += 64) {
    a0 = int8_products_avx2(w + i, q + i, lane_scale + i / 4, a0);
    a1 = int8_products_avx2(w + i + 32, q + i + 32, lane_scale + i / 4 + 8, a1);
  }
  if (i + 32 <= a.k) {
    a0 = int8_products_avx2(w + i, q + i, lane_scale + i / 4, a0);
    i += 32;
  }
  float sum = sum8(_mm256_add_ps(a0, a1));
  for (; i < a.k; ++i) sum += static_cast<float>(w[i] * q[i]) * a.scale[i / kActBlock];
  return sum;
}
#endif

// Whether dot_int8_activations runs at this level (the baseline takes Int8Activations::values and dot).
inline bool has_int8_dot(int isa) { return isa >= 1; }

inline float dot_int8_activations(int isa, const int8_t* w, const Int8Activations& a) {
#ifdef BIOMAMBA_X86
  if (isa >= 3) return dot_int8_activations_vnni(w, a);
  return dot_int8_activations_avx2(w, a);
#else
  (void)isa, (void)w, (void)a;
  return 0.f;  // unreachable: has_int8_dot is false without x86
#endif
}

// ---------------------------------------------------------------------------- at a level (isa.h)

// int8 rows without the weight hints (AMD) take the AVX2 build at the AVX-512 level too: on a Zen 4 EPYC
// (2 vCPUs, 130m, medians of 5 interleaved runs, 2026-12-06) int8 decoded at 120.5 (Mamba-1) and 116.9
// (Mamba-2) tok/s through it against 101.7 and 96.9-102.8 through AVX-512, which widens 16 bytes to 16
// floats a step, each 512-bit operation run there in two halves.
template <Kind K>
inline float dot_at(int isa, bool hints, const void* w, const float* x, int64_t k) {
#ifdef BIOMAMBA_X86
  if (isa >= 2 && hints) return dot_avx512<K, true>(w, x, k);
  if (isa >= 2 && K != kI8) return dot_avx512<K, false>(w, x, k);
  if (isa >= 1) return dot_avx2<K>(w, x, k);
#endif
  return dot_base<K>(w, x, k);
}

// <w[0 : k], x[0 : k]> for a row w of `kind`; `hints`: ask for the weights ahead (weight_hints).
inline float dot(int isa, bool hints, Kind kind, const void* w, const float* x, int64_t k) {
  if (kind == kF32) return dot_at<kF32>(isa, hints, w, x, k);
  if (kind == kBF16) return dot_at<kBF16>(isa, hints, w, x, k);
  return dot_at<kI8>(isa, hints, w, x, k);
}

template <Kind K>
inline void dot4_at(int isa, const char* w, int64_t row_bytes, const float* x, int64_t k, bool prefetch, float* out) {
#ifdef BIOMAMBA_X86
  if (isa >= 2) return dot4_avx512<K>(w, row_bytes, x, k, prefetch, out);
  if (isa == 1) return dot4_avx2<K>(w, row_bytes, x, k, prefetch, out);
#endif
  for (int i = 0; i < 4; ++i) out[i] = dot_base<K>(w + i * row_bytes, x, k);
}

// out[i] = <w + i * row_bytes [0 : k], x[0 : k]> for i < 4; `prefetch`: four more rows follow, and the
// AVX-512 build is to ask for them (weight_hints).
inline void dot4(int isa, Kind kind, const char* w, int64_t row_bytes, const float* x, int64_t k, bool prefetch,
                 float* out) {
  if (kind == kF32) return dot4_at<kF32>(isa, w, row_bytes, x, k, prefetch, out);
  if (kind == kBF16) return dot4_at<kBF16>(isa, w, row_bytes, x, k, prefetch, out);
  return dot4_at<kI8>(isa, w, row_bytes, x, k, prefetch, out);
}

// Whether dot_bf16_pairs has a vector build at this level (the baseline reads the weights one by one).
inline bool has_bf16_pairs(int isa) {
#ifdef BIOMAMBA_X86
  return isa >= 1;
#else
  return false;
#endif
}

inline float dot_bf16_pairs(int isa, bool hints, const uint16_t* w, const float* x, const float* pairs, int64_t k) {
#ifdef BIOMAMBA_X86
  if (isa >= 2)
    return hints ? dot_bf16_pairs_avx512<true>(w, x, pairs, k) : dot_bf16_pairs_avx512<false>(w, x, pairs, k);
  if (isa == 1) return dot_bf16_pairs_avx2(w, x, pairs, k);
#endif
  return dot_base<kBF16>(w, x, k);
}

inline float ssd_channel(int isa, float* s, const float* B, const float* C, float decay, float dx, int64_t n) {
#ifdef BIOMAMBA_X86
  if (isa >= 2) return ssd_channel_avx512(s, B, C, decay, dx, n);
  if (isa == 1) return ssd_channel_avx2(s, B, C, decay, dx, n);
#endif
  return ssd_channel_base(s, B, C, decay, dx, n);
}

inline float mamba1_state_step(int isa, float* s, const float* A, const float* B, const float* C, float delta,
                               float x, int64_t n) {
#ifdef BIOMAMBA_X86
  if (isa >= 2) return mamba1_state_avx512(s, A, B, C, delta, x, n);
  if (isa == 1) return mamba1_state_avx2(s, A, B, C, delta, x, n);
#endif
  return mamba1_state_base(s, A, B, C, delta, x, n);
}

inline void silu_channels(int isa, const float* z, const float* y, float* out, int64_t n) {
#ifdef BIOMAMBA_X86
  if (isa >= 2) return silu_avx512(z, y, out, n);
  if (isa == 1) return silu_avx2(z, y, out, n);
#endif
  silu_base(z, y, out, n);
}

}  // namespace biomamba_decode
