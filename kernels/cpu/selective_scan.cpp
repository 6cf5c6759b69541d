// Python binding of the CPU selective scan: argument checks, dtype/state-size dispatch, threading.
//
// Called only from biomamba/ops/cpu.py, which converts inputs to the compute dtype (float32
// or float64), makes them contiguous and puts a variable B/C in time-major (b, g, l, n) layout;
// the checks here guard that contract with messages naming the argument.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <type_traits>
#include <vector>

#include "isa.h"
#include "scan_kernel.h"

namespace biomamba_cpu {
namespace {

using at::Tensor;
using c10::optional;

void check_tensor(const Tensor& t, const char* name, const Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), "selective_scan (cpu): ", name, " must be a CPU tensor, got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "selective_scan (cpu): ", name,
              " must have dtype ", like.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "selective_scan (cpu): ", name, " must be contiguous");
}

void check_shape(const Tensor& t, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK(t.sizes() == shape, "selective_scan (cpu): ", name, " must have shape ", shape,
              ", got ", t.sizes());
}

// B or C: constant (d, n) or time-major variable (b, g, l, n) with g dividing d.
void check_bc(const Tensor& X, const char* name, const Tensor& u, int64_t n) {
  check_tensor(X, name, u);
  const int64_t b = u.size(0), d = u.size(1), l = u.size(2);
  if (X.dim() == 2) {
    check_shape(X, name, {d, n});
    return;
  }
  TORCH_CHECK(X.dim() == 4, "selective_scan (cpu): ", name,
              " must be (d, n) or time-major (b, g, l, n), got ", X.sizes());
  TORCH_CHECK(X.size(1) > 0 && d % X.size(1) == 0, "selective_scan (cpu): groups of ", name, " (",
              X.size(1), ") must divide d (", d, ")");
  check_shape(X, name, {b, X.size(1), l, n});
}

void check_optional(const optional<Tensor>& t, const char* name, const Tensor& u,
                    at::IntArrayRef shape) {
  if (!t.has_value()) return;
  check_tensor(*t, name, u);
  check_shape(*t, name, shape);
}

template <typename T>
const T* ptr_or_null(const optional<Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

template <typename T>
ScanArgs<T> make_args(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                      const Tensor& C, const optional<Tensor>& D, const optional<Tensor>& z,
                      const optional<Tensor>& delta_bias, const optional<Tensor>& seq_idx,
                      bool softplus, T* chunk_states) {
  ScanArgs<T> a;
  a.batch = u.size(0);
  a.dim = u.size(1);
  a.len = u.size(2);
  a.dstate = A.size(1);
  a.nchunks = (a.len + kChunk - 1) / kChunk;
  a.u = u.data_ptr<T>();
  a.delta = delta.data_ptr<T>();
  a.A = A.data_ptr<T>();
  a.B = B.data_ptr<T>();
  a.C = C.data_ptr<T>();
  a.D = ptr_or_null<T>(D);
  a.z = ptr_or_null<T>(z);
  a.delta_bias = ptr_or_null<T>(delta_bias);
  a.B_var = B.dim() == 4;
  a.C_var = C.dim() == 4;
  a.B_groups = a.B_var ? B.size(1) : 1;
  a.C_groups = a.C_var ? C.size(1) : 1;
  a.softplus = softplus;
  a.seq_idx = seq_idx.has_value() ? seq_idx->data_ptr<int32_t>() : nullptr;
  a.chunk_states = chunk_states;
  return a;
}

// One row range of the forward and one channel range of the backward, with n and the lanes (W
// values of the state dimension) compiled in.
template <typename T>
struct RowKernels {
  void (*forward)(const ScanArgs<T>&, const ForwardOut<T>&, int64_t r0, int64_t r1);
  void (*backward)(const ScanArgs<T>&, const BackwardArgs<T>&, int64_t b, int64_t c0, int64_t c1,
                   int64_t part, const ChunkBuffers<T>&);
};

template <typename T, int kN, int W>
SCAN_INLINE void forward_rows(const ScanArgs<T>& a, const ForwardOut<T>& o, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) forward_row<T, kN, W>(a, o, r / a.dim, r % a.dim);
}

