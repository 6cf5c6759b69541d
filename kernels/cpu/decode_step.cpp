// One decoding step of a whole model, compiled: batch-1 (and small-batch) decoding is bound by reading
// the weights once per token, and torch's gemv plus some 40 small ops per layer reach about a third of
// that bound here (bench/decode_profile.py). This file holds
//   - gemv over a weight kept in float32, bfloat16 or int8 (one float32 scale per output row), over a
//     share of its rows or columns, through decode_vectors.h's dot products (several rows of x, as a
//     prompt pass or b > 1 sequences give, through decode_tiles.h's tiles): AVX-512, AVX2 or baseline,
//     the widest the CPU has (BIOMAMBA_CPU_ISA caps it), read once per call;
//   - mamba1_tokens / mamba2_tokens (called through a Plan, below): every block (RMSNorm, in_proj, the
//     causal conv step with SiLU, the SSM state step, gating, out_proj and the residual), then the final
//     RMSNorm and the LM head, updating the cache's states in place and returning the logits of each
//     sequence's last token; for one token of each sequence (a decoding step) or for a whole prompt
//     (prefill: the projections read each weight once for all of the prompt's tokens, the conv and state
//     steps run token after token);
//   - linear: the gemv alone, for tests and the profile.
// Activations and states stay float32 whatever the weights (weight-only quantization), except under
// int8-dynamic, where the activations entering in_proj, out_proj and the LM head are rounded to int8 in
// blocks of 32 (decode_vectors.h: Int8Activations) and, at batch 1 with AVX2 or AVX-512 VNNI, multiplied as
// integers.
//
// Threads: one OpenMP parallel region per token, not one per operation. biomamba runs OpenMP with
// OMP_WAIT_POLICY=PASSIVE (biomamba/threads.py: a busy neighbour must not starve us), where every
// parallel region's start wakes sleeping threads; with some 150 regions per token that cost a third of
// the 130m model's decoding time (bench/RESULTS.md). Inside the one region the threads meet at a
// barrier that spins briefly, then yields, then sleeps (SpinBarrier). Each thread owns a range of
// channels (Mamba-1, from in_proj) or heads (Mamba-2, from the conv) to the gate; out_proj is split over
// its output rows (out_projection), so a layer needs three barriers (Mamba-2 five: its in_proj is split
// over rows, and its gated norm sums over the team). Mamba-1's small x_proj is split over its input
// columns and each thread sums the partial results in the same order; every thread keeps an identical
// copy of the residual.
//
// Called only from biomamba/decode.py, which checks dtypes, shapes and contiguity first; the checks
// here guard that contract, all before the parallel region (an exception must not leave it).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "decode_vectors.h"  // the dot products and state steps, in each instruction set (isa.h)
#include "decode_tiles.h"    // the products of a prompt pass or b > 1 sequences, a tile of rows at once

namespace biomamba_decode {
namespace {

using at::Tensor;
using c10::optional;
using Layers = std::vector<std::vector<optional<Tensor>>>;  // each layer's tensors, in decode.py's order

// A linear layer as the step reads it: out[r] = scale[r] * <w[r], x> + bias[r].
struct Linear {
  const void* w = nullptr;
  const float* scale = nullptr;  // int8 only
  const float* bias = nullptr;
  int64_t m = 0, k = 0;
  Kind kind = kF32;
  int isa = 0;  // the instruction set its dot products use (isa.h), read once per call of the step
  bool hints = false;  // whether the AVX-512 ones ask for the weights ahead (weight_hints)
  bool int8_activations = false;  // x rounded to int8 in blocks first (int8-dynamic; int8 weights only)
};

Linear make_linear(const Tensor& w, const optional<Tensor>& scale, const optional<Tensor>& bias,
                   const char* name, int isa, bool int8_activations = false) {
  TORCH_CHECK(w.device().is_cpu() && w.dim() == 2 && w.is_contiguous(), "decode step: ", name,
              " weight must be a contiguous 2-d CPU tensor");
  Linear L;
  L.w = w.data_ptr();
  L.m = w.size(0);
  L.k = w.size(1);
  L.isa = isa;
  L.hints = weight_hints();
  if (w.scalar_type() == at::kFloat) {
    L.kind = kF32;
  } else if (w.scalar_type() == at::kBFloat16) {
    L.kind = kBF16;
  } else if (w.scalar_type() == at::kChar) {
    L.kind = kI8;
    TORCH_CHECK(scale.has_value() && scale->scalar_type() == at::kFloat && scale->numel() == L.m,
                "decode step: int8 ", name, " needs a float32 scale per output row");
    L.scale = scale->data_ptr<float>();
  } else {
    TORCH_CHECK(false, "decode step: ", name, " weight must be float32, bfloat16 or int8, got ",
                w.scalar_type());
  }
  TORCH_CHECK(!int8_activations || L.kind == kI8, "decode step: int8 activations need int8 weights, ", name,
              " has ", w.scalar_type());
  L.int8_activations = int8_activations;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == L.m, "decode step: ", name,
                " bias must be float32 (", L.m, ",)");
    L.bias = bias->data_ptr<float>();
  }
  return L;
}

// ---------------------------------------------------------------------------- dot products

// <w[row, c0 : c0 + k], x[0 : k]> (x already points at column c0 of its row).
inline float dot(const Linear& L, int64_t row, int64_t c0, int64_t k, const float* x) {
  return biomamba_decode::dot(L.isa, L.hints, L.kind,
                              static_cast<const char*>(L.w) + (row * L.k + c0) * elem_size(L.kind), x, k);
}

