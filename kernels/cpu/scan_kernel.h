// Forward and backward of the selective scan for one row (batch b, channel c), state in registers.
//
// Names follow biomamba/ops.py: u, delta, z (b, d, l); A (d, n); D, delta_bias (d,);
// B, C either constant (d, n) or time-major variable (b, g, l, n) (the Python glue transposes
// mamba_ssm's (b, g, n, l) so that one step's n values are contiguous).
// Per row and step t (h: n values, never written to memory except at chunk starts):
//   dt = softplus(delta_t + delta_bias)      h = exp(dt A) h + dt u_t B_t
//   y  = <h, C_t> + D u_t                    out_t = y silu(z_t)
// The forward saves h at the start of every kChunk steps. The backward walks chunks in reverse,
// recomputes the chunk's states and exp(dt A) into per-thread buffers (kChunk x n), then runs
// the adjoint gh_t = gy_t C_t + exp(dt_{t+1} A) gh_{t+1} backwards through the chunk, seeded
// with the gradient of the returned last state. Loops over n go W lanes at a time (Lanes<T, W>).
//
// Document resets: with seq_idx (b, l) int32, a step t whose id differs from step t-1's starts a
// new document from h = 0. The backward's recompute does the same and stores exp(dt A) = 0 for
// that step, which zeroes both the carry into step t-1 and the gradient of dt A at t.
#pragma once

#include <algorithm>
#include <cstdint>

#include "scan_math.h"

namespace biomamba_cpu {

constexpr int64_t kChunk = 64;     // steps recomputed together in backward (buffers stay in L1)
constexpr int kMaxState = 256;     // largest n of the generic (runtime-n) instantiation

template <typename T>
struct ScanArgs {
  int64_t batch, dim, len, dstate, nchunks;
  const T *u, *delta, *A, *B, *C, *D, *z, *delta_bias;  // D, z, delta_bias may be null
  bool B_var, C_var, softplus;
  int64_t B_groups, C_groups;  // groups of a variable B/C (1 for (b, n, l))
  const int32_t* seq_idx;      // (b, l) document ids, or null (one document per row)
  T* chunk_states;             // (b, d, nchunks, n), null when no backward will follow
};

// The row's document ids, or null; starts_document(ids, t): step t begins a new document.
template <typename T>
inline const int32_t* row_ids(const ScanArgs<T>& a, int64_t b) {
  return a.seq_idx ? a.seq_idx + b * a.len : nullptr;
}

inline bool starts_document(const int32_t* ids, int64_t t) {
  return ids && t > 0 && ids[t] != ids[t - 1];
}

template <typename T>
struct ForwardOut {
  T *out, *last_state;  // (b, d, l), (b, d, n)
};

template <typename T>
struct BackwardArgs {
  const T *grad_out, *grad_last;  // (b, d, l), (b, d, n) or null
  T *gu, *gdelta, *gz;            // (b, d, l); gz null without z
  T *gA, *gD, *gbias;             // per-row partials (b, d, n), (b, d), (b, d); summed over b later
  T *gB, *gC;                     // constant: (b, d, n) partials; variable: (b, parts, g, l, n)
  int64_t parts;                  // channel ranges per batch element (units of work)
};

// Row pointers into B or C: the time-major (l, n) block of the row's group, or the constant (n,)
// row copied to `local`.
template <typename T>
inline const T* bc_row(const T* X, bool var, int64_t groups, const ScanArgs<T>& a, int64_t b,
                       int64_t c, T* local, int N) {
  if (var) {
    const int64_t group = c / (a.dim / groups);
    return X + (b * groups + group) * a.len * N;
  }
  for (int n = 0; n < N; ++n) local[n] = X[c * N + n];
  return local;
}

template <typename T>
inline T step_delta(const ScanArgs<T>& a, const T* delta, int64_t t, T bias) {
  const T raw = delta[t] + bias;
  return a.softplus ? softplus(raw) : raw;
}

template <typename T, int kN, int W>
SCAN_INLINE void forward_row(const ScanArgs<T>& a, const ForwardOut<T>& o, int64_t b, int64_t c) {
  using Ln = Lanes<T, W>;
  using V = typename Ln::V;
  constexpr int kCap = kN > 0 ? kN : kMaxState;
  const int N = kN > 0 ? kN : static_cast<int>(a.dstate), NV = N / W;
  const int64_t L = a.len, row = b * a.dim + c;
  V A[kCap / W], h[kCap / W];
  T Bl[kCap], Cl[kCap], dt[kChunk], y[kChunk];
  for (int j = 0; j < NV; ++j) {
    A[j] = Ln::load(a.A + c * N + j * W);
    h[j] = Ln::set1(T(0));
  }
  const T* Brow = bc_row(a.B, a.B_var, a.B_groups, a, b, c, Bl, N);
  const T* Crow = bc_row(a.C, a.C_var, a.C_groups, a, b, c, Cl, N);
  const int64_t Bstep = a.B_var ? N : 0, Cstep = a.C_var ? N : 0;
  const T Dv = a.D ? a.D[c] : T(0), bias = a.delta_bias ? a.delta_bias[c] : T(0);
  const T* u = a.u + row * L;
  const T* z = a.z ? a.z + row * L : nullptr;
  const int32_t* ids = row_ids(a, b);
  T* out = o.out + row * L;
  for (int64_t s = 0, k = 0; s < L; s += kChunk, ++k) {
    if (a.chunk_states) {
      T* saved = a.chunk_states + (row * a.nchunks + k) * N;
      for (int j = 0; j < NV; ++j) Ln::store(saved + j * W, h[j]);
    }
    const int64_t steps = std::min(kChunk, L - s);
    chunk_delta(a.delta + row * L + s, bias, a.softplus, steps, dt, static_cast<T*>(nullptr));
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t t = s + i;
      const V dtv = Ln::set1(dt[i]), dtu = Ln::set1(dt[i] * u[t]);
      const T* Bt = Brow + t * Bstep;
      const T* Ct = Crow + t * Cstep;
      if (starts_document(ids, t)) {
        for (int j = 0; j < NV; ++j) h[j] = Ln::set1(T(0));
      }
      V acc = Ln::set1(T(0));
      for (int j = 0; j < NV; ++j) {
        h[j] = Ln::exp(dtv * A[j]) * h[j] + dtu * Ln::load(Bt + j * W);
        acc += h[j] * Ln::load(Ct + j * W);
      }
      y[i] = Ln::sum(acc) + Dv * u[t];
    }
    if (z) {  // out = y silu(z)
      T* sz = dt;  // dt is no longer needed
      chunk_sigmoid(z + s, steps, sz);
      for (int64_t i = 0; i < steps; ++i) out[s + i] = y[i] * z[s + i] * sz[i];
    } else {
      std::copy(y, y + steps, out + s);
    }
  }
  T* last = o.last_state + row * N;
  for (int j = 0; j < NV; ++j) Ln::store(last + j * W, h[j]);
}

