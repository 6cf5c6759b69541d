// The Mamba-2 SSD scan on CPU: forward and backward of one (batch row, head) unit, the state in
// registers one tile at a time.
//
// Names follow biomamba/ops/ssd_reference.py, per batch row b and head h (p = headdim, n = d_state):
//   u_t = dt_t x_t (p)    decay_t = exp(dt_t A), or 0 where a document starts at t
//   H_t = decay_t H_{t-1} + u_t B_t^T   (H: p x n)        y_t = H_t C_t
// (dt's bias/softplus/clamp, D and the gate are elementwise and stay in PyTorch, ops/ssd_cpu.py.)
//
// Why tiles: the decay is one scalar per step, so every element H[i, k] follows its own scalar
// recurrence. A tile of KT state columns (k) x IV vectors of W rows (i) stays in registers while
// the tile walks a whole chunk of KC steps; y_t gets the tile's partial sum. The state goes to
// memory once per tile and chunk, not once per step, and the loops never reduce across lanes in
// the forward (vectors run along p). State buffers are kernel-private, (n, p)-major and padded
// to whole tiles (zero B/C/u in the padding keep it zero).
//
// Backward (adjoint G_t = dL/dH_t = gy_t C_t^T + decay_{t+1} G_{t+1}, seeded by the gradient of the
// final state): chunks in reverse; per tile, the chunk's states are recomputed from the state saved
// at the chunk's start, then a walk backwards accumulates
//   gu_t = G_t B_t      gB_t = G_t^T u_t      gC_t = H_t^T gy_t      gdot_t = <G_t, H_{t-1}>
// and the caller turns gdot into the gradient of dt and A (d decay_t / d dt_t = decay_t A).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace biomamba_ssd {

#define SSD_INLINE inline __attribute__((always_inline))

constexpr int64_t KC = 64;  // steps per chunk: the backward's saved states and per-tile history
constexpr int KT = 4;       // state columns (k) per tile
constexpr int IV = 2;       // vectors of rows (i) per tile

template <typename T, int Bytes>
struct Vec {  // Bytes-wide vectors (32: AVX2, 64: AVX-512 when the caller's target has them)
  typedef T V __attribute__((vector_size(Bytes)));
  static constexpr int W = Bytes / sizeof(T);
  static SSD_INLINE V set1(T x) { return V{} + x; }  // a broadcast (a lane loop becomes W inserts)
  static SSD_INLINE V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static SSD_INLINE void store(T* p, V v) { std::memcpy(p, &v, sizeof(v)); }
  static SSD_INLINE T sum(V v) {
    T s = T(0);
    for (int j = 0; j < W; ++j) s += v[j];
    return s;
  }
};

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

template <typename T>
struct SsdArgs {
  int64_t batch, len, heads, headdim, groups, dstate, nchunks;
  int64_t Pp, Np;        // headdim and dstate padded to whole tiles
  const T *x, *dt, *A, *B, *C, *init;  // init may be null
  const int32_t* starts;               // (b, l): 1 where a document starts (decay 0), or null
  T* saved;                            // (b, h, nchunks, Np, Pp) states at chunk starts, or null
};

// One chunk of one unit, packed (padded, contiguous) for the tiles.
template <typename T>
struct Chunk {
  std::vector<T> u, Bc, Cc, decay, y, gy;  // (KC, Pp), (KC, Np), (KC, Np), (KC), (KC, Pp), (KC, Pp)
  void resize(const SsdArgs<T>& a) {
    u.assign(KC * a.Pp, T(0));
    y.assign(KC * a.Pp, T(0));
    gy.assign(KC * a.Pp, T(0));
    Bc.assign(KC * a.Np, T(0));
    Cc.assign(KC * a.Np, T(0));
    decay.assign(KC, T(0));
  }
};

template <typename T>
SSD_INLINE void pack_chunk(const SsdArgs<T>& a, int64_t b, int64_t h, int64_t s0, int64_t steps,
                           Chunk<T>& c) {
  const int64_t g = h / (a.heads / a.groups);
  const T A = a.A[h];
  for (int64_t t = 0; t < KC; ++t) {
    T* u = c.u.data() + t * a.Pp;
    T* Bt = c.Bc.data() + t * a.Np;
    T* Ct = c.Cc.data() + t * a.Np;
    if (t >= steps) {  // past the end: no input, no decay into it
      std::fill(u, u + a.Pp, T(0));
      std::fill(Bt, Bt + a.Np, T(0));
      std::fill(Ct, Ct + a.Np, T(0));
      c.decay[t] = T(1);
      continue;
    }
    const int64_t pos = b * a.len + s0 + t;
    const T dt = a.dt[pos * a.heads + h];
    const T* x = a.x + (pos * a.heads + h) * a.headdim;
    for (int64_t i = 0; i < a.headdim; ++i) u[i] = dt * x[i];
    const T* Bsrc = a.B + (pos * a.groups + g) * a.dstate;
    const T* Csrc = a.C + (pos * a.groups + g) * a.dstate;
    std::copy(Bsrc, Bsrc + a.dstate, Bt);
    std::copy(Csrc, Csrc + a.dstate, Ct);
    c.decay[t] = (a.starts && a.starts[pos]) ? T(0) : std::exp(dt * A);
  }
}

