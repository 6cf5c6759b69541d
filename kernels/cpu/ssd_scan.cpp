// Python binding of the CPU SSD scan (Mamba-2): argument checks, dtype and instruction-set
// dispatch, threads.
//
// Called only from biomamba/ops/ssd_cpu.py, which applies dt's bias/softplus/clamp, turns seq_idx
// into document starts and converts everything to the compute dtype (float32 or float64),
// contiguous; the checks here guard that contract with messages naming the argument.
// The kernels are compiled for three instruction sets; the widest the CPU has is chosen at run
// time (isa.h).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <vector>

#include "isa.h"
#include "ssd_kernel.h"

namespace biomamba_ssd {
namespace {

using at::Tensor;
using c10::optional;

void check(const Tensor& t, const char* name, const Tensor& like, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu(), "ssd_scan (cpu): ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "ssd_scan (cpu): ", name, " must have dtype ",
              like.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "ssd_scan (cpu): ", name, " must be contiguous");
  TORCH_CHECK(t.sizes() == shape, "ssd_scan (cpu): ", name, " must have shape ", shape, ", got ",
              t.sizes());
}

void check_inputs(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                  const Tensor& C, const optional<Tensor>& init, const optional<Tensor>& starts) {
  TORCH_CHECK(x.dim() == 4, "ssd_scan (cpu): x must be (b, l, h, p), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "ssd_scan (cpu): the kernel computes in float32 or float64, got x of dtype ",
              x.scalar_type());
  const int64_t b = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3);
  check(x, "x", x, x.sizes());
  check(dt, "dt", x, {b, l, h});
  check(A, "A", x, {h});
  TORCH_CHECK(B.dim() == 4 && B.size(2) > 0 && h % B.size(2) == 0,
              "ssd_scan (cpu): B must be (b, l, g, n) with g dividing h = ", h, ", got ", B.sizes());
  check(B, "B", x, {b, l, B.size(2), B.size(3)});
  check(C, "C", x, B.sizes());
  if (init.has_value()) check(*init, "initial_states", x, {b, h, p, B.size(3)});
  if (starts.has_value()) {
    TORCH_CHECK(starts->scalar_type() == at::kInt, "ssd_scan (cpu): document starts must be int32, got ",
                starts->scalar_type());
    TORCH_CHECK(starts->is_contiguous() && starts->sizes() == at::IntArrayRef({b, l}),
                "ssd_scan (cpu): document starts must be contiguous (b, l) = (", b, ", ", l, "), got ",
                starts->sizes());
  }
}

template <typename T>
SsdArgs<T> make_args(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                     const Tensor& C, const optional<Tensor>& init, const optional<Tensor>& starts,
                     T* saved) {
  SsdArgs<T> a;
  a.batch = x.size(0);
  a.len = x.size(1);
  a.heads = x.size(2);
  a.headdim = x.size(3);
  a.groups = B.size(2);
  a.dstate = B.size(3);
  a.nchunks = (a.len + KC - 1) / KC;
  a.Pp = round_up(a.headdim, IV * (64 / sizeof(T)));  // whole tiles of the widest vectors
  a.Np = round_up(a.dstate, KT);
  a.x = x.data_ptr<T>();
  a.dt = dt.data_ptr<T>();
  a.A = A.data_ptr<T>();
  a.B = B.data_ptr<T>();
  a.C = C.data_ptr<T>();
  a.init = init.has_value() ? init->data_ptr<T>() : nullptr;
  a.starts = starts.has_value() ? starts->data_ptr<int32_t>() : nullptr;
  a.saved = saved;
  return a;
}

// Runs f(unit) for every unit in [0, units) on torch's intra-op threads, handing units out one at
// a time: the cores are often shared, and a static split would wait for the slowest thread.
template <typename F>
void parallel_units(int64_t units, const F& f) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), units);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t unit = next.fetch_add(1); unit < units; unit = next.fetch_add(1)) f(unit);
  });
}

// The per-unit kernels, compiled three times: baseline (SSE2/NEON: 32-byte vectors in halves),
// AVX2+FMA, and AVX-512 (64-byte vectors, 32 registers: the tile's states and adjoints fit).
template <typename T, int Bytes>
SSD_INLINE void forward_one(const SsdArgs<T>& a, int64_t unit, T* y, T* fin) {
  thread_local std::vector<T> S;
  thread_local Chunk<T> c;
  c.resize(a);
  forward_unit<T, Bytes>(a, unit / a.heads, unit % a.heads, y, fin, S, c);
}

template <typename T, int Bytes>
SSD_INLINE void backward_one(const SsdArgs<T>& a, const SsdGrads<T>& g, int64_t unit) {
  thread_local BackScratch<T> s;
  backward_unit<T, Bytes>(a, g, unit / a.heads, unit % a.heads, s);
}

