// One decoding step of a whole Mamba block, compiled: batch-1 (and small-batch) decoding is bound by
// reading the weights once per token, and torch's gemv plus some 40 small ops per layer reach about a
// third of that bound here (bench/decode_profile.py). This file holds
//   - gemv over a weight kept in float32, bfloat16 or int8 (one float32 scale per output row), with
//     AVX-512 loads chosen at run time (a portable loop elsewhere), rows split over at::parallel_for;
//   - mamba1_step / mamba2_step: RMSNorm, in_proj, the causal conv step with SiLU, the SSM state step,
//     gating and out_proj plus the residual, for one block, updating the cache's states in place;
//   - lm_head: the final RMSNorm and the vocabulary gemv.
// Activations and states stay float32 whatever the weights (weight-only quantization). Called only
// from biomamba/decode.py, which checks dtypes, shapes and contiguity first; the checks here guard
// that contract.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define BIOMAMBA_X86 1
#endif

namespace biomamba_decode {
namespace {

using at::Tensor;
using c10::optional;

enum Kind { kF32 = 0, kBF16 = 1, kI8 = 2 };

// A linear layer as the step reads it: out[r] = scale[r] * <w[r], x> + bias[r].
struct Linear {
  const void* w = nullptr;
  const float* scale = nullptr;  // int8 only
  const float* bias = nullptr;
  int64_t m = 0, k = 0;
  Kind kind = kF32;
};

Linear make_linear(const Tensor& w, const optional<Tensor>& scale, const optional<Tensor>& bias,
                   const char* name) {
  TORCH_CHECK(w.device().is_cpu() && w.dim() == 2 && w.is_contiguous(), "decode step: ", name,
              " weight must be a contiguous 2-d CPU tensor");
  Linear L;
  L.w = w.data_ptr();
  L.m = w.size(0);
  L.k = w.size(1);
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
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == L.m, "decode step: ", name,
                " bias must be float32 (", L.m, ",)");
    L.bias = bias->data_ptr<float>();
  }
  return L;
}

// ---------------------------------------------------------------------------- dot products

float bf16_to_float(uint16_t bits) {
  uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

float dot_portable(const Linear& L, int64_t row, const float* x) {
  const int64_t k = L.k;
  float sum = 0.f;
  if (L.kind == kF32) {
    const float* w = static_cast<const float*>(L.w) + row * k;
    for (int64_t i = 0; i < k; ++i) sum += w[i] * x[i];
  } else if (L.kind == kBF16) {
    const uint16_t* w = static_cast<const uint16_t*>(L.w) + row * k;
    for (int64_t i = 0; i < k; ++i) sum += bf16_to_float(w[i]) * x[i];
  } else {
    const int8_t* w = static_cast<const int8_t*>(L.w) + row * k;
    for (int64_t i = 0; i < k; ++i) sum += static_cast<float>(w[i]) * x[i];
  }
  return sum;
}

#ifdef BIOMAMBA_X86
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// 16 weights of a row as floats; `mask` selects the tail's lanes.
AVX512 inline __m512 load16(Kind kind, const void* w, int64_t i, __mmask16 mask) {
  if (kind == kF32) return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(w) + i);
  if (kind == kBF16) {
    __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(w) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  __m128i q = _mm_maskz_loadu_epi8(mask, static_cast<const int8_t*>(w) + i);
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
}

template <Kind K>
AVX512 float dot_avx512(const void* w, const float* x, int64_t k) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {  // two accumulators: the FMA latency stays hidden
    a0 = _mm512_fmadd_ps(load16(K, w, i, 0xFFFF), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(load16(K, w, i + 16, 0xFFFF), _mm512_loadu_ps(x + i + 16), a1);
  }
  for (; i < k; i += 16) {
    __mmask16 mask = k - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (k - i)) - 1);
    a0 = _mm512_fmadd_ps(load16(K, w, i, mask), _mm512_maskz_loadu_ps(mask, x + i), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

AVX512 float dot_fast(const Linear& L, int64_t row, const float* x) {
  if (L.kind == kF32) return dot_avx512<kF32>(static_cast<const float*>(L.w) + row * L.k, x, L.k);
  if (L.kind == kBF16) return dot_avx512<kBF16>(static_cast<const uint16_t*>(L.w) + row * L.k, x, L.k);
  return dot_avx512<kI8>(static_cast<const int8_t*>(L.w) + row * L.k, x, L.k);
}

const bool kHasAvx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl");
#endif

inline float dot(const Linear& L, int64_t row, const float* x) {
#ifdef BIOMAMBA_X86
  if (kHasAvx512) return dot_fast(L, row, x);
#endif
  return dot_portable(L, row, x);
}

// out (b, m) = x (b, k) @ L^T; each weight row is read from memory once for all b rows of x.
void gemv(const Linear& L, const float* x, int64_t b, float* out) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(L.k, 1));
  at::parallel_for(0, L.m, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float scale = L.scale ? L.scale[r] : 1.f;
      const float bias = L.bias ? L.bias[r] : 0.f;
      for (int64_t j = 0; j < b; ++j) out[j * L.m + r] = dot(L, r, x + j * L.k) * scale + bias;
    }
  });
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