// out[i] = <w[row + i, c0 : c0 + k], x[0 : k]> for i < 4; `prefetch`: rows row + 4 .. row + 7 exist.
inline void dot4(const Linear& L, int64_t row, int64_t c0, int64_t k, const float* x, bool prefetch, float* out) {
  const int64_t E = elem_size(L.kind);
  biomamba_decode::dot4(L.isa, L.kind, static_cast<const char*>(L.w) + (row * L.k + c0) * E, L.k * E, x, k,
                        prefetch && L.hints, out);
}

// ---------------------------------------------------------------------------- threads

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// All threads of a team wait here until the last one arrives. A wait spins for up to kSpin (the other
// thread is usually microseconds away), then yields for up to kYield, then sleeps in short naps: when
// another process holds the core a partner needs, spinning on would only keep it from running.
// It also adds up the waits that outlasted the spin (`long_waits`): a partner that far behind has
// usually been put aside by the scheduler (run_team reads it).
class SpinBarrier {
 public:
  explicit SpinBarrier(int size) : size_(size) {}

  void wait() {
    const int phase = phase_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size_) {
      arrived_.store(0, std::memory_order_relaxed);
      phase_.store(phase + 1, std::memory_order_release);  // publishes the reset too
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    for (int64_t tries = 0; phase_.load(std::memory_order_acquire) == phase; ++tries) {
      if (tries % 64 != 63) {
        cpu_relax();
        continue;
      }
      const auto waited = std::chrono::steady_clock::now() - start;
      if (waited < kSpin) continue;
      if (waited < kYield) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    // Timed at the end: a waiter the scheduler put aside mid-spin has waited longer than it last looked.
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited >= kSpin) long_waits_ns_.fetch_add(std::chrono::nanoseconds(waited).count(), std::memory_order_relaxed);
  }

  // The time this call's threads spent in waits longer than the spin, summed over the threads.
  std::chrono::nanoseconds long_waits() const { return std::chrono::nanoseconds(long_waits_ns_.load()); }

 private:
  static constexpr std::chrono::microseconds kSpin{100}, kYield{2000};
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> phase_{0};
  std::atomic<int64_t> long_waits_ns_{0};
  const int size_;
};

// [begin, end)
struct Range {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

// One thread's place in the team running a token: its id, the team's size, the shared barrier.
struct Team {
  int id = 0, size = 1;
  SpinBarrier* barrier = nullptr;

