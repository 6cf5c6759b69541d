// Math for the CPU selective scan: lanes over the state dimension, and per-chunk activations.
//
// gcc does not vectorise libm's expf without -ffast-math, and if-converting a hand-written expf
// fails once it folds the clamps into branches. So float uses explicit 4-lane vectors (GCC/Clang
// vector extensions: SSE on x86-64, NEON on arm64, no -march flags) with Cephes-style exp and log
// (relative error ~2 ulp); AVX2 and AVX-512 builds of the kernels use 8 and 16 lanes (WideLanes).
// double and state sizes that are not a multiple of 4 use plain scalar
// loops with libm: fp64 exists to check against the reference, not for speed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace biomamba_cpu {

// Forces inlining, so that a helper takes the instruction set of the function it is called from:
// the AVX2 and AVX-512 builds of the kernels (selective_scan.cpp) are functions with a target
// attribute that inline the generic code below.
#define SCAN_INLINE inline __attribute__((always_inline))

typedef float v4sf __attribute__((vector_size(16)));
typedef int32_t v4si __attribute__((vector_size(16)));

inline v4sf v4_set1(float x) { return v4sf{x, x, x, x}; }

inline v4sf v4_load(const float* p) {
  v4sf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void v4_store(float* p, v4sf v) { std::memcpy(p, &v, sizeof(v)); }

inline v4sf v4_select(v4si mask, v4sf a, v4sf b) {  // mask lanes are all-ones or zero
  return (v4sf)((mask & (v4si)a) | (~mask & (v4si)b));
}

inline v4sf v4_max(v4sf a, v4sf b) {
#if defined(__SSE__)
  return __builtin_ia32_maxps(a, b);
#else
  return v4_select(a < b, b, a);
#endif
}

inline v4sf v4_min(v4sf a, v4sf b) {
#if defined(__SSE__)
  return __builtin_ia32_minps(a, b);
#else
  return v4_select(a > b, b, a);
#endif
}

// 8 and 16 lanes: the AVX2 and AVX-512 builds of the scan kernel (WideLanes below).
typedef float v8sf __attribute__((vector_size(32)));
typedef float v16sf __attribute__((vector_size(64)));
typedef int32_t v8si __attribute__((vector_size(32)));
typedef int32_t v16si __attribute__((vector_size(64)));

// 2^k as float bits, for k already a whole number (one overload per vector type: the builtin takes
// concrete types, and vector types have no namespace for a template's call to find them later).
SCAN_INLINE v4si exponent_bits(v4sf k) { return (__builtin_convertvector(k, v4si) + 127) << 23; }
SCAN_INLINE v8si exponent_bits(v8sf k) { return (__builtin_convertvector(k, v8si) + 127) << 23; }
SCAN_INLINE v16si exponent_bits(v16sf k) { return (__builtin_convertvector(k, v16si) + 127) << 23; }

// Cephes exp of x already clamped to [-87.3, 88], for any float vector type V with an exponent_bits overload.
template <typename V>
SCAN_INLINE V exp_clamped(V x) {
  // x = k ln2 + r, |r| <= ln2 / 2; k rounded to nearest with the 1.5 * 2^23 trick.
  V k = x * 1.44269504088896341f;
  k = (k + 12582912.0f) - 12582912.0f;
  V r = x - k * 0.693359375f;  // ln2 split in two so that k * ln2_hi is exact
  r = r - k * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * (V)exponent_bits(k);
}

inline v4sf v4_exp(v4sf x) {
  // Clamped to [-87.3, 88]: below, exp(-87.3) ~ 1.2e-38 stands in for a denormal or 0.
  x = v4_max(x, v4_set1(-87.33654475f));
  x = v4_min(x, v4_set1(88.0f));
  return exp_clamped(x);
}

inline v4sf v4_log(v4sf x) {  // x > 0, finite
  const v4si bits = (v4si)x;
  v4sf e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, v4sf);
  v4sf m = (v4sf)((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  const v4si small = m < v4_set1(0.707106781186547524f);
  e = e - v4_select(small, v4_set1(1.0f), v4_set1(0.0f));
  m = m + v4_select(small, m, v4_set1(0.0f)) - 1.0f;
  const v4sf z = m * m;
  v4sf y = v4_set1(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y = y + e * -2.12194440e-4f - 0.5f * z;
  return m + y + e * 0.693359375f;
}

inline v4sf v4_sigmoid(v4sf x) { return 1.0f / (1.0f + v4_exp(-x)); }

inline v4sf v4_softplus(v4sf x) {
  // max(x, 0) + log1p(exp(-|x|)); log1p(w) = log(1 + w) w / ((1 + w) - 1) stays accurate for
  // tiny w (Goldberg), and is w itself when 1 + w rounds to 1.
  const v4sf ax = v4_select(x < 0.0f, -x, x);
  const v4sf w = v4_exp(-ax);
  const v4sf one_w = 1.0f + w;
  const v4si exact = one_w == v4_set1(1.0f);
  const v4sf denom = v4_select(exact, v4_set1(1.0f), one_w - 1.0f);
  const v4sf log1p_w = v4_select(exact, w, v4_log(one_w) * w / denom);
  return v4_select(x > 0.0f, x, v4_set1(0.0f)) + log1p_w;
}

// torch.nn.functional.softplus with its default threshold of 20.
template <typename T>
inline T softplus(T x) {
  return x <= T(20) ? std::log1p(std::exp(x)) : x;
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Lanes<T, W>: W values of the state dimension processed together (W = 1: scalar).
template <typename T, int W>
struct Lanes;

template <typename T>
struct Lanes<T, 1> {
  using V = T;
  static V set1(T x) { return x; }
  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
  static T sum(V v) { return v; }
  static V exp(V v) { return std::exp(v); }
};

template <>
struct Lanes<float, 4> {
  using V = v4sf;
  static V set1(float x) { return v4_set1(x); }
  static V load(const float* p) { return v4_load(p); }
  static void store(float* p, V v) { v4_store(p, v); }
  static float sum(V v) { return (v[0] + v[1]) + (v[2] + v[3]); }
  static V exp(V v) { return v4_exp(v); }
};

// W = 8 or 16 float lanes (AVX2, AVX-512), with n compiled in; used only inside functions built
// for that instruction set. The same Cephes exp as v4_exp (exp_clamped), with the clamps as vector selects (one
// min/max instruction each on these targets); the horizontal sum halves the vector. (The builtins
// take the concrete types: gcc rejects them on a vector type whose size is a template argument.)
SCAN_INLINE float lane_sum(v8sf v) {
  const v4sf s = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

SCAN_INLINE float lane_sum(v16sf v) {
  return lane_sum(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
}

template <typename V>
struct WideLanes {
  static SCAN_INLINE V set1(float x) { return V{} + x; }
  static SCAN_INLINE V load(const float* p) {
    V v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static SCAN_INLINE void store(float* p, V v) { std::memcpy(p, &v, sizeof(v)); }
  static SCAN_INLINE float sum(V v) { return lane_sum(v); }
  static SCAN_INLINE V exp(V x) {
    const V lo = set1(-87.33654475f), hi = set1(88.0f);
    x = x < lo ? lo : x;
    x = x > hi ? hi : x;
    return exp_clamped(x);
  }
};

template <>
struct Lanes<float, 8> : WideLanes<v8sf> {
  using V = v8sf;
};

template <>
struct Lanes<float, 16> : WideLanes<v16sf> {
  using V = v16sf;
};

// Per chunk of steps: dt = softplus(delta + bias) (or delta + bias) and, if wanted, its
// derivative sigmoid(delta + bias) (or 1).
template <typename T>
inline void chunk_delta(const T* delta, T bias, bool use_softplus, int64_t steps, T* dt, T* dsig) {
  for (int64_t i = 0; i < steps; ++i) {
    const T raw = delta[i] + bias;
    dt[i] = use_softplus ? softplus(raw) : raw;
    if (dsig) dsig[i] = use_softplus ? sigmoid(raw) : T(1);
  }
}

template <>
inline void chunk_delta<float>(const float* delta, float bias, bool use_softplus, int64_t steps,
                               float* dt, float* dsig) {
  int64_t i = 0;
  if (use_softplus) {
    for (; i + 4 <= steps; i += 4) {
      const v4sf raw = v4_load(delta + i) + bias;
      v4_store(dt + i, v4_softplus(raw));
      if (dsig) v4_store(dsig + i, v4_sigmoid(raw));
    }
  }
  for (; i < steps; ++i) {
    const float raw = delta[i] + bias;
    dt[i] = use_softplus ? softplus(raw) : raw;
    if (dsig) dsig[i] = use_softplus ? sigmoid(raw) : 1.0f;
  }
}

template <typename T>
inline void chunk_sigmoid(const T* x, int64_t steps, T* out) {
  for (int64_t i = 0; i < steps; ++i) out[i] = sigmoid(x[i]);
}

template <>
inline void chunk_sigmoid<float>(const float* x, int64_t steps, float* out) {
  int64_t i = 0;
  for (; i + 4 <= steps; i += 4) v4_store(out + i, v4_sigmoid(v4_load(x + i)));
  for (; i < steps; ++i) out[i] = sigmoid(x[i]);
}

}  // namespace biomamba_cpu
