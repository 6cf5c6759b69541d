// One decoding step of the selective scan (selective_state_update), fp32 compute.
// One block per (channel tile, batch); each channel is held by `nl` consecutive lanes that
// stride over its states (coalesced reads of the (b, d, n) state), and sum <h, C> with shuffles.
#pragma once
#include "biomamba_cuda.h"
#include "common.cuh"

namespace biomamba {

constexpr int kUpdateThreads = 128;

template <typename T, typename TState>
__global__ void __launch_bounds__(kUpdateThreads) state_update_kernel(StateUpdateParams p, int nl) {
  const int ln = threadIdx.x % nl, lc = threadIdx.x / nl, b = blockIdx.y;
  const int d = blockIdx.x * (kUpdateThreads / nl) + lc;
  const bool valid = d < p.dim;
  float y = 0.f, x = 0.f;
  if (valid) {
    const long long bd = (long long)b * p.dim + d;
    x = load<T>(p.x, bd);
    float dt = load<T>(p.dt, bd) + (p.dt_bias ? p.dt_bias[d] : 0.f);
    if (p.dt_softplus) dt = softplus(dt);
    const int g = d / (p.dim / p.groups);
    const long long bc = ((long long)b * p.groups + g) * p.dstate;
    const float dx = dt * x;
    for (int n = ln; n < p.dstate; n += nl) {
      const long long i = bd * p.dstate + n;
      const float h = load<TState>(p.state, i) * expf(dt * p.A[(long long)d * p.dstate + n]) +
                      dx * load<T>(p.B, bc + n);
      store<TState>(p.state, i, h);
      y = fmaf(h, load<T>(p.C, bc + n), y);
    }
  }
  y = lane_group_sum(y, nl);
  if (valid && ln == 0) {
    const long long bd = (long long)b * p.dim + d;
    float o = y + (p.D ? p.D[d] * x : 0.f);
    if (p.z) {
      const float zv = load<T>(p.z, bd);
      o *= zv * sigmoid(zv);
    }
    store<T>(p.out, bd, o);
  }
}

}  // namespace biomamba