  void sync() const {
    if (size > 1) barrier->wait();
  }
  // This thread's share of n items, cut at multiples of `align` (vector-width column ranges).
  Range share(int64_t n, int64_t align = 1) const {
    const int64_t blocks = (n + align - 1) / align;
    return {std::min(n, blocks * id / size * align), std::min(n, blocks * (id + 1) / size * align)};
  }
};

// A shared machine. When another process holds one of our cores, a team waits at every barrier for a
// partner the scheduler has put aside: 130m Mamba-2 with one `python -c "while True: pass"` beside it on a
// 2-vCPU Zen 4 decoded at 31.3 tok/s in int8 (121 quiet) and 19.8 in fp32 (45.6), while one thread alone
// made 83.1 and 40.1 there. So kContendedCalls calls in a row whose threads spent over a fifth of their time
// in long waits (SpinBarrier) send the next calls to one thread, kSoloCalls of them, and then the team is
// tried again; each try that finds the machine still contended doubles the stretch (up to kMaxSoloCalls),
// because a contended team call costs many solo ones, and a quiet one sets it back. In a row: a VM's
// quiet 2 vCPUs also stall a call now and then (a Zen 4 EPYC, 2026-12-06: 130m Mamba-2 int8-dynamic steps
// of 5.9 ms median, 15 ms at the 99th percentile, 69 ms at most): single such calls sent 2-5 stretches of
// 32 calls per 512 to one thread, about 100 ms each at a third slower; two in a row sent none in 1,024
// calls, while a busy neighbour stalls every call. The results differ between team sizes only in float rounding
// (sums over a thread's share), as between --threads settings.
constexpr int kContendedCalls = 2, kSoloCalls = 32, kMaxSoloCalls = 1024;
std::atomic<int> contended_calls{0};  // in a row
std::atomic<int> solo_calls_left{0};
std::atomic<int> solo_stretch{kSoloCalls};

// Runs f(team) on `threads` threads (torch's intra-op count) in one parallel region, or on this thread alone
// while the machine looked contended (above). Where OpenMP gives fewer threads than asked (nested inside
// another region, a thread limit), thread 0 runs it alone: a barrier waiting for threads that never come
// would hang.
template <typename F>
void run_team(int threads, const F& f) {
  if (threads <= 1 || omp_in_parallel()) {
    f(Team{});
    return;
  }
  if (solo_calls_left.load(std::memory_order_relaxed) > 0) {
    solo_calls_left.fetch_sub(1, std::memory_order_relaxed);
    f(Team{});
    return;
  }
  SpinBarrier barrier(threads);
  const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
  {
    if (omp_get_num_threads() == threads) {
      f(Team{omp_get_thread_num(), threads, &barrier});
    } else if (omp_get_thread_num() == 0) {
      f(Team{});
    }
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  if (barrier.long_waits() * 5 > elapsed * threads) {
    if (contended_calls.fetch_add(1, std::memory_order_relaxed) + 1 < kContendedCalls) return;
    contended_calls.store(0, std::memory_order_relaxed);
    const int stretch = solo_stretch.load(std::memory_order_relaxed);
    solo_calls_left.store(stretch, std::memory_order_relaxed);
    solo_stretch.store(std::min(2 * stretch, kMaxSoloCalls), std::memory_order_relaxed);
  } else {
    contended_calls.store(0, std::memory_order_relaxed);
    solo_stretch.store(kSoloCalls, std::memory_order_relaxed);
  }
}

// ---------------------------------------------------------------------------- gemv

void gemv_rows_int8_activations(const Linear& L, const float* x, int64_t ldx, int64_t b, Range rows, float* out,
                                int64_t ldo);

// out[j * ldo + r] = scale[r] * <w[r], x_j> + bias[r] for the rows r in `rows` and the b rows x_j = x + j * ldx.
// Each weight row is read from memory once for all b rows of x. At batch 1 the rows are read one after
// another, front to back: a thread's rows are then one sequential stream, which the hardware prefetchers
// follow best (the 3072x768 in_proj went from 23 to 34 GB/s on an AMD EPYC, against dot4's four streams).
void gemv_rows(const Linear& L, const float* x, int64_t ldx, int64_t b, Range rows, float* out, int64_t ldo) {
  if (L.int8_activations) return gemv_rows_int8_activations(L, x, ldx, b, rows, out, ldo);
  if (b == 1 && L.kind == kBF16 && has_bf16_pairs(L.isa)) {
    thread_local std::vector<float> pairs;  // x's even elements, then its odd ones (dot_bf16_pairs)
    pairs.resize(L.k + 1);
    for (int64_t i = 0; i < L.k; ++i) pairs[i % 2 ? (L.k + 1) / 2 + i / 2 : i / 2] = x[i];
    const uint16_t* w = static_cast<const uint16_t*>(L.w);
    for (int64_t r = rows.begin; r < rows.end; ++r)
      out[r] = dot_bf16_pairs(L.isa, L.hints, w + r * L.k, x, pairs.data(), L.k) + (L.bias ? L.bias[r] : 0.f);
    return;
  }
  if (b == 1) {
    for (int64_t r = rows.begin; r < rows.end; ++r)
      out[r] = dot(L, r, 0, L.k, x) * (L.scale ? L.scale[r] : 1.f) + (L.bias ? L.bias[r] : 0.f);
    return;
  }
  tile_product(L.isa, L.kind, L.w, L.m, L.k, L.scale, L.bias, x, ldx, b, rows.begin, rows.end, out, ldo);
}

// gemv_rows for int8-dynamic: each row of x rounded to int8 (Int8Activations, per thread: every thread reads
// all of x); at batch 1 with AVX2 or AVX-512 (VNNI) the dot products run in integers, elsewhere on the rounded
// values as floats.
void gemv_rows_int8_activations(const Linear& L, const float* x, int64_t ldx, int64_t b, Range rows, float* out,
                                int64_t ldo) {
  thread_local Int8Activations rounded;
  if (b == 1 && has_int8_dot(L.isa)) {
    rounded.round(x, L.k);
    const int8_t* w = static_cast<const int8_t*>(L.w);
    for (int64_t r = rows.begin; r < rows.end; ++r)
      out[r] = dot_int8_activations(L.isa, w + r * L.k, rounded) * L.scale[r] + (L.bias ? L.bias[r] : 0.f);
    return;
  }
  thread_local std::vector<float> values;
  values.resize(b * L.k);
  for (int64_t j = 0; j < b; ++j) {
    rounded.round(x + j * ldx, L.k);
    rounded.values(values.data() + j * L.k);
  }
  Linear plain = L;
  plain.int8_activations = false;
  gemv_rows(plain, values.data(), L.k, b, rows, out, ldo);
}

// out[j * L.m + r] = scale[r] * <w[r, cols], x_j[cols]> for every row r: this thread's part of the
// product over its own input columns (no bias; the caller adds it once when it sums the parts).
void gemv_columns(const Linear& L, const float* x, int64_t ldx, int64_t b, Range cols, float* out) {
  float sums[4];
  int64_t r = 0;
  for (; r + 4 <= L.m; r += 4) {
    for (int64_t j = 0; j < b; ++j) {
      dot4(L, r, cols.begin, cols.size(), x + j * ldx + cols.begin, j == 0 && r + 8 <= L.m, sums);
      for (int i = 0; i < 4; ++i) out[j * L.m + r + i] = sums[i] * (L.scale ? L.scale[r + i] : 1.f);
    }
  }
  for (; r < L.m; ++r) {
    const float scale = L.scale ? L.scale[r] : 1.f;
    for (int64_t j = 0; j < b; ++j)
      out[j * L.m + r] = dot(L, r, cols.begin, cols.size(), x + j * ldx + cols.begin) * scale;
  }
}

// out[i] = the sum of every thread's part i, in thread order: each thread sums alone and gets the same
// floats, so every thread's copy agrees.
void sum_parts(const float* parts, int threads, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    float sum = 0.f;
    for (int t = 0; t < threads; ++t) sum += parts[t * count + i];
    out[i] = sum;
  }
}

// h += out_proj(y) + bias on this thread's residual copy h: each thread computes its share of out's rows
// from the whole y (y: b x d_inner, every thread's channels), then adds all of out. Two barriers, but whole
// weight rows read front to back: splitting out_proj over its input columns instead (one barrier, each
// thread reading half of every row) read at 18-22 GB/s against 30+ here.
void out_projection(const Team& team, const Linear& out_proj, const float* y, int64_t b, int64_t d_model,
                    float* out, float* h) {
  team.sync();  // every channel's y is in
  gemv_rows(out_proj, y, out_proj.k, b, team.share(d_model), out, d_model);
  team.sync();  // every row of out is in
  for (int64_t i = 0; i < b * d_model; ++i) h[i] += out[i];
}

// ---------------------------------------------------------------------------- elementwise parts

void rms_norm(const float* x, const float* weight, double eps, int64_t b, int64_t d, float* out) {
  for (int64_t j = 0; j < b; ++j) {
    const float* row = x + j * d;
    double squares = 0;
    for (int64_t i = 0; i < d; ++i) squares += static_cast<double>(row[i]) * row[i];
    const float inv = 1.f / std::sqrt(static_cast<float>(squares / d) + static_cast<float>(eps));
    for (int64_t i = 0; i < d; ++i) out[j * d + i] = weight[i] * (row[i] * inv);
  }
}

inline float softplus(float v) { return v > 20.f ? v : std::log1p(std::exp(v)); }  // torch's threshold

// The causal conv step on the channels c in `channels` of one row: shift the window (w taps) left,
// append x[c], out[c] = silu(<window, weight> + bias).
void conv_step(int isa, float* state, const float* weight, const float* bias, const float* x, float* out,
               Range channels, int64_t w) {
  for (int64_t c = channels.begin; c < channels.end; ++c) {
    float* window = state + c * w;
    float sum = bias ? bias[c] : 0.f;
    for (int64_t t = 0; t + 1 < w; ++t) {
      window[t] = window[t + 1];
      sum += window[t] * weight[c * w + t];
    }
    window[w - 1] = x[c];
    sum += x[c] * weight[c * w + w - 1];
    out[c] = sum;
  }
  silu_channels(isa, out + channels.begin, nullptr, out + channels.begin, channels.end - channels.begin);
}

void check_state(const Tensor& t, const char* name, int64_t b, int64_t rows) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.size(0) == b && t.numel() == b * rows,
              "decode step: ", name, " must be a contiguous float32 state of batch ", b, " and ", rows,
              " values a row");
}