// The unit's state from (p, n)-major `src` (or zero) into the (Np, Pp) kernel layout.
template <typename T>
SSD_INLINE void state_in(const SsdArgs<T>& a, const T* src, T* S) {
  std::fill(S, S + a.Np * a.Pp, T(0));
  if (!src) return;
  for (int64_t i = 0; i < a.headdim; ++i)
    for (int64_t k = 0; k < a.dstate; ++k) S[k * a.Pp + i] = src[i * a.dstate + k];
}

template <typename T>
SSD_INLINE void state_out(const SsdArgs<T>& a, const T* S, T* dst) {
  for (int64_t i = 0; i < a.headdim; ++i)
    for (int64_t k = 0; k < a.dstate; ++k) dst[i * a.dstate + k] = S[k * a.Pp + i];
}

// Forward of one (b, h): y (b, l, h, p) and the final state (b, h, p, n).
template <typename T, int Bytes>
SSD_INLINE void forward_unit(const SsdArgs<T>& a, int64_t b, int64_t h, T* y_out, T* final_out,
                             std::vector<T>& S, Chunk<T>& c) {
  using Vc = Vec<T, Bytes>;
  using V = typename Vc::V;
  constexpr int W = Vc::W;
  const int64_t unit = b * a.heads + h, Pp = a.Pp, Np = a.Np;
  S.resize(Np * Pp);
  state_in(a, a.init ? a.init + unit * a.headdim * a.dstate : nullptr, S.data());
  for (int64_t ci = 0; ci < a.nchunks; ++ci) {
    const int64_t s0 = ci * KC, steps = std::min(KC, a.len - s0);
    if (a.saved) std::copy(S.begin(), S.end(), a.saved + (unit * a.nchunks + ci) * Np * Pp);
    pack_chunk(a, b, h, s0, steps, c);
    std::fill(c.y.begin(), c.y.end(), T(0));
    for (int64_t k0 = 0; k0 < Np; k0 += KT) {
      for (int64_t i0 = 0; i0 < Pp; i0 += IV * W) {
        V H[KT][IV];
        #pragma GCC unroll 8
        for (int k = 0; k < KT; ++k)
          #pragma GCC unroll 8
          for (int j = 0; j < IV; ++j) H[k][j] = Vc::load(S.data() + (k0 + k) * Pp + i0 + j * W);
        for (int64_t t = 0; t < steps; ++t) {
          const V dv = Vc::set1(c.decay[t]);
          const T* u = c.u.data() + t * Pp + i0;
          const T* Bt = c.Bc.data() + t * Np + k0;
          const T* Ct = c.Cc.data() + t * Np + k0;
          V uv[IV], yacc[IV];
          #pragma GCC unroll 8
          for (int j = 0; j < IV; ++j) {
            uv[j] = Vc::load(u + j * W);
            yacc[j] = Vc::set1(T(0));
          }
          #pragma GCC unroll 8
          for (int k = 0; k < KT; ++k) {
            const V bk = Vc::set1(Bt[k]), ck = Vc::set1(Ct[k]);
            #pragma GCC unroll 8
            for (int j = 0; j < IV; ++j) {
              H[k][j] = dv * H[k][j] + bk * uv[j];
              yacc[j] += H[k][j] * ck;
            }
          }
          T* y = c.y.data() + t * Pp + i0;
          #pragma GCC unroll 8
          for (int j = 0; j < IV; ++j) Vc::store(y + j * W, Vc::load(y + j * W) + yacc[j]);
        }
        #pragma GCC unroll 8
        for (int k = 0; k < KT; ++k)
          #pragma GCC unroll 8
          for (int j = 0; j < IV; ++j) Vc::store(S.data() + (k0 + k) * Pp + i0 + j * W, H[k][j]);
      }
    }
    for (int64_t t = 0; t < steps; ++t) {
      T* dst = y_out + ((b * a.len + s0 + t) * a.heads + h) * a.headdim;
      std::copy(c.y.data() + t * Pp, c.y.data() + t * Pp + a.headdim, dst);
    }
  }
  state_out(a, S.data(), final_out + unit * a.headdim * a.dstate);
}