template <typename T>
void forward_base(const SsdArgs<T>& a, int64_t unit, T* y, T* fin) { forward_one<T, 32>(a, unit, y, fin); }
template <typename T>
ISA_AVX2 void forward_avx2(const SsdArgs<T>& a, int64_t unit, T* y, T* fin) { forward_one<T, 32>(a, unit, y, fin); }
template <typename T>
ISA_AVX512 void forward_avx512(const SsdArgs<T>& a, int64_t unit, T* y, T* fin) {
  forward_one<T, 64>(a, unit, y, fin);
}
template <typename T>
void backward_base(const SsdArgs<T>& a, const SsdGrads<T>& g, int64_t unit) { backward_one<T, 32>(a, g, unit); }
template <typename T>
ISA_AVX2 void backward_avx2(const SsdArgs<T>& a, const SsdGrads<T>& g, int64_t unit) {
  backward_one<T, 32>(a, g, unit);
}
template <typename T>
ISA_AVX512 void backward_avx512(const SsdArgs<T>& a, const SsdGrads<T>& g, int64_t unit) {
  backward_one<T, 64>(a, g, unit);
}

// Returns (y (b, l, h, p), final_states (b, h, p, n), saved states (b, h, nchunks, Np, Pp) or empty).
std::vector<Tensor> ssd_forward(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                                const Tensor& C, const optional<Tensor>& init,
                                const optional<Tensor>& starts, bool save_states) {
  check_inputs(x, dt, A, B, C, init, starts);
  const int64_t b = x.size(0), h = x.size(2), p = x.size(3), n = B.size(3);
  Tensor y = at::empty_like(x);
  Tensor fin = at::empty({b, h, p, n}, x.options());
  Tensor saved;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssd_scan_cpu_forward", [&] {
    using T = scalar_t;
    auto a = make_args<T>(x, dt, A, B, C, init, starts, nullptr);
    saved = save_states ? at::empty({b, h, a.nchunks, a.Np, a.Pp}, x.options()) : at::empty({0}, x.options());
    a.saved = save_states ? saved.data_ptr<T>() : nullptr;
    T *yp = y.data_ptr<T>(), *fp = fin.data_ptr<T>();
    const int isa = biomamba_isa::isa_level();
    parallel_units(b * h, [&](int64_t unit) {
      if (isa >= 2) forward_avx512<T>(a, unit, yp, fp);
      else if (isa == 1) forward_avx2<T>(a, unit, yp, fp);
      else forward_base<T>(a, unit, yp, fp);
    });
  });
  return {y, fin, saved};
}

// Returns (gx, gdt, gA (b, h) per-row partials, gB (b, l, h, n), gC (b, l, h, n) per head,
// ginit (b, h, p, n)).
std::vector<Tensor> ssd_backward(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                                 const Tensor& C, const optional<Tensor>& starts, const Tensor& saved,
                                 const Tensor& grad_y, const optional<Tensor>& grad_final) {
  check_inputs(x, dt, A, B, C, c10::nullopt, starts);
  const int64_t b = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3), n = B.size(3);
  check(grad_y, "grad_y", x, x.sizes());
  if (grad_final.has_value()) check(*grad_final, "grad_final", x, {b, h, p, n});
  Tensor gx = at::empty_like(x), gdt = at::empty_like(dt), gA = at::empty({b, h}, x.options());
  Tensor gB = at::empty({b, l, h, n}, x.options()), gC = at::empty({b, l, h, n}, x.options());
  Tensor ginit = at::empty({b, h, p, n}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssd_scan_cpu_backward", [&] {
    using T = scalar_t;
    auto a = make_args<T>(x, dt, A, B, C, c10::nullopt, starts, nullptr);
    check(saved, "saved states", x, {b, h, a.nchunks, a.Np, a.Pp});
    a.saved = const_cast<T*>(saved.data_ptr<T>());
    SsdGrads<T> g;
    g.gy = grad_y.data_ptr<T>();
    g.gfinal = grad_final.has_value() ? grad_final->data_ptr<T>() : nullptr;
    g.gx = gx.data_ptr<T>();
    g.gdt = gdt.data_ptr<T>();
    g.gA = gA.data_ptr<T>();
    g.gB = gB.data_ptr<T>();
    g.gC = gC.data_ptr<T>();
    g.ginit = ginit.data_ptr<T>();
    const int isa = biomamba_isa::isa_level();
    parallel_units(b * h, [&](int64_t unit) {
      if (isa >= 2) backward_avx512<T>(a, g, unit);
      else if (isa == 1) backward_avx2<T>(a, g, unit);
      else backward_base<T>(a, g, unit);
    });
  });
  return {gx, gdt, gA, gB, gC, ginit};
}

}  // namespace
}  // namespace biomamba_ssd

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "biomamba SSD scan (Mamba-2), CPU kernels (forward and chunk-recomputing backward)";
  m.def("forward", &biomamba_ssd::ssd_forward, "SSD scan forward (cpu)");
  m.def("backward", &biomamba_ssd::ssd_backward, "SSD scan backward (cpu)");
  m.def("isa_level", &biomamba_isa::isa_level,
        "the kernels' instruction set here: 2 AVX-512, 1 AVX2+FMA, 0 baseline (BIOMAMBA_CPU_ISA caps it)");
  m.attr("CHUNK") = biomamba_ssd::KC;
}