const Tensor& required(const std::vector<optional<Tensor>>& layer, size_t i, const char* name) {
  TORCH_CHECK(i < layer.size() && layer[i].has_value(), "decode step: a layer's ", name, " is missing");
  return *layer[i];
}

const float* f32(const Tensor& t, int64_t numel, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == numel, "decode step: ", name,
              " must be contiguous float32 with ", numel, " values, got ", t.sizes());
  return t.data_ptr<float>();
}

const float* optional_f32(const optional<Tensor>& t, int64_t numel, const char* name) {
  return t.has_value() ? f32(*t, numel, name) : nullptr;
}

// Per-thread scratch, one slice per thread: `count` floats each.
struct PerThread {
  std::vector<float> data;
  int64_t count;
  PerThread(int threads, int64_t count) : data(static_cast<size_t>(threads * count)), count(count) {}
  float* of(int id) { return data.data() + id * count; }
};

// The final RMSNorm and the vocabulary gemv over this thread's share of the rows.
struct Head {
  const float* norm;
  double eps;
  Linear w;
};

Head make_head(const Tensor& norm, double eps, const Tensor& w, const optional<Tensor>& scale, int64_t d_model,
               int isa, bool int8_activations) {
  Head head{f32(norm, d_model, "norm_f weight"), eps, make_linear(w, scale, {}, "lm_head", isa, int8_activations)};
  TORCH_CHECK(head.w.k == d_model, "decode step: lm_head takes ", head.w.k, " inputs, hidden has ", d_model);
  return head;
}

// Logits of the last of every `steps` rows of h (each sequence's last token): a prompt needs no others.
void head_step(const Team& team, const Head& head, const float* h, float* u, int64_t b, int64_t steps,
               int64_t d_model, float* logits) {
  for (int64_t j = 0; j < b; ++j)
    rms_norm(h + ((j + 1) * steps - 1) * d_model, head.norm, head.eps, 1, d_model, u + j * d_model);
  gemv_rows(head.w, u, d_model, b, team.share(head.w.m), logits, head.w.m);
}

// The number of sequences in hidden (b * steps, d_model): `steps` tokens of each, one after another.
int64_t sequences(const Tensor& hidden, int64_t steps) {
  TORCH_CHECK(hidden.scalar_type() == at::kFloat && hidden.is_contiguous() && hidden.dim() == 2,
              "decode step: hidden must be contiguous float32 (b * steps, d_model)");
  TORCH_CHECK(steps >= 1 && hidden.size(0) % steps == 0, "decode step: hidden's ", hidden.size(0),
              " rows are not a whole number of sequences of ", steps, " tokens");
  return hidden.size(0) / steps;
}

// Logits (b, vocab) after `steps` tokens of each of b sequences: every block (block(team, layer, h)), then
// the LM head on each sequence's last token, in one parallel region. Each thread starts from its own copy
// h of hidden (b * steps, d_model), the embedded tokens; thread 0 writes the last residual back. work.h
// and work.u hold one such copy per thread.
template <typename Layer, typename Work, typename Block>
Tensor run_tokens(int threads, Tensor hidden, int64_t steps, const std::vector<Layer>& blocks, const Head& head,
                  Work& work, const Block& block) {
  const int64_t rows = hidden.size(0), b = rows / steps, d_model = hidden.size(1);
  Tensor logits = at::empty({b, head.w.m}, hidden.options());
  float* h_out = hidden.data_ptr<float>();
  run_team(threads, [&](const Team& team) {
    float* h = work.h.of(team.id);
    std::memcpy(h, h_out, rows * d_model * sizeof(float));
    for (const auto& L : blocks) block(team, L, h);
    head_step(team, head, h, work.u.of(team.id), b, steps, d_model, logits.data_ptr<float>());
    if (team.id == 0) std::memcpy(h_out, h, rows * d_model * sizeof(float));
  });
  return logits;
}

// ---------------------------------------------------------------------------- Mamba-1 blocks

// A layer's tensors, in biomamba/decode.py's order (_mamba1_fields).
struct Mamba1Layer {
  const float *norm, *conv_w, *conv_b, *dt_bias, *A, *D;
  float *conv_state, *ssm_state;
  Linear in, x, dt, out;
  int64_t d_inner, n, rank, w;
  int isa;  // the instruction set of its state step (isa.h)
};

