// Selective scan forward and backward kernels (Mamba, Algorithm 2), fp32 compute.
//
// Work split: one block per (batch, channel tile). A block has kThreads threads; each channel is
// held by `nl` consecutive lanes (a power of two <= 32) and each lane keeps NS of the channel's
// states in registers: lane `ln` owns states n = s * nl + ln, s < NS. A block therefore covers
// dt = kThreads / nl channels. Channel tiles never straddle a group of B or C: channels are split
// into lcm(g_B, g_C) "tile groups" first (blockIdx.y), then into tiles (blockIdx.x).
//
// Time runs sequentially, in chunks of `tc` steps whose inputs are staged in shared memory
// (coalesced along l). The state h lives in registers for the whole sequence; the forward writes
// it to global memory only every kStateChunk steps (for the backward) and at the end.
//
// The backward walks the kStateChunk-step chunks last to first. For each: (1) recompute forward
// from the saved start state and keep the start state of every tc-step sub-chunk in shared memory;
// (2) for each sub-chunk, last to first, recompute its tc states into shared memory, then run the
// adjoint recurrence backwards in time:
//     gh_t = gy_t C_t + carry,   carry <- dA_t gh_t,   dA_t = exp(delta_t A)
//     g(delta A)_t = gh_t h_{t-1} dA_t  -> ddelta += sum_n . A,   dA += . delta
//     dB_t = gh_t delta_t u_t,   dC_t = gy_t h_t,   du += sum_n gh_t B_t delta_t + gy_t D
// dB/dC of variable B/C are summed over the block's channels in shared memory, then atomically
// added (float32) to global accumulators; dA, dD, ddelta_bias and constant dB/dC are summed in
// registers and atomically added once at the end.
//
// Document resets (seq_idx): stage_chunk also stages, per step, whether a new document starts
// there (the same for every channel of the block's batch row). The recurrences then set h = 0
// before such a step, and the adjoint uses dA_t = 0 at it, which cuts the carry into step t-1
// and zeroes the gradient of delta_t A there.
#pragma once
#include "biomamba_cuda.h"
#include "common.cuh"

