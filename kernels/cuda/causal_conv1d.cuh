// Causal depthwise conv1d (widths 2..4) forward and backward, fp32 compute:
//     pre[b, d, t] = bias[d] + sum_k w[d, k] x[b, d, t - (W - 1) + k]  (x = 0 before t = 0)
//     out = pre, or silu(pre)
// With seq_idx, a tap reads x[t'] only when seq_idx[t'] == seq_idx[t] (causal_conv1d's rule):
// the other document's inputs count as zero, in the forward and in both gradients.
// Forward and dx: one thread per (b, d, t). dw/dbias: one block per (d, b) sums over t, then
// one float32 atomicAdd per value. The backward recomputes pre instead of storing it.
#pragma once
#include "biomamba_cuda.h"
#include "common.cuh"

namespace biomamba {

constexpr int kConvThreads = 256;

// The document ids of batch row b, or null without seq_idx.
__device__ __forceinline__ const int* row_ids(const Conv1dParams& p, long long b) {
  return p.seq_idx ? p.seq_idx + b * p.len : nullptr;
}

// Position `from` feeds position `to` (same document, or no seq_idx).
__device__ __forceinline__ bool same_document(const int* ids, int from, int to) {
  return !ids || ids[from] == ids[to];
}

template <int W, typename T>
__device__ __forceinline__ float conv_pre(const Conv1dParams& p, long long row, const int* ids, int d,
                                          int t) {
  float acc = p.bias ? p.bias[d] : 0.f;
#pragma unroll
  for (int k = 0; k < W; ++k) {
    const int ti = t - (W - 1) + k;
    if (ti >= 0 && same_document(ids, ti, t))
      acc = fmaf(p.weight[d * W + k], load<T>(p.x, row + ti), acc);
  }
  return acc;
}

// d out / d pre, times the incoming gradient.
template <int W, typename T>
__device__ __forceinline__ float conv_grad_pre(const Conv1dParams& p, long long row, const int* ids,
                                               int d, int t) {
  const float g = load<T>(p.dout, row + t);
  if (!p.silu) return g;
  const float pre = conv_pre<W, T>(p, row, ids, d, t), s = sigmoid(pre);
  return g * s * (1.f + pre * (1.f - s));
}

template <int W, typename T>
__global__ void __launch_bounds__(kConvThreads) conv_fwd_kernel(Conv1dParams p) {
  const long long total = (long long)p.batch * p.dim * p.len;
  for (long long i = blockIdx.x * (long long)kConvThreads + threadIdx.x; i < total;
       i += (long long)gridDim.x * kConvThreads) {
    const int t = i % p.len;
    const long long row = i - t;
    const int d = (i / p.len) % p.dim;
    const int* ids = row_ids(p, i / ((long long)p.len * p.dim));
    float o = conv_pre<W, T>(p, row, ids, d, t);
    if (p.silu) o *= sigmoid(o);
    store<T>(p.out, i, o);
  }
}

template <int W, typename T>
__global__ void __launch_bounds__(kConvThreads) conv_bwd_dx_kernel(Conv1dParams p) {
  const long long total = (long long)p.batch * p.dim * p.len;
  for (long long i = blockIdx.x * (long long)kConvThreads + threadIdx.x; i < total;
       i += (long long)gridDim.x * kConvThreads) {
    const int t = i % p.len;
    const long long row = i - t;
    const int d = (i / p.len) % p.dim;
    const int* ids = row_ids(p, i / ((long long)p.len * p.dim));
    float g = 0.f;
#pragma unroll
    for (int k = 0; k < W; ++k) {  // x[t] feeds pre[t + (W - 1) - k] through w[k]
      const int to = t + (W - 1) - k;
      if (to < p.len && same_document(ids, t, to))
        g = fmaf(p.weight[d * W + k], conv_grad_pre<W, T>(p, row, ids, d, to), g);
    }
    store<T>(p.dx, i, g);
  }
}

// Sum of v over the block; valid in thread 0. `scratch` holds kConvThreads / 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.f;
  if (threadIdx.x == 0)
    for (int w = 0; w < kConvThreads / 32; ++w) total += scratch[w];
  return total;
}

template <int W, typename T>
__global__ void __launch_bounds__(kConvThreads) conv_bwd_dw_kernel(Conv1dParams p) {
  __shared__ float scratch[kConvThreads / 32];
  const int d = blockIdx.x, b = blockIdx.y;
  const long long row = ((long long)b * p.dim + d) * p.len;
  const int* ids = row_ids(p, b);
  float gw[W], gb = 0.f;
#pragma unroll
  for (int k = 0; k < W; ++k) gw[k] = 0.f;
  for (int t = threadIdx.x; t < p.len; t += kConvThreads) {
    const float g = conv_grad_pre<W, T>(p, row, ids, d, t);
    gb += g;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const int ti = t - (W - 1) + k;
      if (ti >= 0 && same_document(ids, ti, t)) gw[k] = fmaf(g, load<T>(p.x, row + ti), gw[k]);
    }
  }
#pragma unroll
  for (int k = 0; k < W; ++k) {
    const float s = block_sum(gw[k], scratch);
    if (threadIdx.x == 0) atomicAdd(p.dweight + d * W + k, s);
  }
  const float s = block_sum(gb, scratch);
  if (threadIdx.x == 0 && p.dbias) atomicAdd(p.dbias + d, s);
}

}  // namespace biomamba
