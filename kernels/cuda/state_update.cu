// Launcher of the one-step state update (state_update.cuh). Torch-free.
#include "state_update.cuh"

namespace biomamba {

cudaError_t selective_state_update(const StateUpdateParams& p, cudaStream_t stream) {
  if (p.batch < 1 || p.batch > 65535 || p.dim < 1 || p.dstate < 1 || p.dstate > kMaxDState || p.groups < 1 ||
      p.dim % p.groups || !p.state || !p.x || !p.dt || !p.B || !p.C || !p.A || !p.out)
    return cudaErrorInvalidValue;
  if (p.state_dtype != DType::kFloat32 && p.state_dtype != p.dtype) return cudaErrorInvalidValue;
  int nl = 1;
  while (nl < p.dstate && nl < 32) nl *= 2;
  const dim3 grid((p.dim + kUpdateThreads / nl - 1) / (kUpdateThreads / nl), p.batch);
  BIOMAMBA_DISPATCH_DTYPE(p.dtype, T, {
    if (p.state_dtype == DType::kFloat32)
      state_update_kernel<T, float><<<grid, kUpdateThreads, 0, stream>>>(p, nl);
    else
      state_update_kernel<T, T><<<grid, kUpdateThreads, 0, stream>>>(p, nl);
  });
  return cudaGetLastError();
}

}  // namespace biomamba