// int8_activations: in_proj's and out_proj's inputs rounded to int8 (int8-dynamic); x_proj and dt_proj, a few
// per cent of the weights, keep float32 inputs.
Mamba1Layer mamba1_layer(const std::vector<optional<Tensor>>& t, int64_t b, int64_t d_model, int isa,
                         bool int8_activations) {
  Mamba1Layer L;
  L.in = make_linear(required(t, 1, "in_proj"), t[2], t[3], "in_proj", isa, int8_activations);
  L.x = make_linear(required(t, 7, "x_proj"), t[8], {}, "x_proj", isa);
  L.dt = make_linear(required(t, 9, "dt_proj"), t[10], {}, "dt_proj", isa);
  L.out = make_linear(required(t, 15, "out_proj"), t[16], t[17], "out_proj", isa, int8_activations);
  L.isa = isa;
  const Tensor &A = required(t, 12, "A"), &conv = required(t, 4, "conv weight");
  L.d_inner = L.out.k, L.n = A.size(-1), L.rank = L.dt.k, L.w = conv.size(-1);
  TORCH_CHECK(L.in.k == d_model && L.in.m == 2 * L.d_inner && L.x.m == L.rank + 2 * L.n && L.x.k == L.d_inner &&
                  L.dt.m == L.d_inner && L.out.m == d_model,
              "decode step (Mamba-1): weight shapes do not fit one block");
  L.norm = f32(required(t, 0, "norm weight"), d_model, "norm weight");
  L.conv_w = f32(conv, L.d_inner * L.w, "conv weight");
  L.conv_b = optional_f32(t[5], L.d_inner, "conv bias");
  L.dt_bias = f32(required(t, 11, "dt bias"), L.d_inner, "dt bias");
  L.A = f32(A, L.d_inner * L.n, "A");
  L.D = f32(required(t, 13, "D"), L.d_inner, "D");
  check_state(required(t, 6, "conv_state"), "conv_state", b, L.d_inner * L.w);
  check_state(required(t, 14, "ssm_state"), "ssm_state", b, L.d_inner * L.n);
  L.conv_state = t[6]->data_ptr<float>();
  L.ssm_state = t[14]->data_ptr<float>();
  return L;
}

// Buffers shared by the team (each thread writes its own channels' or rows' entries, or its own slice of parts).
struct Mamba1Work {
  std::vector<float> xz, xc, dt, y, out;
  PerThread x_parts, h, u, dbc;
  Mamba1Work(int threads, int64_t b, int64_t d_model, int64_t d_inner, int64_t x_m)
      : xz(b * 2 * d_inner), xc(b * d_inner), dt(b * d_inner), y(b * d_inner), out(b * d_model),
        x_parts(threads, b * x_m), h(threads, b * d_model), u(threads, b * d_model), dbc(threads, b * x_m) {}
};

// One block on this thread's channels; h (this thread's copy of the residual, b rows: `steps` tokens of
// each sequence in turn) becomes h + mixer(norm(h)). Row j advances the states of sequence j / steps, in
// row order; the projections read each weight once for all rows.
void mamba1_block(const Team& team, const Mamba1Layer& L, Mamba1Work& work, float* h, int64_t b, int64_t steps,
                  int64_t d_model, double eps) {
  const int64_t di = L.d_inner, n = L.n, x_m = L.x.m;
  const Range own = team.share(di, 16);
  float *u = work.u.of(team.id), *dbc = work.dbc.of(team.id), *xz = work.xz.data(), *xc = work.xc.data();
  rms_norm(h, L.norm, eps, b, d_model, u);
  gemv_rows(L.in, u, d_model, b, own, xz, 2 * di);                              // x of own channels
  gemv_rows(L.in, u, d_model, b, {di + own.begin, di + own.end}, xz, 2 * di);  // z of own channels
  for (int64_t j = 0; j < b; ++j)
    conv_step(L.isa, L.conv_state + j / steps * di * L.w, L.conv_w, L.conv_b, xz + j * 2 * di, xc + j * di, own,
              L.w);
  gemv_columns(L.x, xc, di, b, own, work.x_parts.of(team.id));
  team.sync();  // every part of x_proj (dt_low, B, C) is in
  sum_parts(work.x_parts.of(0), team.size, b * x_m, dbc);
  gemv_rows(L.dt, dbc, x_m, b, own, work.dt.data(), di);
  for (int64_t j = 0; j < b; ++j) {
    const float *B = dbc + j * x_m + L.rank, *C = B + n;
    for (int64_t c = own.begin; c < own.end; ++c) {
      const float delta = softplus(work.dt[j * di + c] + L.dt_bias[c]), x = xc[j * di + c];
      float* state = L.ssm_state + (j / steps * di + c) * n;
      const float out = mamba1_state_step(L.isa, state, L.A + c * n, B, C, delta, x, n);
      work.y[j * di + c] = out + L.D[c] * x;
    }
    float* y = work.y.data() + j * di + own.begin;
    silu_channels(L.isa, xz + j * 2 * di + di + own.begin, y, y, own.end - own.begin);  // times silu(z)
  }
  out_projection(team, L.out, work.y.data(), b, d_model, work.out.data(), h);
}