// Per-thread scratch of the backward: one chunk of states and exp(dt A) (kChunk x n each).
template <typename T>
struct ChunkBuffers {
  T *h, *dA;
};

template <typename T, int kN, int W>
SCAN_INLINE void backward_row(const ScanArgs<T>& a, const BackwardArgs<T>& g, int64_t b, int64_t c,
                  int64_t part, const ChunkBuffers<T>& buf) {
  using Ln = Lanes<T, W>;
  using V = typename Ln::V;
  constexpr int kCap = kN > 0 ? kN : kMaxState;
  const int N = kN > 0 ? kN : static_cast<int>(a.dstate), NV = N / W;
  const int64_t L = a.len, row = b * a.dim + c;
  V A[kCap / W], h[kCap / W], h0[kCap / W], carry[kCap / W], gA[kCap / W];
  T Bl[kCap], Cl[kCap], gBl[kCap], gCl[kCap];
  T dt[kChunk], dsig[kChunk], y[kChunk], sz[kChunk];
  for (int j = 0; j < NV; ++j) {
    A[j] = Ln::load(a.A + c * N + j * W);
    carry[j] = g.grad_last ? Ln::load(g.grad_last + row * N + j * W) : Ln::set1(T(0));
    gA[j] = Ln::set1(T(0));
  }
  std::fill(gBl, gBl + N, T(0));
  std::fill(gCl, gCl + N, T(0));
  const T* Brow = bc_row(a.B, a.B_var, a.B_groups, a, b, c, Bl, N);
  const T* Crow = bc_row(a.C, a.C_var, a.C_groups, a, b, c, Cl, N);
  const int64_t Bstep = a.B_var ? N : 0, Cstep = a.C_var ? N : 0;
  // Gradients of a variable B/C go to this unit's own partial (b, part, group, l, n): no races.
  T* gBrow = gBl;
  T* gCrow = gCl;
  if (a.B_var) gBrow = g.gB + ((b * g.parts + part) * a.B_groups + c / (a.dim / a.B_groups)) * L * N;
  if (a.C_var) gCrow = g.gC + ((b * g.parts + part) * a.C_groups + c / (a.dim / a.C_groups)) * L * N;
  const T Dv = a.D ? a.D[c] : T(0), bias = a.delta_bias ? a.delta_bias[c] : T(0);
  const T* u = a.u + row * L;
  const T* z = a.z ? a.z + row * L : nullptr;
  const T* gout = g.grad_out + row * L;
  const int32_t* ids = row_ids(a, b);
  T *gu = g.gu + row * L, *gdelta = g.gdelta + row * L;
  T* gz = g.gz ? g.gz + row * L : nullptr;
  T gD = T(0), gbias = T(0);

  for (int64_t k = a.nchunks - 1; k >= 0; --k) {
    const int64_t s = k * kChunk, steps = std::min(kChunk, L - s);
    // 1. recompute the chunk from its saved start state
    const T* start = a.chunk_states + (row * a.nchunks + k) * N;
    for (int j = 0; j < NV; ++j) h[j] = h0[j] = Ln::load(start + j * W);
    chunk_delta(a.delta + row * L + s, bias, a.softplus, steps, dt, dsig);
    if (z) chunk_sigmoid(z + s, steps, sz);
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t t = s + i;
      const V dtv = Ln::set1(dt[i]), dtu = Ln::set1(dt[i] * u[t]);
      const T* Bt = Brow + t * Bstep;
      const T* Ct = Crow + t * Cstep;
      T* hs = buf.h + i * N;
      T* dA = buf.dA + i * N;
      const bool reset = starts_document(ids, t);
      if (reset) {
        for (int j = 0; j < NV; ++j) h[j] = Ln::set1(T(0));
      }
      V acc = Ln::set1(T(0));
      for (int j = 0; j < NV; ++j) {
        const V e = Ln::exp(dtv * A[j]);
        h[j] = e * h[j] + dtu * Ln::load(Bt + j * W);
        Ln::store(dA + j * W, e);
        Ln::store(hs + j * W, h[j]);
        acc += h[j] * Ln::load(Ct + j * W);
      }
      if (reset) std::fill(dA, dA + N, T(0));  // step t does not depend on h_{t-1}
      y[i] = Ln::sum(acc) + Dv * u[t];
    }
    // 2. adjoint, last step first
    for (int64_t i = steps - 1; i >= 0; --i) {
      const int64_t t = s + i;
      const T ut = u[t];
      T gy = gout[t];
      if (z) {  // out = y silu(z)
        const T zt = z[t], sg = sz[i];
        gz[t] = gy * y[i] * sg * (T(1) + zt * (T(1) - sg));
        gy *= zt * sg;
      }
      gD += gy * ut;
      const T* hs = buf.h + i * N;
      const T* dA = buf.dA + i * N;
      const T* Bt = Brow + t * Bstep;
      const T* Ct = Crow + t * Cstep;
      T* gBt = gBrow + t * Bstep;
      T* gCt = gCrow + t * Cstep;
      const V gyv = Ln::set1(gy), dtv = Ln::set1(dt[i]), dtu = Ln::set1(dt[i] * ut);
      V sum_dA = Ln::set1(T(0)), sum_B = Ln::set1(T(0));
      for (int j = 0; j < NV; ++j) {
        const V hprev = i > 0 ? Ln::load(hs - N + j * W) : h0[j];
        const V e = Ln::load(dA + j * W);
        const V gh = gyv * Ln::load(Ct + j * W) + carry[j];
        const V g_dA = gh * hprev * e;
        Ln::store(gCt + j * W, Ln::load(gCt + j * W) + gyv * Ln::load(hs + j * W));
        Ln::store(gBt + j * W, Ln::load(gBt + j * W) + gh * dtu);
        gA[j] += g_dA * dtv;
        sum_dA += g_dA * A[j];
        sum_B += gh * Ln::load(Bt + j * W);
        carry[j] = e * gh;
      }
      const T sB = Ln::sum(sum_B);
      gu[t] = sB * dt[i] + gy * Dv;
      const T gdt = (Ln::sum(sum_dA) + sB * ut) * dsig[i];
      gdelta[t] = gdt;
      gbias += gdt;
    }
  }
  for (int j = 0; j < NV; ++j) Ln::store(g.gA + row * N + j * W, gA[j]);
  if (!a.B_var) std::copy(gBl, gBl + N, g.gB + row * N);
  if (!a.C_var) std::copy(gCl, gCl + N, g.gC + row * N);
  g.gD[row] = gD;
  g.gbias[row] = gbias;
}

}  // namespace biomamba_cpu
