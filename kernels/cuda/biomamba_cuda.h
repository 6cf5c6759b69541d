// Host API of biomamba's CUDA kernels. Plain C++ + the CUDA runtime: no torch, so the kernels
// compile standalone (`nvcc -c kernels/cuda/selective_scan.cu`) and the torch binding
// (binding.cpp) is only a thin layer of checks over these launchers.
//
// Every tensor is contiguous, row-major, on one device. Shapes (b batch, d channels, l length,
// n d_state, g groups): u, delta, z, out (b, d, l); A (d, n); D, delta_bias (d,);
// B, C either constant (d, n) float32 or variable (b, g, n, l) in the input dtype.
// seq_idx (b, l) int32 document ids, optional: where seq_idx[t] != seq_idx[t-1] the scan starts
// again from h = 0, and the conv sums only the x[t-k] with seq_idx[t-k] == seq_idx[t].
#pragma once
#include <cuda_runtime_api.h>

namespace biomamba {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// The forward saves the state at the start of every kStateChunk steps (b, d, n_chunks, n) float32;
// the backward recomputes the states in between. n_chunks = ceil(l / kStateChunk).
constexpr int kStateChunk = 64;
constexpr int kMaxDState = 256;

struct ScanParams {
  int batch = 0, dim = 0, len = 0, dstate = 0;
  bool b_var = false, c_var = false;   // variable (b, g, n, l) vs constant (d, n)
  int b_groups = 1, c_groups = 1;      // g of variable B / C (1 for constant)
  bool delta_softplus = false;
  DType dtype = DType::kFloat32;       // of u, delta, z, out, variable B/C and their gradients

  // forward inputs
  const void* u = nullptr;
  const void* delta = nullptr;
  const void* z = nullptr;             // optional
  const void* B = nullptr;
  const void* C = nullptr;
  const float* A = nullptr;
  const float* D = nullptr;            // optional
  const float* delta_bias = nullptr;   // optional
  const int* seq_idx = nullptr;        // optional (b, l) document ids
  // forward outputs
  void* out = nullptr;                 // (b, d, l), input dtype
  float* last_state = nullptr;         // (b, d, n)
  float* chunk_states = nullptr;       // (b, d, n_chunks, n); forward writes, backward reads

  // backward inputs
  const void* dout = nullptr;          // (b, d, l), input dtype
  const float* dlast_state = nullptr;  // optional (b, d, n)
  // backward outputs: du, ddelta, dz in the input dtype (fully written);
  // the float32 accumulators below must be zero-filled by the caller (the kernel atomically adds).
  void* du = nullptr;
  void* ddelta = nullptr;
  void* dz = nullptr;                  // required when z is given
  float* dA = nullptr;                 // (d, n)
  float* dB = nullptr;                 // shape of B
  float* dC = nullptr;                 // shape of C
  float* dD = nullptr;                 // (d,) when D is given
  float* ddelta_bias = nullptr;        // (d,) when delta_bias is given
};

// Each returns cudaSuccess or the launch error; a null string from validate means "ok".
const char* selective_scan_validate(const ScanParams& p);
cudaError_t selective_scan_fwd(const ScanParams& p, cudaStream_t stream);
cudaError_t selective_scan_bwd(const ScanParams& p, cudaStream_t stream);
inline int selective_scan_num_chunks(int len) { return (len + kStateChunk - 1) / kStateChunk; }

struct StateUpdateParams {
  int batch = 0, dim = 0, dstate = 0, groups = 1;  // B, C: (b, g, n); g = 1 for (b, n)
  bool dt_softplus = false;
  DType dtype = DType::kFloat32;        // of x, dt, z, B, C, out
  DType state_dtype = DType::kFloat32;  // of state: float32 or the input dtype
  void* state = nullptr;                // (b, d, n), updated in place
  const void* x = nullptr;              // (b, d)
  const void* dt = nullptr;             // (b, d)
  const void* z = nullptr;              // optional (b, d)
  const void* B = nullptr;
  const void* C = nullptr;
  const float* A = nullptr;             // (d, n)
  const float* D = nullptr;             // optional (d,)
  const float* dt_bias = nullptr;       // optional (d,)
  void* out = nullptr;                  // (b, d)
};
cudaError_t selective_state_update(const StateUpdateParams& p, cudaStream_t stream);

struct Conv1dParams {
  int batch = 0, dim = 0, len = 0, width = 0;  // width 2..4
  bool silu = false;
  DType dtype = DType::kFloat32;  // of x, out, dout, dx
  const void* x = nullptr;        // (b, d, l)
  const float* weight = nullptr;  // (d, width)
  const float* bias = nullptr;    // optional (d,)
  const int* seq_idx = nullptr;   // optional (b, l) document ids
  void* out = nullptr;            // (b, d, l)
  const void* dout = nullptr;     // backward
  void* dx = nullptr;             // backward (b, d, l), fully written
  float* dweight = nullptr;       // backward, zero-filled by the caller (d, width)
  float* dbias = nullptr;         // backward, zero-filled by the caller (d,); optional
};
cudaError_t causal_conv1d_fwd(const Conv1dParams& p, cudaStream_t stream);
cudaError_t causal_conv1d_bwd(const Conv1dParams& p, cudaStream_t stream);

}  // namespace biomamba
