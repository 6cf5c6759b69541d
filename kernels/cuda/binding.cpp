// Torch binding of biomamba's CUDA kernels: checks every argument (device, dtype, shape,
// contiguity) with a message naming it, allocates outputs, and calls the torch-free launchers
// declared in biomamba_cuda.h. The autograd glue is biomamba/ops/cuda.py.
#include <optional>
#include <string>
#include <vector>

#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "biomamba_cuda.h"

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using biomamba::DType;

DType to_dtype(const Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default:
      break;
  }
  TORCH_CHECK(false, name, " must be float32, float16 or bfloat16, got ", t.scalar_type());
  return DType::kFloat32;  // unreachable: TORCH_CHECK(false) throws
}

// A tensor the kernels read or write: on `device`, contiguous, of dtype `dtype`, shape `shape`.
void check_tensor(const Tensor& t, const char* name, const at::Device& device, at::ScalarType dtype,
                  at::IntArrayRef shape) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got a tensor on ", t.device());
  TORCH_CHECK(t.device() == device, name, " must be on ", device, " (like u/x), got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous (call .contiguous() first)");
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}


// B or C of the scan: (d, n) float32 constant, or (b, g, n, l) in u's dtype. Returns groups (0 = constant).
int check_bc(const Tensor& X, const char* name, const Tensor& u, int64_t n) {
  const int64_t b = u.size(0), d = u.size(1), l = u.size(2);
  if (X.dim() == 2) {
    check_tensor(X, name, u.device(), at::kFloat, {d, n});
    return 0;
  }
  TORCH_CHECK(X.dim() == 4, name, " must be (d, n) or (b, g, n, l), got ", X.dim(), " dims ", X.sizes());
  const int64_t g = X.size(1);
  TORCH_CHECK(g >= 1 && d % g == 0, name, " groups (", g, ") must divide the channel count (", d, ")");
  check_tensor(X, name, u.device(), u.scalar_type(), {b, g, n, l});
  return static_cast<int>(g);
}


// seq_idx: optional (b, l) int32 document ids on `device`; returns its pointer or null.
const int* seq_idx_ptr(const OptTensor& seq_idx, const at::Device& device, int64_t b, int64_t l) {
  if (!seq_idx) return nullptr;
  check_tensor(*seq_idx, "seq_idx", device, at::kInt, {b, l});
  return seq_idx->data_ptr<int>();
}

biomamba::ScanParams scan_params(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                 const Tensor& C, const OptTensor& D, const OptTensor& z,
                                 const OptTensor& delta_bias, const OptTensor& seq_idx,
                                 bool delta_softplus) {
  TORCH_CHECK(u.is_cuda(), "u must be a CUDA tensor, got a tensor on ", u.device());
  TORCH_CHECK(u.dim() == 3, "u must be (b, d, l), got ", u.sizes());
  TORCH_CHECK(A.dim() == 2, "A must be (d, n), got ", A.sizes());
  const int64_t b = u.size(0), d = u.size(1), l = u.size(2), n = A.size(1);
  TORCH_CHECK(n >= 1 && n <= biomamba::kMaxDState, "d_state (A.shape[1]) must be in 1..",
              biomamba::kMaxDState, ", got ", n);
  TORCH_CHECK(b <= 65535, "batch must be at most 65535, got ", b);
  const auto dev = u.device();
  check_tensor(u, "u", dev, u.scalar_type(), {b, d, l});
  check_tensor(delta, "delta", dev, u.scalar_type(), {b, d, l});
  check_tensor(A, "A", dev, at::kFloat, {d, n});
  if (z) check_tensor(*z, "z", dev, u.scalar_type(), {b, d, l});
  if (D) check_tensor(*D, "D", dev, at::kFloat, {d});
  if (delta_bias) check_tensor(*delta_bias, "delta_bias", dev, at::kFloat, {d});
  const int gb = check_bc(B, "B", u, n), gc = check_bc(C, "C", u, n);

  biomamba::ScanParams p;
  p.batch = b; p.dim = d; p.len = l; p.dstate = n;
  p.b_var = gb > 0; p.c_var = gc > 0;
  p.b_groups = gb > 0 ? gb : 1; p.c_groups = gc > 0 ? gc : 1;
  p.delta_softplus = delta_softplus;
  p.dtype = to_dtype(u, "u");
  p.u = u.data_ptr(); p.delta = delta.data_ptr();
  p.z = z ? z->data_ptr() : nullptr;
  p.B = B.data_ptr(); p.C = C.data_ptr();
  p.A = A.data_ptr<float>();
  p.D = D ? D->data_ptr<float>() : nullptr;
  p.delta_bias = delta_bias ? delta_bias->data_ptr<float>() : nullptr;
  p.seq_idx = seq_idx_ptr(seq_idx, dev, b, l);
  const char* problem = biomamba::selective_scan_validate(p);
  TORCH_CHECK(problem == nullptr, "selective_scan: ", problem ? problem : "");
  return p;
}