inline float silu(float v) { return v / (1.f + std::exp(-v)); }
inline float softplus(float v) { return v > 20.f ? v : std::log1p(std::exp(v)); }  // torch's threshold

// The causal conv step on `channels` channels of row j: shift the window (w taps) left, append x,
// out = silu(<window, weight> + bias). x and out may alias.
void conv_step(float* state, const float* weight, const float* bias, const float* x, float* out,
               int64_t channels, int64_t w) {
  at::parallel_for(0, channels, 512, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      float* window = state + c * w;
      float sum = bias ? bias[c] : 0.f;
      for (int64_t t = 0; t + 1 < w; ++t) {
        window[t] = window[t + 1];
        sum += window[t] * weight[c * w + t];
      }
      window[w - 1] = x[c];
      sum += x[c] * weight[c * w + w - 1];
      out[c] = silu(sum);
    }
  });
}

void check_state(const Tensor& t, const char* name, int64_t b, int64_t rows) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.size(0) == b &&
                  t.numel() % (b * rows) == 0,
              "decode step: ", name, " must be a contiguous float32 state of batch ", b);
}

const float* optional_ptr(const optional<Tensor>& t) { return t.has_value() ? t->data_ptr<float>() : nullptr; }

// ---------------------------------------------------------------------------- Mamba-1 block

// hidden (b, d_model) float32, updated in place to hidden + mixer(norm(hidden)).
void mamba1_step(Tensor hidden, Tensor norm_weight, double eps, Tensor in_w, optional<Tensor> in_scale,
                 optional<Tensor> in_bias, Tensor conv_weight, optional<Tensor> conv_bias, Tensor conv_state,
                 Tensor x_w, optional<Tensor> x_scale, Tensor dt_w, optional<Tensor> dt_scale, Tensor dt_bias,
                 Tensor A, Tensor D, Tensor ssm_state, Tensor out_w, optional<Tensor> out_scale,
                 optional<Tensor> out_bias) {
  const int64_t b = hidden.size(0), d_model = hidden.size(1);
  const Linear in_proj = make_linear(in_w, in_scale, in_bias, "in_proj");
  const Linear x_proj = make_linear(x_w, x_scale, {}, "x_proj");
  const Linear dt_proj = make_linear(dt_w, dt_scale, {}, "dt_proj");
  const Linear out_proj = make_linear(out_w, out_scale, out_bias, "out_proj");
  const int64_t d_inner = out_proj.k, n = A.size(1), rank = dt_proj.k, w = conv_weight.size(1);
  TORCH_CHECK(in_proj.k == d_model && in_proj.m == 2 * d_inner && x_proj.m == rank + 2 * n &&
                  out_proj.m == d_model,
              "decode step (Mamba-1): weight shapes do not fit one block");
  check_state(conv_state, "conv_state", b, d_inner * w);
  check_state(ssm_state, "ssm_state", b, d_inner * n);
  float* h = hidden.data_ptr<float>();
  std::vector<float> u(b * d_model), xz(b * 2 * d_inner), xc(b * d_inner), dbc(b * x_proj.m),
      dt(b * d_inner), y(b * d_inner), mixed(b * d_model);
  rms_norm(h, norm_weight.data_ptr<float>(), eps, b, d_model, u.data());
  gemv(in_proj, u.data(), b, xz.data());
  for (int64_t j = 0; j < b; ++j)
    conv_step(conv_state.data_ptr<float>() + j * d_inner * w, conv_weight.data_ptr<float>(),
              optional_ptr(conv_bias), xz.data() + j * 2 * d_inner, xc.data() + j * d_inner, d_inner, w);
  gemv(x_proj, xc.data(), b, dbc.data());
  std::vector<float> dt_low(b * rank);
  for (int64_t j = 0; j < b; ++j)
    std::memcpy(dt_low.data() + j * rank, dbc.data() + j * x_proj.m, rank * sizeof(float));
  gemv(dt_proj, dt_low.data(), b, dt.data());
  const float *a = A.data_ptr<float>(), *skip = D.data_ptr<float>(), *bias = dt_bias.data_ptr<float>();
  float* state = ssm_state.data_ptr<float>();
  for (int64_t j = 0; j < b; ++j) {
    const float* B = dbc.data() + j * x_proj.m + rank;
    const float* C = B + n;
    at::parallel_for(0, d_inner, 256, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const float delta = softplus(dt[j * d_inner + c] + bias[c]), x = xc[j * d_inner + c];
        float* s = state + (j * d_inner + c) * n;
        float out = 0.f;
        for (int64_t i = 0; i < n; ++i) {
          s[i] = s[i] * std::exp(delta * a[c * n + i]) + delta * B[i] * x;
          out += s[i] * C[i];
        }
        y[j * d_inner + c] = (out + skip[c] * x) * silu(xz[j * 2 * d_inner + d_inner + c]);
      }
    });
  }
  gemv(out_proj, y.data(), b, mixed.data());
  for (int64_t i = 0; i < b * d_model; ++i) h[i] += mixed[i];
}