template <typename T, int kN, int W>
SCAN_INLINE void backward_rows(const ScanArgs<T>& a, const BackwardArgs<T>& g, int64_t b, int64_t c0,
                               int64_t c1, int64_t part, const ChunkBuffers<T>& buf) {
  for (int64_t c = c0; c < c1; ++c) backward_row<T, kN, W>(a, g, b, c, part, buf);
}

// The same loops built three times: baseline (4-lane SSE/NEON vectors or scalar), AVX2+FMA
// (8 lanes) and AVX-512 (16 lanes: a state of n = 16 is one register, one exp per step).
template <typename T, int kN, int W>
void forward_base(const ScanArgs<T>& a, const ForwardOut<T>& o, int64_t r0, int64_t r1) {
  forward_rows<T, kN, W>(a, o, r0, r1);
}
template <int kN>
ISA_AVX2 void forward_avx2(const ScanArgs<float>& a, const ForwardOut<float>& o, int64_t r0, int64_t r1) {
  forward_rows<float, kN, 8>(a, o, r0, r1);
}
template <int kN>
ISA_AVX512 void forward_avx512(const ScanArgs<float>& a, const ForwardOut<float>& o, int64_t r0, int64_t r1) {
  forward_rows<float, kN, 16>(a, o, r0, r1);
}
template <typename T, int kN, int W>
void backward_base(const ScanArgs<T>& a, const BackwardArgs<T>& g, int64_t b, int64_t c0, int64_t c1,
                   int64_t part, const ChunkBuffers<T>& buf) {
  backward_rows<T, kN, W>(a, g, b, c0, c1, part, buf);
}
template <int kN>
ISA_AVX2 void backward_avx2(const ScanArgs<float>& a, const BackwardArgs<float>& g, int64_t b, int64_t c0,
                            int64_t c1, int64_t part, const ChunkBuffers<float>& buf) {
  backward_rows<float, kN, 8>(a, g, b, c0, c1, part, buf);
}
template <int kN>
ISA_AVX512 void backward_avx512(const ScanArgs<float>& a, const BackwardArgs<float>& g, int64_t b,
                                int64_t c0, int64_t c1, int64_t part, const ChunkBuffers<float>& buf) {
  backward_rows<float, kN, 16>(a, g, b, c0, c1, part, buf);
}

template <typename T, int kN, int W>
RowKernels<T> base_kernels() {
  return {forward_base<T, kN, W>, backward_base<T, kN, W>};
}

template <int kN>
RowKernels<float> wide_kernels(int isa) {
  if (isa >= 2 && kN % 16 == 0) return {forward_avx512<kN>, backward_avx512<kN>};
  if (isa >= 1) return {forward_avx2<kN>, backward_avx2<kN>};
  return base_kernels<float, kN, 4>();
}

// The kernels for state size n: a common n is compiled in (the state then lives in registers),
// over the widest lanes the CPU has (isa.h) that divide it; else a runtime n <= kMaxState, with 4
// lanes for a float n divisible by 4 and scalar lanes otherwise. double uses scalar lanes (it
// exists to check against the reference), with n = 16 compiled in to check that path too.
template <typename T>
RowKernels<T> row_kernels(int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    const int isa = biomamba_isa::isa_level();
    switch (n) {
      case 4: return base_kernels<float, 4, 4>();
      case 8: return wide_kernels<8>(isa);
      case 16: return wide_kernels<16>(isa);
      case 32: return wide_kernels<32>(isa);
      case 64: return wide_kernels<64>(isa);
    }
    if (n % 4 == 0) return base_kernels<float, 0, 4>();
  } else if (n == 16) {
    return base_kernels<T, 16, 1>();
  }
  return base_kernels<T, 0, 1>();
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

