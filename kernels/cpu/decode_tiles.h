// The batched products of the decoding step (decode_step.cpp): a prompt pass, or a step of b > 1 sequences,
// multiplies each weight row with several rows of x. Row after row of dot products (dot4 per row of x)
// loaded a weight vector and an x vector for every FMA, and widened bfloat16 / int8 weights again for every
// row of x: a 16-token prompt through 130m Mamba-2 took 51-57 ms in every precision, 3 decoding steps in
// fp32 and 8 in int8 (a Zen 4 EPYC, 2 vCPUs, 2026-12-06; llama.cpp's own 16-token prompt took 37-46 ms).
// Here a tile of four weight rows, widened to float once into a scratch tile (float32 rows are read in
// place), meets the rows of x a few at a time: with AVX-512, 4 x 4 products in 16 accumulators, 8 loads for
// 16 FMAs; with AVX2 (16 registers), 4 x 2.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "decode_vectors.h"

namespace biomamba_decode {

constexpr int kTileRows = 4;  // weight rows a tile
constexpr int kTileMaxX = 4;  // rows of x a tile at most (AVX-512)

// Rows of x one tile multiplies at this level: what the registers hold beside the four weight vectors.
inline int tile_x_rows(int isa) { return isa == 1 ? 2 : kTileMaxX; }

// sums[i][j] = <w_i, x_j> for the kTileRows float rows w_i = w + i * ldw and x_j = x + j * ldx, j < NX.
template <int NX>
void tile_base(const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t k, float (*sums)[kTileMaxX]) {
  for (int i = 0; i < kTileRows; ++i)
    for (int j = 0; j < NX; ++j) sums[i][j] = dot_base<kF32>(w + i * ldw, x + j * ldx, k);
}

#ifdef BIOMAMBA_X86
// The accumulators are named one by one: as arrays (acc[i][j] in loops) gcc kept them on the stack.
#define BIOMAMBA_TILE_ROW(FMA, ACC, XV)                                                        \
  ACC##0 = FMA(w0, XV, ACC##0), ACC##1 = FMA(w1, XV, ACC##1), ACC##2 = FMA(w2, XV, ACC##2), \
  ACC##3 = FMA(w3, XV, ACC##3)

template <int NX>
ISA_AVX2 void tile_avx2(const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t k,
                        float (*sums)[kTileMaxX]) {
  static_assert(NX >= 1 && NX <= 2, "16 registers hold 4 x 2 accumulators beside the weights");
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t c = 0;
  for (; c + 8 <= k; c += 8) {
    const __m256 w0 = _mm256_loadu_ps(w + c), w1 = _mm256_loadu_ps(w + ldw + c);
    const __m256 w2 = _mm256_loadu_ps(w + 2 * ldw + c), w3 = _mm256_loadu_ps(w + 3 * ldw + c);
    BIOMAMBA_TILE_ROW(_mm256_fmadd_ps, a, _mm256_loadu_ps(x + c));
    if constexpr (NX > 1) BIOMAMBA_TILE_ROW(_mm256_fmadd_ps, b, _mm256_loadu_ps(x + ldx + c));
  }
  const __m256 acc[2][kTileRows] = {{a0, a1, a2, a3}, {b0, b1, b2, b3}};
  for (int i = 0; i < kTileRows; ++i)
    for (int j = 0; j < NX; ++j) {
      float sum = sum8(acc[j][i]);
      for (int64_t t = c; t < k; ++t) sum += w[i * ldw + t] * x[j * ldx + t];
      sums[i][j] = sum;
    }
}

template <int NX>
ISA_AVX512 void tile_avx512(const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t k,
                            float (*sums)[kTileMaxX]) {
  static_assert(NX >= 1 && NX <= kTileMaxX, "at most kTileMaxX rows of x");
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  __m512 c0 = a0, c1 = a0, c2 = a0, c3 = a0, d0 = a0, d1 = a0, d2 = a0, d3 = a0;
  for (int64_t c = 0; c < k; c += 16) {
    const __mmask16 mask = tail_mask(k - c);
    const __m512 w0 = _mm512_maskz_loadu_ps(mask, w + c), w1 = _mm512_maskz_loadu_ps(mask, w + ldw + c);
    const __m512 w2 = _mm512_maskz_loadu_ps(mask, w + 2 * ldw + c);
    const __m512 w3 = _mm512_maskz_loadu_ps(mask, w + 3 * ldw + c);
    BIOMAMBA_TILE_ROW(_mm512_fmadd_ps, a, _mm512_maskz_loadu_ps(mask, x + c));
    if constexpr (NX > 1) BIOMAMBA_TILE_ROW(_mm512_fmadd_ps, b, _mm512_maskz_loadu_ps(mask, x + ldx + c));
    if constexpr (NX > 2) BIOMAMBA_TILE_ROW(_mm512_fmadd_ps, c, _mm512_maskz_loadu_ps(mask, x + 2 * ldx + c));
    if constexpr (NX > 3) BIOMAMBA_TILE_ROW(_mm512_fmadd_ps, d, _mm512_maskz_loadu_ps(mask, x + 3 * ldx + c));
  }
  const __m512 acc[kTileMaxX][kTileRows] = {{a0, a1, a2, a3}, {b0, b1, b2, b3}, {c0, c1, c2, c3}, {d0, d1, d2, d3}};
  for (int i = 0; i < kTileRows; ++i)
    for (int j = 0; j < NX; ++j) sums[i][j] = _mm512_reduce_add_ps(acc[j][i]);
}
#undef BIOMAMBA_TILE_ROW

// One row of k weights of kind K widened to floats.
template <Kind K>
ISA_AVX2 void widen_avx2(const void* w, int64_t k, float* out) {
  int64_t c = 0;
  for (; c + 8 <= k; c += 8) _mm256_storeu_ps(out + c, load8<K>(w, c));
  for (; c < k; ++c) out[c] = weight_at<K>(w, c);
}

template <Kind K>
ISA_AVX512 void widen_avx512(const void* w, int64_t k, float* out) {
  for (int64_t c = 0; c < k; c += 16) {
    const __mmask16 mask = tail_mask(k - c);
    _mm512_mask_storeu_ps(out + c, mask, load16<K>(w, c, mask));
  }
}
#endif

template <int NX>
inline void tile_at(int isa, const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t k,
                    float (*sums)[kTileMaxX]) {
#ifdef BIOMAMBA_X86
  if (isa >= 2) return tile_avx512<NX>(w, ldw, x, ldx, k, sums);
  if constexpr (NX <= 2)
    if (isa == 1) return tile_avx2<NX>(w, ldw, x, ldx, k, sums);
#endif
  tile_base<NX>(w, ldw, x, ldx, k, sums);
}

// sums[i][j] = <w_i, x_j> for i < kTileRows and j < nx (at most tile_x_rows(isa)).
inline void tile(int isa, const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t k, int nx,
                 float (*sums)[kTileMaxX]) {
  switch (nx) {
    case 1: return tile_at<1>(isa, w, ldw, x, ldx, k, sums);
    case 2: return tile_at<2>(isa, w, ldw, x, ldx, k, sums);
    case 3: return tile_at<3>(isa, w, ldw, x, ldx, k, sums);
    default: return tile_at<4>(isa, w, ldw, x, ldx, k, sums);
  }
}

template <Kind K>
inline void widen_at(int isa, const void* w, int64_t k, float* out) {
#ifdef BIOMAMBA_X86
  if (isa >= 2) return widen_avx512<K>(w, k, out);
  if (isa == 1) return widen_avx2<K>(w, k, out);
#endif
  for (int64_t c = 0; c < k; ++c) out[c] = weight_at<K>(w, c);
}

// The float rows [row, row + kTileRows) of a weight (m x k, of `kind`): in place for float32 rows that all
// exist, else widened into `scratch` (kTileRows x k), with zero rows past m.
inline const float* tile_rows(int isa, Kind kind, const void* w, int64_t m, int64_t k, int64_t row,
                              std::vector<float>& scratch) {
  if (kind == kF32 && row + kTileRows <= m) return static_cast<const float*>(w) + row * k;
  scratch.resize(kTileRows * k);
  for (int i = 0; i < kTileRows; ++i) {
    float* out = scratch.data() + i * k;
    const char* from = static_cast<const char*>(w) + (row + i) * k * elem_size(kind);
    if (row + i >= m) std::fill(out, out + k, 0.f);
    else if (kind == kF32) std::copy_n(reinterpret_cast<const float*>(from), k, out);
    else if (kind == kBF16) widen_at<kBF16>(isa, from, k, out);
    else widen_at<kI8>(isa, from, k, out);
  }
  return scratch.data();
}

// out[j * ldo + r] = scale[r] * <w[r], x_j> + bias[r] for the rows r in [begin, end) of a weight (m x k, of
// `kind`; scale and bias may be null) and the b rows x_j = x + j * ldx. Each weight row is read from memory
// once for all b rows of x.
inline void tile_product(int isa, Kind kind, const void* w, int64_t m, int64_t k, const float* scale,
                         const float* bias, const float* x, int64_t ldx, int64_t b, int64_t begin, int64_t end,
                         float* out, int64_t ldo) {
  thread_local std::vector<float> scratch;
  const int per_tile = tile_x_rows(isa);
  float sums[kTileRows][kTileMaxX];
  for (int64_t row = begin; row < end; row += kTileRows) {
    const float* rows = tile_rows(isa, kind, w, m, k, row, scratch);
    const int live = static_cast<int>(std::min<int64_t>(kTileRows, end - row));
    for (int64_t j0 = 0; j0 < b; j0 += per_tile) {
      const int nx = static_cast<int>(std::min<int64_t>(per_tile, b - j0));
      tile(isa, rows, k, x + j0 * ldx, ldx, k, nx, sums);
      for (int i = 0; i < live; ++i)
        for (int j = 0; j < nx; ++j)
          out[(j0 + j) * ldo + row + i] = sums[i][j] * (scale ? scale[row + i] : 1.f) + (bias ? bias[row + i] : 0.f);
    }
  }
}

}  // namespace biomamba_decode