template <typename T>
struct SsdGrads {
  const T *gy, *gfinal;  // (b, l, h, p), (b, h, p, n) or null
  T *gx, *gdt;           // (b, l, h, p), (b, l, h)
  T *gA;                 // (b, h): per-row partials, summed by the caller
  T *gB, *gC;            // (b, l, h, n): per head, summed over a group's heads by the caller
  T* ginit;              // (b, h, p, n)
};

// out[r] = the sum of the W values of row r of `rows` x W `in`.
template <typename T, int W>
SSD_INLINE void sum_lanes(const T* in, int64_t rows, T* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = in[r * W];
  for (int w = 1; w < W; ++w)
    for (int64_t r = 0; r < rows; ++r) out[r] += in[r * W + w];
}

// Per-thread scratch of the backward (sized for the widest vectors).
template <typename T>
struct BackScratch {
  Chunk<T> c;
  std::vector<T> G, hist, gu, gBv, gCv, gdotv, sums;
  void resize(const SsdArgs<T>& a) {
    sums.resize(2 * KC * KT);
    constexpr int W = 64 / sizeof(T);
    c.resize(a);
    G.resize(a.Np * a.Pp);
    hist.resize((KC + 1) * KT * IV * W);
    gu.resize(KC * a.Pp);
    gBv.resize(KC * KT * W);
    gCv.resize(KC * KT * W);
    gdotv.resize(KC * W);
  }
};