constexpr int64_t kRowsPerUnit = 8;  // forward rows handed out together

void check_inputs(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                  const Tensor& C, const optional<Tensor>& D, const optional<Tensor>& z,
                  const optional<Tensor>& delta_bias, const optional<Tensor>& seq_idx) {
  TORCH_CHECK(u.dim() == 3, "selective_scan (cpu): u must be (b, d, l), got ", u.sizes());
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble,
              "selective_scan (cpu): the kernel computes in float32 or float64, got u of dtype ",
              u.scalar_type());
  check_tensor(u, "u", u);
  check_tensor(delta, "delta", u);
  check_shape(delta, "delta", u.sizes());
  check_tensor(A, "A", u);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1), "selective_scan (cpu): A must be (d, n) with d = ",
              u.size(1), ", got ", A.sizes());
  const int64_t n = A.size(1);
  TORCH_CHECK(n >= 1 && n <= kMaxState, "selective_scan (cpu): state size n = ", n,
              " must be in [1, ", kMaxState, "]");
  check_bc(B, "B", u, n);
  check_bc(C, "C", u, n);
  check_optional(D, "D", u, {u.size(1)});
  check_optional(z, "z", u, u.sizes());
  check_optional(delta_bias, "delta_bias", u, {u.size(1)});
  if (seq_idx.has_value()) {  // document ids: compared, never computed with, hence int32 whatever u is
    TORCH_CHECK(seq_idx->device().is_cpu(), "selective_scan (cpu): seq_idx must be a CPU tensor, got ",
                seq_idx->device());
    TORCH_CHECK(seq_idx->scalar_type() == at::kInt, "selective_scan (cpu): seq_idx must have dtype ",
                at::kInt, ", got ", seq_idx->scalar_type());
    TORCH_CHECK(seq_idx->is_contiguous(), "selective_scan (cpu): seq_idx must be contiguous");
    check_shape(*seq_idx, "seq_idx", {u.size(0), u.size(2)});
  }
}

// Returns (out (b, d, l), last_state (b, d, n), chunk_states (b, d, ceil(l / kChunk), n) or empty).
std::vector<Tensor> scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A,
                                 const Tensor& B, const Tensor& C, const optional<Tensor>& D,
                                 const optional<Tensor>& z, const optional<Tensor>& delta_bias,
                                 const optional<Tensor>& seq_idx, bool softplus, bool save_states) {
  check_inputs(u, delta, A, B, C, D, z, delta_bias, seq_idx);
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), n = A.size(1);
  const int64_t nchunks = (len + kChunk - 1) / kChunk;
  Tensor out = at::empty_like(u);
  Tensor last = at::empty({batch, dim, n}, u.options());
  Tensor states = save_states ? at::empty({batch, dim, nchunks, n}, u.options())
                              : at::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_forward", [&] {
    const auto a = make_args<scalar_t>(u, delta, A, B, C, D, z, delta_bias, seq_idx, softplus,
                                       save_states ? states.data_ptr<scalar_t>() : nullptr);
    const ForwardOut<scalar_t> o{out.data_ptr<scalar_t>(), last.data_ptr<scalar_t>()};
    const auto kernels = row_kernels<scalar_t>(n);
    const int64_t rows = batch * dim;
    parallel_units((rows + kRowsPerUnit - 1) / kRowsPerUnit, [&](int64_t unit) {
      kernels.forward(a, o, unit * kRowsPerUnit, std::min(rows, (unit + 1) * kRowsPerUnit));
    });
  });
  return {out, last, states};
}

// Channel ranges per batch element: enough units of work to balance threads on shared cores
// (each part of a variable B/C costs a (l, n) partial gradient, summed afterwards).
int64_t choose_parts(int64_t batch, int64_t dim) {
  const int64_t units = 8 * static_cast<int64_t>(at::get_num_threads());
  return std::max<int64_t>(1, std::min<int64_t>(dim, (units + batch - 1) / batch));
}