// -> [out (b, d, l) in u's dtype, last_state (b, d, n) float32, chunk_states (b, d, chunks, n) float32]
std::vector<Tensor> scan_fwd(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                             const Tensor& C, const OptTensor& D, const OptTensor& z,
                             const OptTensor& delta_bias, const OptTensor& seq_idx, bool delta_softplus) {
  biomamba::ScanParams p = scan_params(u, delta, A, B, C, D, z, delta_bias, seq_idx, delta_softplus);
  const c10::cuda::CUDAGuard guard(u.device());
  const auto f32 = u.options().dtype(at::kFloat);
  Tensor out = at::empty_like(u);
  Tensor last = at::empty({p.batch, p.dim, p.dstate}, f32);
  Tensor chunks = at::empty({p.batch, p.dim, biomamba::selective_scan_num_chunks(p.len), p.dstate}, f32);
  p.out = out.data_ptr();
  p.last_state = last.data_ptr<float>();
  p.chunk_states = chunks.data_ptr<float>();
  check_launch(biomamba::selective_scan_fwd(p, c10::cuda::getCurrentCUDAStream().stream()),
               "selective_scan forward kernel");
  return {out, last, chunks};
}

// -> [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]; du, ddelta, dz in u's dtype, the rest float32
// (dB, dC in the shape of B, C); absent inputs give undefined tensors (None in Python).
std::vector<Tensor> scan_bwd(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                             const Tensor& C, const OptTensor& D, const OptTensor& z,
                             const OptTensor& delta_bias, const OptTensor& seq_idx, bool delta_softplus,
                             const Tensor& chunk_states, const Tensor& dout, const OptTensor& dlast_state) {
  biomamba::ScanParams p = scan_params(u, delta, A, B, C, D, z, delta_bias, seq_idx, delta_softplus);
  const auto dev = u.device();
  check_tensor(chunk_states, "chunk_states", dev, at::kFloat,
               {p.batch, p.dim, biomamba::selective_scan_num_chunks(p.len), p.dstate});
  check_tensor(dout, "dout", dev, u.scalar_type(), {p.batch, p.dim, p.len});
  if (dlast_state) check_tensor(*dlast_state, "dlast_state", dev, at::kFloat, {p.batch, p.dim, p.dstate});
  const c10::cuda::CUDAGuard guard(dev);
  const auto f32 = u.options().dtype(at::kFloat);
  Tensor du = at::empty_like(u), ddelta = at::empty_like(u);
  Tensor dA = at::zeros({p.dim, p.dstate}, f32);
  Tensor dB = at::zeros(B.sizes(), f32), dC = at::zeros(C.sizes(), f32);
  Tensor dD = D ? at::zeros({p.dim}, f32) : Tensor();
  Tensor dz = z ? at::empty_like(u) : Tensor();
  Tensor dbias = delta_bias ? at::zeros({p.dim}, f32) : Tensor();
  p.chunk_states = chunk_states.data_ptr<float>();
  p.dout = dout.data_ptr();
  p.dlast_state = dlast_state ? dlast_state->data_ptr<float>() : nullptr;
  p.du = du.data_ptr(); p.ddelta = ddelta.data_ptr();
  p.dz = z ? dz.data_ptr() : nullptr;
  p.dA = dA.data_ptr<float>(); p.dB = dB.data_ptr<float>(); p.dC = dC.data_ptr<float>();
  p.dD = D ? dD.data_ptr<float>() : nullptr;
  p.ddelta_bias = delta_bias ? dbias.data_ptr<float>() : nullptr;
  check_launch(biomamba::selective_scan_bwd(p, c10::cuda::getCurrentCUDAStream().stream()),
               "selective_scan backward kernel");
  return {du, ddelta, dA, dB, dC, dD, dz, dbias};
}