namespace biomamba {

constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

struct ScanLayout {
  int nl;      // lanes per channel (power of two <= 32)
  int np;      // padded state count NS * nl (rows of the staged B/C)
  int dt;      // channels per block = kThreads / nl
  int groups;  // tile groups = lcm(g_B, g_C) (1 when both constant / ungrouped)
  int dg;      // channels per tile group = dim / groups
  int tc;      // time steps staged per iteration (divides kStateChunk)
};

// Shared-memory layout; rows of staged (channel or state) x time data are tc + 1 floats apart so
// that lanes reading one time step of different rows hit different banks. Both end with tc ints:
// the document-start flags of the staged steps.
struct ScanSmem {
  static __host__ __device__ int fwd_floats(const ScanLayout& L) {
    return (3 * L.dt + 2 * L.np) * (L.tc + 1) + L.tc;
  }
  static __host__ __device__ int bwd_floats(const ScanLayout& L, int ns) {
    return (7 * L.dt + 2 * L.np) * (L.tc + 1) + L.tc * ns * (kThreads + L.nl) +
           (kStateChunk / L.tc) * ns * kThreads + L.tc;
  }
};

// Where this block's channels are; identical for forward and backward.
struct BlockChannels {
  int d0;      // first channel of the block
  int count;   // channels of the block that exist (the last tile of a group may be partial)
  int gb, gc;  // group of B and C the block's channels read (0 for constant B/C)
  __device__ BlockChannels(const ScanParams& p, const ScanLayout& L) {
    const int tile = blockIdx.x, group = blockIdx.y;
    d0 = group * L.dg + tile * L.dt;
    count = min(L.dt, L.dg - tile * L.dt);
    gb = p.b_var ? d0 / (p.dim / p.b_groups) : 0;
    gc = p.c_var ? d0 / (p.dim / p.c_groups) : 0;
  }
};

// Stage time steps [t0, t0 + steps) of u, delta (bias + softplus applied) and variable B
// (and, when `grads`, the softplus derivative, gy = dout * silu(z), and variable C) into shared
// memory, and with seq_idx the document-start flags. Rows of absent channels / states and steps
// past `steps` are zero, so the recurrence on them keeps h = 0 and contributes nothing.
template <typename T>
__device__ void stage_chunk(const ScanParams& p, const ScanLayout& L, const BlockChannels& ch,
                            int t0, int steps, bool grads, float* u_s, float* dt_s, float* sg_s,
                            float* gy_s, float* B_s, float* C_s, int* start_s) {
  const int ts = L.tc + 1, b = blockIdx.z;
  if (p.seq_idx) {
    const int* ids = p.seq_idx + (long long)b * p.len;
    for (int tt = threadIdx.x; tt < L.tc; tt += kThreads) {
      const int t = t0 + tt;
      start_s[tt] = tt < steps && t > 0 && ids[t] != ids[t - 1];
    }
  }
  for (int i = threadIdx.x; i < L.dt * L.tc; i += kThreads) {
    const int c = i / L.tc, tt = i % L.tc;
    float uv = 0.f, dv = 0.f, sg = 1.f, gy = 0.f;
    if (c < ch.count && tt < steps) {
      const int d = ch.d0 + c;
      const long long off = ((long long)b * p.dim + d) * p.len + t0 + tt;
      uv = load<T>(p.u, off);
      const float x = load<T>(p.delta, off) + (p.delta_bias ? p.delta_bias[d] : 0.f);
      dv = p.delta_softplus ? softplus(x) : x;
      if (grads) {
        if (p.delta_softplus) sg = sigmoid(x);
        gy = load<T>(p.dout, off);
        if (p.z) {
          const float zv = load<T>(p.z, off);
          gy *= zv * sigmoid(zv);
        }
      }
    }
    u_s[c * ts + tt] = uv;
    dt_s[c * ts + tt] = dv;
    if (grads) {
      sg_s[c * ts + tt] = sg;
      gy_s[c * ts + tt] = gy;
    }
  }
  const int n_total = p.dstate;
  if (p.b_var) {
    const long long base = ((long long)b * p.b_groups + ch.gb) * n_total * p.len;
    for (int i = threadIdx.x; i < L.np * L.tc; i += kThreads) {
      const int n = i / L.tc, tt = i % L.tc;
      B_s[n * ts + tt] = (n < n_total && tt < steps) ? load<T>(p.B, base + (long long)n * p.len + t0 + tt) : 0.f;
    }
  }
  if (grads && p.c_var) {
    const long long base = ((long long)b * p.c_groups + ch.gc) * n_total * p.len;
    for (int i = threadIdx.x; i < L.np * L.tc; i += kThreads) {
      const int n = i / L.tc, tt = i % L.tc;
      C_s[n * ts + tt] = (n < n_total && tt < steps) ? load<T>(p.C, base + (long long)n * p.len + t0 + tt) : 0.f;
    }
  }
}

// Forward-only staging of variable C (the backward stages it inside stage_chunk).
template <typename T>
__device__ void stage_c(const ScanParams& p, const ScanLayout& L, const BlockChannels& ch, int t0,
                        int steps, float* C_s) {
  if (!p.c_var) return;
  const int ts = L.tc + 1;
  const long long base = ((long long)blockIdx.z * p.c_groups + ch.gc) * p.dstate * p.len;
  for (int i = threadIdx.x; i < L.np * L.tc; i += kThreads) {
    const int n = i / L.tc, tt = i % L.tc;
    C_s[n * ts + tt] = (n < p.dstate && tt < steps) ? load<T>(p.C, base + (long long)n * p.len + t0 + tt) : 0.f;
  }
}

// Per-thread constants: A (and A log2 e for exp2f), constant B/C, for the NS states a lane owns.
template <int NS>
struct LaneStates {
  float A[NS], A2[NS], Bk[NS], Ck[NS];
  bool has[NS];  // the state exists (channel present, n < dstate)
  long long dn[NS];  // index d * n_total + n into (d, n) arrays
  __device__ LaneStates(const ScanParams& p, bool channel_valid, int d, int ln, int nl) {
#pragma unroll
    for (int s = 0; s < NS; ++s) {
      const int n = s * nl + ln;
      has[s] = channel_valid && n < p.dstate;
      dn[s] = (long long)d * p.dstate + n;
      A[s] = has[s] ? p.A[dn[s]] : 0.f;
      A2[s] = A[s] * kLog2e;
      Bk[s] = (has[s] && !p.b_var) ? static_cast<const float*>(p.B)[dn[s]] : 0.f;
      Ck[s] = (has[s] && !p.c_var) ? static_cast<const float*>(p.C)[dn[s]] : 0.f;
    }
  }
};

template <int NS, typename T>
__global__ void __launch_bounds__(kThreads) scan_fwd_kernel(ScanParams p, ScanLayout L) {
  extern __shared__ float smem[];
  const int ts = L.tc + 1;
  float* u_s = smem;
  float* dt_s = u_s + L.dt * ts;
  float* y_s = dt_s + L.dt * ts;
  float* B_s = y_s + L.dt * ts;
  float* C_s = B_s + L.np * ts;
  int* start_s = reinterpret_cast<int*>(C_s + L.np * ts);  // document starts (with seq_idx)

  const BlockChannels ch(p, L);
  const int tid = threadIdx.x, ln = tid % L.nl, lc = tid / L.nl, b = blockIdx.z;
  const bool valid = lc < ch.count;
  const int d = ch.d0 + lc;
  const LaneStates<NS> ls(p, valid, d, ln, L.nl);
  const int n_chunks = (p.len + kStateChunk - 1) / kStateChunk;

  float h[NS];
#pragma unroll
  for (int s = 0; s < NS; ++s) h[s] = 0.f;

  for (int t0 = 0; t0 < p.len; t0 += L.tc) {
    const int steps = min(L.tc, p.len - t0);
    if (p.chunk_states && t0 % kStateChunk == 0) {
      const long long base = (((long long)b * p.dim + d) * n_chunks + t0 / kStateChunk) * p.dstate;
#pragma unroll
      for (int s = 0; s < NS; ++s)
        if (ls.has[s]) p.chunk_states[base + s * L.nl + ln] = h[s];
    }
    stage_chunk<T>(p, L, ch, t0, steps, false, u_s, dt_s, nullptr, nullptr, B_s, nullptr, start_s);
    stage_c<T>(p, L, ch, t0, steps, C_s);
    __syncthreads();

    for (int tt = 0; tt < steps; ++tt) {
      const float dtv = dt_s[lc * ts + tt];
      const float du = dtv * u_s[lc * ts + tt];
      if (p.seq_idx && start_s[tt]) {  // uniform over the block: no divergence
#pragma unroll
        for (int s = 0; s < NS; ++s) h[s] = 0.f;
      }
      float y = 0.f;
#pragma unroll
      for (int s = 0; s < NS; ++s) {
        const int row = (s * L.nl + ln) * ts + tt;
        const float Bv = p.b_var ? B_s[row] : ls.Bk[s];
        const float Cv = p.c_var ? C_s[row] : ls.Ck[s];
        h[s] = fmaf(exp2f(dtv * ls.A2[s]), h[s], du * Bv);
        y = fmaf(h[s], Cv, y);
      }
      y = lane_group_sum(y, L.nl);
      if (ln == 0) y_s[lc * ts + tt] = y;
    }
    __syncthreads();

    for (int i = tid; i < L.dt * L.tc; i += kThreads) {
      const int c = i / L.tc, tt = i % L.tc;
      if (c >= ch.count || tt >= steps) continue;
      const int dc = ch.d0 + c;
      const long long off = ((long long)b * p.dim + dc) * p.len + t0 + tt;
      float o = y_s[c * ts + tt] + (p.D ? p.D[dc] * u_s[c * ts + tt] : 0.f);
      if (p.z) {
        const float zv = load<T>(p.z, off);
        o *= zv * sigmoid(zv);
      }
      store<T>(p.out, off, o);
    }
    __syncthreads();  // the next iteration overwrites the staged rows read above
  }

  const long long base = ((long long)b * p.dim + d) * p.dstate;
#pragma unroll
  for (int s = 0; s < NS; ++s)
    if (ls.has[s]) p.last_state[base + s * L.nl + ln] = h[s];
}

// Sum over the block's channels of w(channel, t) * buf(t, state n, channel) for each (n, t) of
// the sub-chunk, atomically added to the (b, g, n, l) float32 accumulator `acc`.
// buf is the backward's per-thread state buffer (h_t for dC, gh_t for dB); w_a * w_b the weight.
__device__ void reduce_bc_over_channels(const ScanLayout& L, int ns, int count, int n_total, int len,
                                        int steps, const float* buf, const float* w_a,
                                        const float* w_b, float* acc, long long acc_base, int t0) {
  const int ts = L.tc + 1, row = kThreads + L.nl;
  for (int i = threadIdx.x; i < L.np * L.tc; i += kThreads) {
    const int n = i % L.np, tt = i / L.np;
    if (n >= n_total || tt >= steps) continue;
    const int s = n / L.nl, ln = n % L.nl;
    const float* col = buf + (tt * ns + s) * row + ln;
    float sum = 0.f;
    for (int c = 0; c < count; ++c) {
      const float w = w_b ? w_a[c * ts + tt] * w_b[c * ts + tt] : w_a[c * ts + tt];
      sum = fmaf(w, col[c * L.nl], sum);
    }
    atomicAdd(acc + acc_base + (long long)n * len + t0 + tt, sum);
  }
}

template <int NS, typename T>
__global__ void __launch_bounds__(kThreads) scan_bwd_kernel(ScanParams p, ScanLayout L) {
  extern __shared__ float smem[];
  const int ts = L.tc + 1, hrow = kThreads + L.nl;
  float* u_s = smem;
  float* dt_s = u_s + L.dt * ts;
  float* sg_s = dt_s + L.dt * ts;   // d softplus / d delta (1 without softplus)
  float* gy_s = sg_s + L.dt * ts;   // dout * silu(z)
  float* yp_s = gy_s + L.dt * ts;   // y + D u, before the z gate (only with z)
  float* gdt_s = yp_s + L.dt * ts;  // ddelta
  float* gu_s = gdt_s + L.dt * ts;  // du
  float* B_s = gu_s + L.dt * ts;
  float* C_s = B_s + L.np * ts;
  float* hs = C_s + L.np * ts;            // [tc][NS][kThreads + nl]: h_t, then overwritten by gh_t
  float* sub_h = hs + L.tc * NS * hrow;   // [n_sub_max][NS][kThreads]: start state of each sub-chunk
  int* start_s = reinterpret_cast<int*>(sub_h + (kStateChunk / L.tc) * NS * kThreads);

  const BlockChannels ch(p, L);
  const int tid = threadIdx.x, ln = tid % L.nl, lc = tid / L.nl, b = blockIdx.z;
  const bool valid = lc < ch.count;
  const int d = ch.d0 + lc;
  const LaneStates<NS> ls(p, valid, d, ln, L.nl);
  const float Dv = (valid && p.D) ? p.D[d] : 0.f;
  const int n_chunks = (p.len + kStateChunk - 1) / kStateChunk;
  const long long bd = (long long)b * p.dim + d;

  float h[NS], carry[NS], gA[NS], gBk[NS], gCk[NS];
#pragma unroll
  for (int s = 0; s < NS; ++s) {
    carry[s] = (ls.has[s] && p.dlast_state) ? p.dlast_state[bd * p.dstate + s * L.nl + ln] : 0.f;
    gA[s] = gBk[s] = gCk[s] = 0.f;
  }
  float gD = 0.f, gbias = 0.f;  // meaningful in lane 0 of each channel

  for (int c = n_chunks - 1; c >= 0; --c) {
    const int cs = c * kStateChunk, ce = min(cs + kStateChunk, p.len);
    const int n_sub = (ce - cs + L.tc - 1) / L.tc;
#pragma unroll
    for (int s = 0; s < NS; ++s)
      h[s] = ls.has[s] ? p.chunk_states[(bd * n_chunks + c) * p.dstate + s * L.nl + ln] : 0.f;

    // (1) start state of every sub-chunk
    for (int j = 0; j < n_sub; ++j) {
#pragma unroll
      for (int s = 0; s < NS; ++s) sub_h[(j * NS + s) * kThreads + tid] = h[s];
      if (j == n_sub - 1) break;
      const int t0 = cs + j * L.tc;  // a full sub-chunk: only the last one can be partial
      stage_chunk<T>(p, L, ch, t0, L.tc, false, u_s, dt_s, nullptr, nullptr, B_s, nullptr, start_s);
      __syncthreads();
      for (int tt = 0; tt < L.tc; ++tt) {
        const float dtv = dt_s[lc * ts + tt];
        const float du = dtv * u_s[lc * ts + tt];
        const bool start = p.seq_idx && start_s[tt];
#pragma unroll
        for (int s = 0; s < NS; ++s) {
          if (start) h[s] = 0.f;
          const float Bv = p.b_var ? B_s[(s * L.nl + ln) * ts + tt] : ls.Bk[s];
          h[s] = fmaf(exp2f(dtv * ls.A2[s]), h[s], du * Bv);
        }
      }
      __syncthreads();
    }

    // (2) sub-chunks last to first
    for (int j = n_sub - 1; j >= 0; --j) {
      const int t0 = cs + j * L.tc, steps = min(L.tc, ce - t0);
      stage_chunk<T>(p, L, ch, t0, steps, true, u_s, dt_s, sg_s, gy_s, B_s, C_s, start_s);
      __syncthreads();

      // (2a) recompute the states of the sub-chunk
#pragma unroll
      for (int s = 0; s < NS; ++s) h[s] = sub_h[(j * NS + s) * kThreads + tid];
      for (int tt = 0; tt < steps; ++tt) {
        const float dtv = dt_s[lc * ts + tt], uv = u_s[lc * ts + tt], gyv = gy_s[lc * ts + tt];
        const float du = dtv * uv;
        const bool start = p.seq_idx && start_s[tt];
        float y = 0.f;
#pragma unroll
        for (int s = 0; s < NS; ++s) {
          const int row = (s * L.nl + ln) * ts + tt;
          const float Bv = p.b_var ? B_s[row] : ls.Bk[s];
          const float Cv = p.c_var ? C_s[row] : ls.Ck[s];
          if (start) h[s] = 0.f;
          h[s] = fmaf(exp2f(dtv * ls.A2[s]), h[s], du * Bv);
          hs[(tt * NS + s) * hrow + tid] = h[s];
          y = fmaf(h[s], Cv, y);
          gCk[s] = fmaf(gyv, h[s], gCk[s]);  // used only for constant C
        }
        if (p.z) {  // the gate's gradient needs the pre-gate output
          y = lane_group_sum(y, L.nl);
          if (ln == 0) yp_s[lc * ts + tt] = y + Dv * uv;
        }
      }
      __syncthreads();
      if (p.c_var)
        reduce_bc_over_channels(L, NS, ch.count, p.dstate, p.len, steps, hs, gy_s, nullptr, p.dC,
                                ((long long)b * p.c_groups + ch.gc) * p.dstate * p.len, t0);
      __syncthreads();  // hs is overwritten below

      // (2b) adjoint recurrence, backwards in time
      for (int tt = steps - 1; tt >= 0; --tt) {
        const float dtv = dt_s[lc * ts + tt], uv = u_s[lc * ts + tt], gyv = gy_s[lc * ts + tt];
        const float du = dtv * uv;
        const bool start = p.seq_idx && start_s[tt];  // h_{t-1} did not enter h_t
        float gdt = 0.f, gu = 0.f;
#pragma unroll
        for (int s = 0; s < NS; ++s) {
          const int row = (s * L.nl + ln) * ts + tt;
          const float Bv = p.b_var ? B_s[row] : ls.Bk[s];
          const float Cv = p.c_var ? C_s[row] : ls.Ck[s];
          const float gh = fmaf(gyv, Cv, carry[s]);
          const float dA = start ? 0.f : exp2f(dtv * ls.A2[s]);
          const float h_prev = tt > 0 ? hs[((tt - 1) * NS + s) * hrow + tid]
                                      : sub_h[(j * NS + s) * kThreads + tid];
          const float g_dtA = gh * h_prev * dA;  // gradient of delta_t * A
          gdt = fmaf(g_dtA, ls.A[s], gdt);
          gdt = fmaf(gh * Bv, uv, gdt);
          gu = fmaf(gh * Bv, dtv, gu);
          gA[s] = fmaf(g_dtA, dtv, gA[s]);
          gBk[s] = fmaf(gh, du, gBk[s]);  // used only for constant B
          hs[(tt * NS + s) * hrow + tid] = gh;  // h_tt is not needed any more
          carry[s] = dA * gh;
        }
        gdt = lane_group_sum(gdt, L.nl);
        gu = lane_group_sum(gu, L.nl);
        if (ln == 0) {
          gdt *= sg_s[lc * ts + tt];
          gdt_s[lc * ts + tt] = gdt;
          gu_s[lc * ts + tt] = fmaf(gyv, Dv, gu);
          gD = fmaf(gyv, uv, gD);
          gbias += gdt;
        }
      }
      __syncthreads();
      if (p.b_var)
        reduce_bc_over_channels(L, NS, ch.count, p.dstate, p.len, steps, hs, dt_s, u_s, p.dB,
                                ((long long)b * p.b_groups + ch.gb) * p.dstate * p.len, t0);
      for (int i = tid; i < L.dt * L.tc; i += kThreads) {
        const int cc = i / L.tc, tt = i % L.tc;
        if (cc >= ch.count || tt >= steps) continue;
        const long long off = ((long long)b * p.dim + ch.d0 + cc) * p.len + t0 + tt;
        store<T>(p.du, off, gu_s[cc * ts + tt]);
        store<T>(p.ddelta, off, gdt_s[cc * ts + tt]);
        if (p.z) {
          const float zv = load<T>(p.z, off), sz = sigmoid(zv);
          const float g = load<T>(p.dout, off) * yp_s[cc * ts + tt] * sz * (1.f + zv * (1.f - sz));
          store<T>(p.dz, off, g);
        }
      }
      __syncthreads();  // the next sub-chunk restages everything read above
    }
  }

#pragma unroll
  for (int s = 0; s < NS; ++s) {
    if (!ls.has[s]) continue;
    atomicAdd(p.dA + ls.dn[s], gA[s]);
    if (!p.b_var) atomicAdd(p.dB + ls.dn[s], gBk[s]);
    if (!p.c_var) atomicAdd(p.dC + ls.dn[s], gCk[s]);
  }
  if (valid && ln == 0) {
    if (p.D) atomicAdd(p.dD + d, gD);
    if (p.delta_bias) atomicAdd(p.ddelta_bias + d, gbias);
  }
}

}  // namespace biomamba