// Logits (b, vocab) after `steps` decoding steps of each of b sequences through every Mamba-1 block, then
// the LM head; hidden (b * steps, d_model), the embedded tokens, becomes the last block's residual; the
// cache's states advance in place. steps > 1 is a prompt pass (prefill) from the states given. `threads`:
// the team's size (run_team), torch's intra-op count as the user set it (biomamba/decode.py passes it: inside
// generate it lowers torch's own count to one).
Tensor mamba1_tokens(Tensor hidden, int64_t steps, const Layers& layers, double eps,
                     Tensor norm_f, double eps_f, Tensor head_w, optional<Tensor> head_scale,
                     bool int8_activations, int64_t threads) {
  const int64_t b = sequences(hidden, steps), rows = hidden.size(0), d_model = hidden.size(1);
  TORCH_CHECK(threads >= 1, "decode step: threads must be at least 1, got ", threads);
  std::vector<Mamba1Layer> blocks;
  const int isa = biomamba_isa::isa_level();
  for (const auto& layer : layers) blocks.push_back(mamba1_layer(layer, b, d_model, isa, int8_activations));
  const Head head = make_head(norm_f, eps_f, head_w, head_scale, d_model, isa, int8_activations);
  const int64_t di = blocks.empty() ? 0 : blocks[0].d_inner, x_m = blocks.empty() ? 0 : blocks[0].x.m;
  for (const auto& L : blocks)
    TORCH_CHECK(L.d_inner == di && L.x.m == x_m, "decode step (Mamba-1): every layer must have one shape");
  Mamba1Work work(threads, rows, d_model, di, x_m);
  return run_tokens(threads, hidden, steps, blocks, head, work, [&](const Team& team, const Mamba1Layer& L, float* h) {
    mamba1_block(team, L, work, h, rows, steps, d_model, eps);
  });
}

// ---------------------------------------------------------------------------- Mamba-2 blocks

struct Mamba2Settings {
  double eps, dt_min, dt_max, gate_eps;
  bool clamp_dt, norm_before_gate;
  int64_t ngroups;
};

// A layer's tensors, in biomamba/decode.py's order (_mamba2_fields). A_log itself, not -exp(A_log) as for Mamba-1:
// one exp per head a token here, and nothing for Python to check each call (StepArguments.hold).
struct Mamba2Layer {
  const float *norm, *conv_w, *conv_b, *dt_bias, *A_log, *D, *gate_w;
  float *conv_state, *ssm_state;
  Linear in, out;
  int64_t d_inner, heads, p, conv_dim, w, n;
  bool skip_per_channel;
  int isa;  // the instruction set of its state step (isa.h)
};

Mamba2Layer mamba2_layer(const std::vector<optional<Tensor>>& t, int64_t b, int64_t d_model, int64_t ngroups,
                         int isa, bool int8_activations) {
  Mamba2Layer L;
  L.in = make_linear(required(t, 1, "in_proj"), t[2], t[3], "in_proj", isa, int8_activations);
  L.out = make_linear(required(t, 12, "out_proj"), t[13], t[14], "out_proj", isa, int8_activations);
  L.isa = isa;
  const Tensor &A_log = required(t, 8, "A_log"), &conv = required(t, 4, "conv weight"), &D = required(t, 9, "D");
  L.d_inner = L.out.k, L.heads = A_log.numel(), L.conv_dim = conv.size(0), L.w = conv.size(-1);
  TORCH_CHECK(L.heads > 0 && ngroups > 0 && L.d_inner % L.heads == 0 && L.heads % ngroups == 0 &&
                  (L.conv_dim - L.d_inner) % (2 * ngroups) == 0,
              "decode step (Mamba-2): heads, groups and channels do not fit one block");
  L.p = L.d_inner / L.heads, L.n = (L.conv_dim - L.d_inner) / (2 * ngroups);
  TORCH_CHECK(L.in.k == d_model && L.in.m == L.d_inner + L.conv_dim + L.heads && L.out.m == d_model,
              "decode step (Mamba-2): weight shapes do not fit one block");
  L.norm = f32(required(t, 0, "norm weight"), d_model, "norm weight");
  L.conv_w = f32(conv, L.conv_dim * L.w, "conv weight");
  L.conv_b = optional_f32(t[5], L.conv_dim, "conv bias");
  L.dt_bias = f32(required(t, 7, "dt bias"), L.heads, "dt bias");
  L.A_log = f32(A_log, L.heads, "A_log");
  L.skip_per_channel = D.numel() == L.d_inner;
  L.D = f32(D, L.skip_per_channel ? L.d_inner : L.heads, "D");
  L.gate_w = optional_f32(t[11], L.d_inner, "gate norm weight");
  check_state(required(t, 6, "conv_state"), "conv_state", b, L.conv_dim * L.w);
  check_state(required(t, 10, "ssm_state"), "ssm_state", b, L.heads * L.p * L.n);
  L.conv_state = t[6]->data_ptr<float>();
  L.ssm_state = t[10]->data_ptr<float>();
  return L;
}

struct Mamba2Work {
  std::vector<float> proj, xbc, y, out;
  PerThread squares, h, u;
  Mamba2Work(int threads, int64_t b, int64_t d_model, const Mamba2Layer& L, int64_t ngroups)
      : proj(b * L.in.m), xbc(b * L.conv_dim), y(b * L.d_inner), out(b * d_model), squares(threads, b * ngroups),
        h(threads, b * d_model), u(threads, b * d_model) {}
};