// One decoding step; updates `state` (b, d, n) in place and returns out (b, d) in x's dtype.
Tensor state_update(const Tensor& state, const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                    const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& dt_bias,
                    bool dt_softplus) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got a tensor on ", x.device());
  TORCH_CHECK(x.dim() == 2, "x must be (b, d), got ", x.sizes());
  TORCH_CHECK(A.dim() == 2, "A must be (d, n), got ", A.sizes());
  const int64_t b = x.size(0), d = x.size(1), n = A.size(1);
  TORCH_CHECK(n >= 1 && n <= biomamba::kMaxDState, "d_state must be in 1..", biomamba::kMaxDState, ", got ", n);
  TORCH_CHECK(b <= 65535, "batch must be at most 65535, got ", b);
  const auto dev = x.device();
  const auto dtype = x.scalar_type();
  check_tensor(x, "x", dev, dtype, {b, d});
  TORCH_CHECK(state.scalar_type() == at::kFloat || state.scalar_type() == dtype,
              "state must be float32 or x's dtype (", dtype, "), got ", state.scalar_type());
  check_tensor(state, "state", dev, state.scalar_type(), {b, d, n});
  check_tensor(dt, "dt", dev, dtype, {b, d});
  check_tensor(A, "A", dev, at::kFloat, {d, n});
  TORCH_CHECK(B.dim() == 3, "B must be (b, g, n), got ", B.sizes());
  const int64_t g = B.size(1);
  TORCH_CHECK(g >= 1 && d % g == 0, "B/C groups (", g, ") must divide the channel count (", d, ")");
  check_tensor(B, "B", dev, dtype, {b, g, n});
  check_tensor(C, "C", dev, dtype, {b, g, n});
  if (D) check_tensor(*D, "D", dev, at::kFloat, {d});
  if (z) check_tensor(*z, "z", dev, dtype, {b, d});
  if (dt_bias) check_tensor(*dt_bias, "dt_bias", dev, at::kFloat, {d});
  const c10::cuda::CUDAGuard guard(dev);
  Tensor out = at::empty_like(x);
  biomamba::StateUpdateParams p;
  p.batch = b; p.dim = d; p.dstate = n; p.groups = g;
  p.dt_softplus = dt_softplus;
  p.dtype = to_dtype(x, "x");
  p.state_dtype = to_dtype(state, "state");
  p.state = state.data_ptr(); p.x = x.data_ptr(); p.dt = dt.data_ptr();
  p.z = z ? z->data_ptr() : nullptr;
  p.B = B.data_ptr(); p.C = C.data_ptr();
  p.A = A.data_ptr<float>();
  p.D = D ? D->data_ptr<float>() : nullptr;
  p.dt_bias = dt_bias ? dt_bias->data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  check_launch(biomamba::selective_state_update(p, c10::cuda::getCurrentCUDAStream().stream()),
               "selective_state_update kernel");
  return out;
}