// ---------------------------------------------------------------------------- Mamba-2 block

// The gate before out_proj (mamba_ssm's RMSNormGated over groups of `group` channels, or y * silu(z)).
void gate(float* y, const float* z, const float* norm_weight, double eps, bool norm_before_gate,
          int64_t d_inner, int64_t group) {
  if (norm_weight == nullptr) {
    for (int64_t c = 0; c < d_inner; ++c) y[c] *= silu(z[c]);
    return;
  }
  if (!norm_before_gate)
    for (int64_t c = 0; c < d_inner; ++c) y[c] *= silu(z[c]);
  for (int64_t g0 = 0; g0 < d_inner; g0 += group) {
    double squares = 0;
    for (int64_t c = g0; c < g0 + group; ++c) squares += static_cast<double>(y[c]) * y[c];
    const float inv = 1.f / std::sqrt(static_cast<float>(squares / group) + static_cast<float>(eps));
    for (int64_t c = g0; c < g0 + group; ++c) y[c] = y[c] * inv * norm_weight[c];
  }
  if (norm_before_gate)
    for (int64_t c = 0; c < d_inner; ++c) y[c] *= silu(z[c]);
}

void mamba2_step(Tensor hidden, Tensor norm_weight, double eps, Tensor in_w, optional<Tensor> in_scale,
                 optional<Tensor> in_bias, Tensor conv_weight, optional<Tensor> conv_bias, Tensor conv_state,
                 Tensor dt_bias, Tensor A, Tensor D, double dt_min, double dt_max, bool clamp_dt,
                 Tensor ssm_state, int64_t ngroups, optional<Tensor> gate_weight, double gate_eps,
                 bool norm_before_gate, Tensor out_w, optional<Tensor> out_scale, optional<Tensor> out_bias) {
  const int64_t b = hidden.size(0), d_model = hidden.size(1);
  const Linear in_proj = make_linear(in_w, in_scale, in_bias, "in_proj");
  const Linear out_proj = make_linear(out_w, out_scale, out_bias, "out_proj");
  const int64_t d_inner = out_proj.k, heads = A.numel(), p = d_inner / heads, conv_dim = conv_weight.size(0),
                w = conv_weight.size(1), n = (conv_dim - d_inner) / (2 * ngroups);
  TORCH_CHECK(in_proj.k == d_model && in_proj.m == d_inner + conv_dim + heads && out_proj.m == d_model &&
                  d_inner % heads == 0 && heads % ngroups == 0,
              "decode step (Mamba-2): weight shapes do not fit one block");
  check_state(conv_state, "conv_state", b, conv_dim * w);
  check_state(ssm_state, "ssm_state", b, heads * p * n);
  const bool skip_per_channel = D.numel() == d_inner;
  float* h = hidden.data_ptr<float>();
  std::vector<float> u(b * d_model), proj(b * in_proj.m), xBC(b * conv_dim), y(b * d_inner), mixed(b * d_model);
  rms_norm(h, norm_weight.data_ptr<float>(), eps, b, d_model, u.data());
  gemv(in_proj, u.data(), b, proj.data());
  const float *a = A.data_ptr<float>(), *skip = D.data_ptr<float>(), *bias = dt_bias.data_ptr<float>();
  float* state = ssm_state.data_ptr<float>();
  for (int64_t j = 0; j < b; ++j) {
    const float* z = proj.data() + j * in_proj.m;  // z, then xBC, then dt
    float* xbc = xBC.data() + j * conv_dim;
    conv_step(conv_state.data_ptr<float>() + j * conv_dim * w, conv_weight.data_ptr<float>(),
              optional_ptr(conv_bias), z + d_inner, xbc, conv_dim, w);
    const float* dt_raw = z + d_inner + conv_dim;
    float* yj = y.data() + j * d_inner;
    at::parallel_for(0, heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t hd = begin; hd < end; ++hd) {
        float delta = softplus(dt_raw[hd] + bias[hd]);
        if (clamp_dt) delta = std::min(std::max(delta, static_cast<float>(dt_min)), static_cast<float>(dt_max));
        const float decay = std::exp(delta * a[hd]);
        const int64_t g = hd / (heads / ngroups);
        const float* B = xbc + d_inner + g * n;
        const float* C = xbc + d_inner + ngroups * n + g * n;
        for (int64_t q = 0; q < p; ++q) {
          const float x = xbc[hd * p + q];
          float* s = state + ((j * heads + hd) * p + q) * n;
          float out = 0.f;
          for (int64_t i = 0; i < n; ++i) {
            s[i] = decay * s[i] + delta * x * B[i];
            out += s[i] * C[i];
          }
          yj[hd * p + q] = out + (skip_per_channel ? skip[hd * p + q] : skip[hd]) * x;
        }
      }
    });
    gate(yj, z, gate_weight.has_value() ? gate_weight->data_ptr<float>() : nullptr, gate_eps, norm_before_gate,
         d_inner, d_inner / ngroups);
  }
  gemv(out_proj, y.data(), b, mixed.data());
  for (int64_t i = 0; i < b * d_model; ++i) h[i] += mixed[i];
}