// The SSM state step of one head: every channel of it, state (p, n).
void ssd_head(const Mamba2Layer& L, const Mamba2Settings& S, int64_t seq, int64_t hd, const float* xbc,
              const float* dt_raw, float* y) {
  float delta = softplus(dt_raw[hd] + L.dt_bias[hd]);
  if (S.clamp_dt) delta = std::min(std::max(delta, static_cast<float>(S.dt_min)), static_cast<float>(S.dt_max));
  const float decay = std::exp(delta * -std::exp(L.A_log[hd]));
  const int64_t g = hd / (L.heads / S.ngroups), n = L.n;
  const float* B = xbc + L.d_inner + g * n;
  const float* C = xbc + L.d_inner + S.ngroups * n + g * n;
  for (int64_t q = 0; q < L.p; ++q) {
    const int64_t c = hd * L.p + q;
    const float x = xbc[c];
    float* s = L.ssm_state + ((seq * L.heads + hd) * L.p + q) * n;
    const float out = ssd_channel(L.isa, s, B, C, decay, delta * x, n);
    y[c] = out + (L.skip_per_channel ? L.D[c] : L.D[hd]) * x;
  }
}

// mamba_ssm's RMSNormGated over groups of d_inner / ngroups channels (or y * silu(z)) on this thread's
// channels; the groups' sums of squares are summed over the team (one barrier).
void gate(const Team& team, const Mamba2Layer& L, const Mamba2Settings& S, Mamba2Work& work, int64_t b,
          Range own) {
  const int64_t di = L.d_inner, group = di / S.ngroups;
  auto times_silu_z = [&]() {
    for (int64_t j = 0; j < b; ++j) {
      float* y = work.y.data() + j * di + own.begin;
      silu_channels(L.isa, work.proj.data() + j * L.in.m + own.begin, y, y, own.end - own.begin);
    }
  };
  if (L.gate_w == nullptr) return times_silu_z();
  if (!S.norm_before_gate) times_silu_z();
  // f(g, from, to) for the channels [from, to) of this thread's share in each group g it reaches. Channel by
  // channel (an integer division, the team's sums, a square root and a division each, and the sums of squares
  // added through memory), with the memory idle between two barriers, 130m Mamba-2 bf16-weights generated
  // 1.117-1.124x slower (AVX-512 build; the AVX2 build the same either way; a 2-vCPU Zen 4, 2026-12-07).
  auto by_group = [&](auto&& f) {
    for (int64_t c = own.begin; c < own.end;) {
      const int64_t g = c / group, to = std::min(own.end, (g + 1) * group);
      f(g, c, to);
      c = to;
    }
  };
  float* mine = work.squares.of(team.id);
  std::fill(mine, mine + b * S.ngroups, 0.f);
  for (int64_t j = 0; j < b; ++j) {
    const float* y = work.y.data() + j * di;
    by_group([&](int64_t g, int64_t from, int64_t to) {
      mine[j * S.ngroups + g] = dot(L.isa, false, kF32, y + from, y + from, to - from);
    });
  }
  team.sync();  // every thread's sums of squares are in
  for (int64_t j = 0; j < b; ++j) {
    float* y = work.y.data() + j * di;
    by_group([&](int64_t g, int64_t from, int64_t to) {
      float squares = 0.f;
      for (int t = 0; t < team.size; ++t) squares += work.squares.of(t)[j * S.ngroups + g];
      const float inv = 1.f / std::sqrt(squares / group + static_cast<float>(S.gate_eps));
      for (int64_t c = from; c < to; ++c) y[c] = y[c] * inv * L.gate_w[c];
    });
  }
  if (S.norm_before_gate) times_silu_z();
}

// One block on this thread's heads (mamba1_block says how rows and steps go).
void mamba2_block(const Team& team, const Mamba2Layer& L, const Mamba2Settings& S, Mamba2Work& work, float* h,
                  int64_t b, int64_t steps, int64_t d_model) {
  const int64_t di = L.d_inner, m = L.in.m, bc = L.conv_dim - di;
  const Range heads = team.share(L.heads), own{heads.begin * L.p, heads.end * L.p}, mine_bc = team.share(bc);
  float *u = work.u.of(team.id), *proj = work.proj.data(), *xbc = work.xbc.data();
  rms_norm(h, L.norm, S.eps, b, d_model, u);
  // in_proj (z, x, B, C, dt) over one contiguous share of its rows a thread: one stream of weights, where
  // this thread's own z, x and dt rows and a share of B, C made four. 130m Mamba-2 bf16-weights decoded at
  // 81.9 against 72.3 tok/s (a Zen 4 EPYC, 2 vCPUs, medians of 12 interleaved runs, 2026-12-06; int8-dynamic
  // and fp32 within the noise, Mamba-1's two streams no better as one). Its cost: a barrier before the conv.
  gemv_rows(L.in, u, d_model, b, team.share(m, 16), proj, m);
  team.sync();  // every row of in_proj is in
  for (int64_t j = 0; j < b; ++j) {
    float* state = L.conv_state + j / steps * L.conv_dim * L.w;
    const float* x = proj + j * m + di;  // xBC: x, then B and C
    conv_step(L.isa, state, L.conv_w, L.conv_b, x, xbc + j * L.conv_dim, own, L.w);
    conv_step(L.isa, state, L.conv_w, L.conv_b, x, xbc + j * L.conv_dim, {di + mine_bc.begin, di + mine_bc.end}, L.w);
  }
  team.sync();  // every B and C is in
  for (int64_t j = 0; j < b; ++j)
    for (int64_t hd = heads.begin; hd < heads.end; ++hd)
      ssd_head(L, S, j / steps, hd, xbc + j * L.conv_dim, proj + j * m + di + L.conv_dim, work.y.data() + j * di);
  gate(team, L, S, work, b, own);
  out_projection(team, L.out, work.y.data(), b, d_model, work.out.data(), h);
}