// Backward of one (b, h).
template <typename T, int Bytes>
SSD_INLINE void backward_unit(const SsdArgs<T>& a, const SsdGrads<T>& g, int64_t b, int64_t h,
                              BackScratch<T>& s) {
  using Vc = Vec<T, Bytes>;
  using V = typename Vc::V;
  constexpr int W = Vc::W;
  const int64_t unit = b * a.heads + h, Pp = a.Pp, Np = a.Np;
  s.resize(a);
  Chunk<T>& c = s.c;
  state_in(a, g.gfinal ? g.gfinal + unit * a.headdim * a.dstate : nullptr, s.G.data());
  T gA = T(0);
  for (int64_t ci = a.nchunks - 1; ci >= 0; --ci) {
    const int64_t s0 = ci * KC, steps = std::min(KC, a.len - s0);
    pack_chunk(a, b, h, s0, steps, c);
    std::fill(c.gy.begin(), c.gy.end(), T(0));
    for (int64_t t = 0; t < steps; ++t) {
      const T* src = g.gy + ((b * a.len + s0 + t) * a.heads + h) * a.headdim;
      std::copy(src, src + a.headdim, c.gy.data() + t * Pp);
    }
    std::fill(s.gu.begin(), s.gu.end(), T(0));
    std::fill(s.gdotv.begin(), s.gdotv.end(), T(0));
    const T* saved = a.saved + (unit * a.nchunks + ci) * Np * Pp;
    for (int64_t k0 = 0; k0 < Np; k0 += KT) {
      std::fill(s.gBv.begin(), s.gBv.end(), T(0));
      std::fill(s.gCv.begin(), s.gCv.end(), T(0));
      for (int64_t i0 = 0; i0 < Pp; i0 += IV * W) {
        // 1. the tile's states over the chunk, from the one saved at its start: history slot 0
        // holds that state, slot t + 1 the state H_t
        constexpr int64_t slot = KT * IV * W;
        V H[KT][IV];
        #pragma GCC unroll 8
        for (int k = 0; k < KT; ++k)
          #pragma GCC unroll 8
          for (int j = 0; j < IV; ++j) {
            H[k][j] = Vc::load(saved + (k0 + k) * Pp + i0 + j * W);
            Vc::store(s.hist.data() + (k * IV + j) * W, H[k][j]);
          }
        for (int64_t t = 0; t < steps; ++t) {
          const V dv = Vc::set1(c.decay[t]);
          const T* u = c.u.data() + t * Pp + i0;
          const T* Bt = c.Bc.data() + t * Np + k0;
          T* hist = s.hist.data() + (t + 1) * slot;
          #pragma GCC unroll 8
          for (int k = 0; k < KT; ++k) {
            const V bk = Vc::set1(Bt[k]);
            #pragma GCC unroll 8
            for (int j = 0; j < IV; ++j) {
              H[k][j] = dv * H[k][j] + bk * Vc::load(u + j * W);
              Vc::store(hist + (k * IV + j) * W, H[k][j]);
            }
          }
        }
        // 2. the adjoint, last step first; Gc holds decay_{t+1} G_{t+1}, H the state H_t
        // (H after the recompute is the chunk's last state; going back, H_{t-1} becomes the next H_t)
        V Gc[KT][IV];
        #pragma GCC unroll 8
        for (int k = 0; k < KT; ++k)
          #pragma GCC unroll 8
          for (int j = 0; j < IV; ++j) Gc[k][j] = Vc::load(s.G.data() + (k0 + k) * Pp + i0 + j * W);
        for (int64_t t = steps - 1; t >= 0; --t) {
          const V dv = Vc::set1(c.decay[t]);
          const T* u = c.u.data() + t * Pp + i0;
          const T* gyp = c.gy.data() + t * Pp + i0;
          const T* Bt = c.Bc.data() + t * Np + k0;
          const T* Ct = c.Cc.data() + t * Np + k0;
          const T* prev = s.hist.data() + t * slot;  // H_{t-1}
          V uv[IV], gyv[IV], gacc[IV];
          #pragma GCC unroll 8
          for (int j = 0; j < IV; ++j) {
            uv[j] = Vc::load(u + j * W);
            gyv[j] = Vc::load(gyp + j * W);
            gacc[j] = Vc::set1(T(0));
          }
          V dot[KT];
          #pragma GCC unroll 8
          for (int k = 0; k < KT; ++k) {  // separate sums per k: no chain through the whole tile
            const V bk = Vc::set1(Bt[k]), ck = Vc::set1(Ct[k]);
            V pB = Vc::set1(T(0)), pC = Vc::set1(T(0));
            dot[k] = Vc::set1(T(0));
            #pragma GCC unroll 8
            for (int j = 0; j < IV; ++j) {
              const V G = Gc[k][j] + gyv[j] * ck;
              const V Hp = Vc::load(prev + (k * IV + j) * W);
              gacc[j] += G * bk;
              pB += G * uv[j];
              pC += H[k][j] * gyv[j];
              dot[k] += G * Hp;
              Gc[k][j] = dv * G;
              H[k][j] = Hp;
            }
            T* gBv = s.gBv.data() + (t * KT + k) * W;
            T* gCv = s.gCv.data() + (t * KT + k) * W;
            Vc::store(gBv, Vc::load(gBv) + pB);
            Vc::store(gCv, Vc::load(gCv) + pC);
          }
          T* gu = s.gu.data() + t * Pp + i0;
          #pragma GCC unroll 8
          for (int j = 0; j < IV; ++j) Vc::store(gu + j * W, Vc::load(gu + j * W) + gacc[j]);
          T* gd = s.gdotv.data() + t * W;
          V dsum = dot[0];
          #pragma GCC unroll 8
          for (int k = 1; k < KT; ++k) dsum += dot[k];
          Vc::store(gd, Vc::load(gd) + dsum);
        }
        #pragma GCC unroll 8
        for (int k = 0; k < KT; ++k)
          #pragma GCC unroll 8
          for (int j = 0; j < IV; ++j) Vc::store(s.G.data() + (k0 + k) * Pp + i0 + j * W, Gc[k][j]);
      }
      // this column block's gB, gC: the lanes of the per-step partials summed, lane by lane over
      // all rows at once (a sum per row would be a chain of W dependent adds)
      const int64_t rows = steps * KT;
      sum_lanes<T, W>(s.gBv.data(), rows, s.sums.data());
      sum_lanes<T, W>(s.gCv.data(), rows, s.sums.data() + KC * KT);
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t pos = b * a.len + s0 + t;
        T* gB = g.gB + (pos * a.heads + h) * a.dstate;
        T* gC = g.gC + (pos * a.heads + h) * a.dstate;
        for (int k = 0; k < KT && k0 + k < a.dstate; ++k) {
          gB[k0 + k] = s.sums[t * KT + k];
          gC[k0 + k] = s.sums[KC * KT + t * KT + k];
        }
      }
    }
    // 3. gx, gdt, gA of the chunk's steps
    const T A = a.A[h];
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t pos = b * a.len + s0 + t;
      const T dt = a.dt[pos * a.heads + h];
      const T* x = a.x + (pos * a.heads + h) * a.headdim;
      const T* gu = s.gu.data() + t * Pp;
      T* gx = g.gx + (pos * a.heads + h) * a.headdim;
      T gdt_u = T(0);
      for (int64_t i = 0; i < a.headdim; ++i) {
        gx[i] = gu[i] * dt;
        gdt_u += gu[i] * x[i];
      }
      const T g_dA = Vc::sum(Vc::load(s.gdotv.data() + t * W)) * c.decay[t];  // d/d(dt_t A)
      g.gdt[pos * a.heads + h] = gdt_u + g_dA * A;
      gA += g_dA * dt;
    }
  }
  state_out(a, s.G.data(), g.ginit + unit * a.headdim * a.dstate);
  g.gA[unit] = gA;
}

}  // namespace biomamba_ssd