biomamba::Conv1dParams conv_params(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                                   const OptTensor& seq_idx, bool silu) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got a tensor on ", x.device());
  TORCH_CHECK(x.dim() == 3, "x must be (b, d, l), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 2, "weight must be (d, width), got ", weight.sizes());
  const int64_t b = x.size(0), d = x.size(1), l = x.size(2), w = weight.size(1);
  TORCH_CHECK(w >= 2 && w <= 4, "conv width (weight.shape[1]) must be 2, 3 or 4, got ", w);
  TORCH_CHECK(b <= 65535, "batch must be at most 65535, got ", b);
  const auto dev = x.device();
  check_tensor(x, "x", dev, x.scalar_type(), {b, d, l});
  check_tensor(weight, "weight", dev, at::kFloat, {d, w});
  if (bias) check_tensor(*bias, "bias", dev, at::kFloat, {d});
  biomamba::Conv1dParams p;
  p.batch = b; p.dim = d; p.len = l; p.width = w;
  p.silu = silu;
  p.dtype = to_dtype(x, "x");
  p.x = x.data_ptr();
  p.weight = weight.data_ptr<float>();
  p.bias = bias ? bias->data_ptr<float>() : nullptr;
  p.seq_idx = seq_idx_ptr(seq_idx, dev, b, l);
  return p;
}

Tensor conv1d_fwd(const Tensor& x, const Tensor& weight, const OptTensor& bias, const OptTensor& seq_idx,
                  bool silu) {
  biomamba::Conv1dParams p = conv_params(x, weight, bias, seq_idx, silu);
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor out = at::empty_like(x);
  p.out = out.data_ptr();
  check_launch(biomamba::causal_conv1d_fwd(p, c10::cuda::getCurrentCUDAStream().stream()),
               "causal_conv1d forward kernel");
  return out;
}

// -> [dx (x's dtype), dweight float32, dbias float32 or undefined]
std::vector<Tensor> conv1d_bwd(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                               const OptTensor& seq_idx, const Tensor& dout, bool silu) {
  biomamba::Conv1dParams p = conv_params(x, weight, bias, seq_idx, silu);
  check_tensor(dout, "dout", x.device(), x.scalar_type(), {p.batch, p.dim, p.len});
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor dx = at::empty_like(x);
  Tensor dweight = at::zeros_like(weight);
  Tensor dbias = bias ? at::zeros_like(*bias) : Tensor();
  p.dout = dout.data_ptr();
  p.dx = dx.data_ptr();
  p.dweight = dweight.data_ptr<float>();
  p.dbias = bias ? dbias.data_ptr<float>() : nullptr;
  check_launch(biomamba::causal_conv1d_bwd(p, c10::cuda::getCurrentCUDAStream().stream()),
               "causal_conv1d backward kernels");
  return {dx, dweight, dbias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "biomamba CUDA kernels: selective scan, state update, causal conv1d";
  m.def("scan_fwd", &scan_fwd, "selective scan forward", py::arg("u"), py::arg("delta"), py::arg("A"),
        py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"), py::arg("seq_idx"),
        py::arg("delta_softplus"));
  m.def("scan_bwd", &scan_bwd, "selective scan backward", py::arg("u"), py::arg("delta"), py::arg("A"),
        py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"), py::arg("seq_idx"),
        py::arg("delta_softplus"), py::arg("chunk_states"), py::arg("dout"), py::arg("dlast_state"));
  m.def("state_update", &state_update, "one decoding step of the scan (state updated in place)",
        py::arg("state"), py::arg("x"), py::arg("dt"), py::arg("A"), py::arg("B"), py::arg("C"),
        py::arg("D"), py::arg("z"), py::arg("dt_bias"), py::arg("dt_softplus"));
  m.def("conv1d_fwd", &conv1d_fwd, "causal depthwise conv1d forward", py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("seq_idx"), py::arg("silu"));
  m.def("conv1d_bwd", &conv1d_bwd, "causal depthwise conv1d backward", py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("seq_idx"), py::arg("dout"), py::arg("silu"));
}