// Returns (gu, gdelta, gz or empty, gA (b, d, n), gD (b, d), gbias (b, d), gB, gC); the per-batch
// partials of gA, gD, gbias and of a constant B/C ((b, d, n)) are summed by the caller, as are
// those of a variable B/C ((b, parts, g, l, n), summed over parts).
std::vector<Tensor> scan_backward(const Tensor& u, const Tensor& delta, const Tensor& A,
                                  const Tensor& B, const Tensor& C, const optional<Tensor>& D,
                                  const optional<Tensor>& z, const optional<Tensor>& delta_bias,
                                  const optional<Tensor>& seq_idx, bool softplus,
                                  const Tensor& chunk_states, const Tensor& grad_out,
                                  const optional<Tensor>& grad_last) {
  check_inputs(u, delta, A, B, C, D, z, delta_bias, seq_idx);
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), n = A.size(1);
  const int64_t nchunks = (len + kChunk - 1) / kChunk;
  check_tensor(chunk_states, "chunk_states", u);
  check_shape(chunk_states, "chunk_states", {batch, dim, nchunks, n});
  check_tensor(grad_out, "grad_out", u);
  check_shape(grad_out, "grad_out", u.sizes());
  check_optional(grad_last, "grad_last", u, {batch, dim, n});
  const int64_t parts = choose_parts(batch, dim);
  auto bc_grad = [&](const Tensor& X) {
    return X.dim() == 2 ? at::empty({batch, dim, n}, u.options())
                        : at::zeros({batch, parts, X.size(1), len, n}, u.options());
  };
  Tensor gu = at::empty_like(u), gdelta = at::empty_like(u);
  Tensor gz = z.has_value() ? at::empty_like(u) : Tensor();
  Tensor gA = at::empty({batch, dim, n}, u.options());
  Tensor gD = at::empty({batch, dim}, u.options()), gbias = at::empty({batch, dim}, u.options());
  Tensor gB = bc_grad(B), gC = bc_grad(C);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_backward", [&] {
    using T = scalar_t;
    const auto a = make_args<T>(u, delta, A, B, C, D, z, delta_bias, seq_idx, softplus,
                                chunk_states.data_ptr<T>());
    BackwardArgs<T> g;
    g.grad_out = grad_out.data_ptr<T>();
    g.grad_last = ptr_or_null<T>(grad_last);
    g.gu = gu.data_ptr<T>();
    g.gdelta = gdelta.data_ptr<T>();
    g.gz = z.has_value() ? gz.data_ptr<T>() : nullptr;
    g.gA = gA.data_ptr<T>();
    g.gD = gD.data_ptr<T>();
    g.gbias = gbias.data_ptr<T>();
    g.gB = gB.data_ptr<T>();
    g.gC = gC.data_ptr<T>();
    g.parts = parts;
    const auto kernels = row_kernels<T>(n);
    parallel_units(batch * parts, [&](int64_t unit) {
      thread_local std::vector<T> scratch;
      scratch.resize(static_cast<size_t>(2 * kChunk * n));
      const ChunkBuffers<T> buf{scratch.data(), scratch.data() + kChunk * n};
      const int64_t b = unit / parts, part = unit % parts;
      kernels.backward(a, g, b, part * dim / parts, (part + 1) * dim / parts, part, buf);
    });
  });
  return {gu, gdelta, gz, gA, gD, gbias, gB, gC};
}

}  // namespace
}  // namespace biomamba_cpu

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "biomamba selective scan, CPU kernels (forward and chunk-recomputing backward)";
  m.def("forward", &biomamba_cpu::scan_forward, "selective scan forward (cpu)");
  m.def("backward", &biomamba_cpu::scan_backward, "selective scan backward (cpu)");
  m.def("isa_level", &biomamba_isa::isa_level,
        "the kernels' instruction set here: 2 AVX-512, 1 AVX2+FMA, 0 baseline (BIOMAMBA_CPU_ISA caps it)");
  m.attr("CHUNK") = biomamba_cpu::kChunk;
}
