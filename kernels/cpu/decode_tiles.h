// The batched products of the decoding step (decode_step.cpp): a prompt pass, or a step of b > 1 sequences,
// multiplies each weight row with several rows of x. Row after row of dot products (dot4 per row of x)
// loaded a weight vector and an x vector for every FMA, and widened bfloat16 / int8 weights again for every
// row of x: a 16-token prompt through 130m Mamba-2 took 51-57 ms in every precision, 3 decoding steps in
// fp32 and 8 in int8 (a Zen 4 EPYC, 2 vCPUs, 2026-12-06; llama.cpp's own 16-token prompt took 37-46 ms).
// Here a tile of four weight rows (float32 rows read in place, bfloat16 / int8 ones widened to floats once: into
// a scratch tile, or in registers where one tile of x takes every row: tile_product) meets the rows of x a few
// at a time: with AVX-512, 4 x 4 products in 16 accumulators, 8 loads for 16 FMAs; with AVX2 (16 registers),
// 4 x 2.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "decode_vectors.h"

namespace biomamba_decode {

constexpr int kTileRows = 4;  // weight rows a tile
constexpr int kTileMaxX = 4;  // rows of x a tile at most (AVX-512)

// Rows of x one tile multiplies at this level: what the registers hold beside the four weight vectors.
inline int tile_x_rows(int isa) { return isa == 1 ? 2 : kTileMaxX; }

// sums[i][j] = <w_i, x_j> for the kTileRows rows w_i (of kind K, ldw weights apart) and x_j = x + j * ldx, j < NX.
template <Kind K, int NX>
void tile_base(const void* w, int64_t ldw, const float* x, int64_t ldx, int64_t k, float (*sums)[kTileMaxX]) {
  for (int i = 0; i < kTileRows; ++i)
    for (int j = 0; j < NX; ++j)
      sums[i][j] = dot_base<K>(static_cast<const char*>(w) + i * ldw * elem_size(K), x + j * ldx, k);
}

#ifdef BIOMAMBA_X86
// The accumulators are named one by one: as arrays (acc[i][j] in loops) gcc kept them on the stack.
#define BIOMAMBA_TILE_ROW(FMA, ACC, XV)                                                        \
  ACC##0 = FMA(w0, XV, ACC##0), ACC##1 = FMA(w1, XV, ACC##1), ACC##2 = FMA(w2, XV, ACC##2), \
  ACC##3 = FMA(w3, XV, ACC##3)

template <Kind K, int NX>
ISA_AVX2 void tile_avx2(const void* w, int64_t ldw, const float* x, int64_t ldx, int64_t k,
                        float (*sums)[kTileMaxX]) {
  static_assert(NX >= 1 && NX <= 2, "16 registers hold 4 x 2 accumulators beside the weights");
  const char* row[kTileRows];
  for (int i = 0; i < kTileRows; ++i) row[i] = static_cast<const char*>(w) + i * ldw * elem_size(K);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t c = 0;
  for (; c + 8 <= k; c += 8) {
    const __m256 w0 = load8<K>(row[0], c), w1 = load8<K>(row[1], c), w2 = load8<K>(row[2], c);
    const __m256 w3 = load8<K>(row[3], c);
    BIOMAMBA_TILE_ROW(_mm256_fmadd_ps, a, _mm256_loadu_ps(x + c));
    if constexpr (NX > 1) BIOMAMBA_TILE_ROW(_mm256_fmadd_ps, b, _mm256_loadu_ps(x + ldx + c));
  }
  const __m256 acc[2][kTileRows] = {{a0, a1, a2, a3}, {b0, b1, b2, b3}};
  for (int i = 0; i < kTileRows; ++i)
    for (int j = 0; j < NX; ++j) {
      float sum = sum8(acc[j][i]);
      for (int64_t t = c; t < k; ++t) sum += weight_at<K>(row[i], t) * x[j * ldx + t];
      sums[i][j] = sum;
    }
}

template <Kind K, int NX>
ISA_AVX512 void tile_avx512(const void* w, int64_t ldw, const float* x, int64_t ldx, int64_t k,
                            float (*sums)[kTileMaxX]) {
  static_assert(NX >= 1 && NX <= kTileMaxX, "at most kTileMaxX rows of x");
  const char* row[kTileRows];
  for (int i = 0; i < kTileRows; ++i) row[i] = static_cast<const char*>(w) + i * ldw * elem_size(K);
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  __m512 c0 = a0, c1 = a0, c2 = a0, c3 = a0, d0 = a0, d1 = a0, d2 = a0, d3 = a0;
  for (int64_t c = 0; c < k; c += 16) {
    const __mmask16 mask = tail_mask(k - c);
    const __m512 w0 = load16<K>(row[0], c, mask), w1 = load16<K>(row[1], c, mask);
    const __m512 w2 = load16<K>(row[2], c, mask), w3 = load16<K>(row[3], c, mask);
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

// The AVX-512 build also asks for the same columns of the row one tile (kTileRows rows) on: the widening
// is where a row first comes from memory, and the tile's products leave the memory idle meanwhile. A 16-token
// 130m prompt (a 2-vCPU Zen 4, 2026-12-07, 8 rounds in turns against the tree before, the same logits) took
// 0.957 of the time in Mamba-2 bf16-weights, 0.952 in int8 and 0.983 in Mamba-1 bf16-weights (fp32 rows are
// read in place: 0.997); asking two tiles on did no better (0.94-0.98).
template <Kind K>
ISA_AVX512 void widen_avx512(const void* w, int64_t k, float* out) {
  const char* next_tile = static_cast<const char*>(w) + kTileRows * k * elem_size(K);  // never faults past the end
  for (int64_t c = 0; c < k; c += 16) {
    if ((c * elem_size(K)) % 64 == 0) _mm_prefetch(next_tile + c * elem_size(K), _MM_HINT_T0);
    const __mmask16 mask = tail_mask(k - c);
    _mm512_mask_storeu_ps(out + c, mask, load16<K>(w, c, mask));
  }
}
#endif

template <Kind K, int NX>
inline void tile_at(int isa, const void* w, int64_t ldw, const float* x, int64_t ldx, int64_t k,
                    float (*sums)[kTileMaxX]) {
#ifdef BIOMAMBA_X86
  if (isa >= 2) return tile_avx512<K, NX>(w, ldw, x, ldx, k, sums);
  if constexpr (NX <= 2)
    if (isa == 1) return tile_avx2<K, NX>(w, ldw, x, ldx, k, sums);
#endif
  tile_base<K, NX>(w, ldw, x, ldx, k, sums);
}

template <Kind K>
inline void tile_of(int isa, const void* w, int64_t ldw, const float* x, int64_t ldx, int64_t k, int nx,
                    float (*sums)[kTileMaxX]) {
  switch (nx) {
    case 1: return tile_at<K, 1>(isa, w, ldw, x, ldx, k, sums);
    case 2: return tile_at<K, 2>(isa, w, ldw, x, ldx, k, sums);
    case 3: return tile_at<K, 3>(isa, w, ldw, x, ldx, k, sums);
    default: return tile_at<K, 4>(isa, w, ldw, x, ldx, k, sums);
  }
}

// sums[i][j] = <w_i, x_j> for the kTileRows rows w_i of `kind` (ldw weights apart), j < nx (at most
// tile_x_rows(isa)).
inline void tile(int isa, Kind kind, const void* w, int64_t ldw, const float* x, int64_t ldx, int64_t k, int nx,
                 float (*sums)[kTileMaxX]) {
  if (kind == kF32) return tile_of<kF32>(isa, w, ldw, x, ldx, k, nx, sums);
  if (kind == kBF16) return tile_of<kBF16>(isa, w, ldw, x, ldx, k, nx, sums);
  tile_of<kI8>(isa, w, ldw, x, ldx, k, nx, sums);
}

template <Kind K>
inline void widen_at(int isa, const void* w, int64_t k, float* out) {
#ifdef BIOMAMBA_X86
  if (isa >= 2) return widen_avx512<K>(w, k, out);
  if (isa == 1) return widen_avx2<K>(w, k, out);
#endif
  for (int64_t c = 0; c < k; ++c) out[c] = weight_at<K>(w, c);
}

// The rows [row, row + kTileRows) of a weight (m x k, of `kind`) as a tile reads them: in place where they all
// exist and are float32, or `widen` is false (the tile widens them as it goes), else widened to floats into
// `scratch` (kTileRows x k), with zero rows past m. Returns the rows and their kind.
inline std::pair<const void*, Kind> tile_rows(int isa, Kind kind, const void* w, int64_t m, int64_t k, int64_t row,
                                             bool widen, std::vector<float>& scratch) {
  if (row + kTileRows <= m && (kind == kF32 || !widen))
    return {static_cast<const char*>(w) + row * k * elem_size(kind), kind};
  scratch.resize(kTileRows * k);
  for (int i = 0; i < kTileRows; ++i) {
    float* out = scratch.data() + i * k;
    const char* from = static_cast<const char*>(w) + (row + i) * k * elem_size(kind);
    if (row + i >= m) std::fill(out, out + k, 0.f);
    else if (kind == kF32) std::copy_n(reinterpret_cast<const float*>(from), k, out);
    else if (kind == kBF16) widen_at<kBF16>(isa, from, k, out);
    else widen_at<kI8>(isa, from, k, out);
  }
  return {scratch.data(), kF32};
}

// out[j * ldo + r] = scale[r] * <w[r], x_j> + bias[r] for the rows r in [begin, end) of a weight (m x k, of
// `kind`; scale and bias may be null) and the b rows x_j = x + j * ldx. Each weight row is read from memory
// once for all b rows of x. bfloat16 and int8 rows are widened once into the scratch tile when several tiles of
// x reuse them, and in registers when one tile of x takes all b rows: through the scratch tile alone, bf16 rows
// made a batch of 2 or 4 slower than fp32 ones (1160 x 256: 37.4 and 45.2 us against 13.9 and 29.9; 3352 x 768
// at 4: 0.198 ms against 0.123), in registers 15.8, 23.8 and 0.145 (int8 0.281 -> 0.146 ms).
inline void tile_product(int isa, Kind kind, const void* w, int64_t m, int64_t k, const float* scale,
                         const float* bias, const float* x, int64_t ldx, int64_t b, int64_t begin, int64_t end,
                         float* out, int64_t ldo) {
  thread_local std::vector<float> scratch;
  const int per_tile = tile_x_rows(isa);
  const bool widen = b > per_tile || isa == 0;  // the baseline's dot products widen a weight for each row of x
  float sums[kTileRows][kTileMaxX];
  for (int64_t row = begin; row < end; row += kTileRows) {
    const auto [rows, rows_kind] = tile_rows(isa, kind, w, m, k, row, widen, scratch);
    const int live = static_cast<int>(std::min<int64_t>(kTileRows, end - row));
    for (int64_t j0 = 0; j0 < b; j0 += per_tile) {
      const int nx = static_cast<int>(std::min<int64_t>(per_tile, b - j0));
      tile(isa, rows_kind, rows, k, x + j0 * ldx, ldx, k, nx, sums);
      for (int i = 0; i < live; ++i)
        for (int j = 0; j < nx; ++j)
          out[(j0 + j) * ldo + row + i] = sums[i][j] * (scale ? scale[row + i] : 1.f) + (bias ? bias[row + i] : 0.f);
    }
  }
}

}  // namespace biomamba_decode