// mamba1_tokens for Mamba-2 blocks.
Tensor mamba2_tokens(Tensor hidden, int64_t steps, const Layers& layers, double eps,
                     double dt_min, double dt_max, bool clamp_dt, int64_t ngroups, double gate_eps,
                     bool norm_before_gate, Tensor norm_f, double eps_f, Tensor head_w, optional<Tensor> head_scale,
                     bool int8_activations, int64_t threads) {
  const int64_t b = sequences(hidden, steps), rows = hidden.size(0), d_model = hidden.size(1);
  TORCH_CHECK(threads >= 1, "decode step: threads must be at least 1, got ", threads);
  const Mamba2Settings settings{eps, dt_min, dt_max, gate_eps, clamp_dt, norm_before_gate, ngroups};
  std::vector<Mamba2Layer> blocks;
  const int isa = biomamba_isa::isa_level();
  for (const auto& layer : layers)
    blocks.push_back(mamba2_layer(layer, b, d_model, ngroups, isa, int8_activations));
  TORCH_CHECK(!blocks.empty(), "decode step (Mamba-2): no layers");
  for (const auto& L : blocks)
    TORCH_CHECK(L.in.m == blocks[0].in.m && L.d_inner == blocks[0].d_inner && L.conv_dim == blocks[0].conv_dim,
                "decode step (Mamba-2): every layer must have one shape");
  const Head head = make_head(norm_f, eps_f, head_w, head_scale, d_model, isa, int8_activations);
  Mamba2Work work(threads, rows, d_model, blocks[0], ngroups);
  return run_tokens(threads, hidden, steps, blocks, head, work, [&](const Team& team, const Mamba2Layer& L, float* h) {
    mamba2_block(team, L, settings, work, h, rows, steps, d_model);
  });
}

// ---------------------------------------------------------------------------- the gemv alone

// out (b, m) = x (b, k) @ w^T (* scale) (+ bias), for tests and the profile; int8_activations: x rounded to
// int8 in blocks first (int8-dynamic).
Tensor linear(Tensor x, Tensor w, optional<Tensor> scale, optional<Tensor> bias, bool int8_activations) {
  const Linear L = make_linear(w, scale, bias, "linear", biomamba_isa::isa_level(), int8_activations);
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 2 && x.size(1) == L.k,
              "decode linear: x must be contiguous float32 (b, ", L.k, ")");
  Tensor out = at::empty({x.size(0), L.m}, x.options());
  run_team(at::get_num_threads(), [&](const Team& team) {
    gemv_rows(L, x.data_ptr<float>(), L.k, x.size(0), team.share(L.m), out.data_ptr<float>(), L.m);
  });
  return out;
}

// A model's and a cache's arguments to mamba1_tokens / mamba2_tokens but the tokens, converted from Python
// once (biomamba/decode.py's StepArguments keeps it between a cache's steps): the conversion of some 360
// tensors took 74 us of every 130m Mamba-2 token inside generate (2-vCPU Zen 4, 2026-12-07, median of 252
// calls). It holds the tensors themselves, so a weight's data replaced in place still reaches the step
// (each call reads the pointers anew).
struct Plan {
  std::function<Tensor(Tensor, int64_t, int64_t)> run;  // (hidden, steps, threads) -> logits
};

}  // namespace
}  // namespace biomamba_decode

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace biomamba_decode;
  pybind11::class_<Plan>(m, "Plan", "a model's and a cache's arguments to the step, but the tokens")
      .def("__call__", [](const Plan& plan, Tensor hidden, int64_t steps, int64_t threads) -> Tensor {
        return plan.run(hidden, steps, threads);
      }, "logits (b, vocab) after `steps` tokens of each sequence (hidden: their embeddings), on `threads` threads");
  m.def("mamba1_plan", [](Layers layers, double eps, Tensor norm_f, double eps_f, Tensor head_w,
                          optional<Tensor> head_scale, bool int8_activations) -> Plan {
    return Plan{[=](Tensor hidden, int64_t steps, int64_t threads) {
      return mamba1_tokens(hidden, steps, layers, eps, norm_f, eps_f, head_w, head_scale, int8_activations, threads);
    }};
  }, "a Plan running decoding steps (or a prompt) through every Mamba-1 block and the LM head (mamba1_tokens)");
  m.def("mamba2_plan", [](Layers layers, double eps, double dt_min, double dt_max, bool clamp_dt, int64_t ngroups,
                          double gate_eps, bool norm_before_gate, Tensor norm_f, double eps_f, Tensor head_w,
                          optional<Tensor> head_scale, bool int8_activations) -> Plan {
    return Plan{[=](Tensor hidden, int64_t steps, int64_t threads) {
      return mamba2_tokens(hidden, steps, layers, eps, dt_min, dt_max, clamp_dt, ngroups, gate_eps, norm_before_gate,
                           norm_f, eps_f, head_w, head_scale, int8_activations, threads);
    }};
  }, "a Plan running decoding steps (or a prompt) through every Mamba-2 block and the LM head (mamba2_tokens)");
  m.def("linear", &linear, "x @ w^T for float32, bfloat16 or int8 (+ per-row scale) weights", pybind11::arg("x"),
        pybind11::arg("w"), pybind11::arg("scale"), pybind11::arg("bias"), pybind11::arg("int8_activations") = false);
  m.def("isa_level", &biomamba_isa::isa_level,
        "the instruction set the step uses: 0 baseline, 1 AVX2, 2 AVX-512, 3 AVX-512 VNNI");
  m.def("weight_hints", &weight_hints, "whether the AVX-512 batch-1 dot products ask for the weights ahead");
  m.def("solo_calls_left", [] { return solo_calls_left.load(); },
        "calls the step will still run on one thread because the last team waited on a descheduled partner");
  m.def("reset_solo_calls", [] {
    contended_calls.store(0);
    solo_calls_left.store(0);
    solo_stretch.store(kSoloCalls);
  }, "run the next call on the whole team again, as on a quiet machine");
}