// ---------------------------------------------------------------------------- LM head

// logits (b, vocab) = norm_f(hidden) @ weight^T.
Tensor lm_head(Tensor hidden, Tensor norm_weight, double eps, Tensor w, optional<Tensor> scale) {
  const int64_t b = hidden.size(0), d_model = hidden.size(1);
  const Linear head = make_linear(w, scale, {}, "lm_head");
  TORCH_CHECK(head.k == d_model, "decode step: lm_head takes ", head.k, " inputs, hidden has ", d_model);
  std::vector<float> u(b * d_model);
  rms_norm(hidden.data_ptr<float>(), norm_weight.data_ptr<float>(), eps, b, d_model, u.data());
  Tensor logits = at::empty({b, head.m}, hidden.options());
  gemv(head, u.data(), b, logits.data_ptr<float>());
  return logits;
}

// out (b, m) = x (b, k) @ w^T (* scale) (+ bias): the gemv alone, for tests and the profile.
Tensor linear(Tensor x, Tensor w, optional<Tensor> scale, optional<Tensor> bias) {
  const Linear L = make_linear(w, scale, bias, "linear");
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 2 && x.size(1) == L.k,
              "decode linear: x must be contiguous float32 (b, ", L.k, ")");
  Tensor out = at::empty({x.size(0), L.m}, x.options());
  gemv(L, x.data_ptr<float>(), x.size(0), out.data_ptr<float>());
  return out;
}

}  // namespace
}  // namespace biomamba_decode

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace biomamba_decode;
  m.def("mamba1_step", &mamba1_step, "one Mamba-1 block's decoding step, in place");
  m.def("mamba2_step", &mamba2_step, "one Mamba-2 block's decoding step, in place");
  m.def("lm_head", &lm_head, "final RMSNorm and the vocabulary gemv");
  m.def("linear", &linear, "x @ w^T for float32, bfloat16 or int8 (+ per-row scale) weights");
  m.def("has_avx512", []() {
#ifdef BIOMAMBA_X86
    return kHasAvx512;
#else
    return false;
#endif
  });
}
