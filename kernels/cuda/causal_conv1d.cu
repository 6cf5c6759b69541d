// Launchers of the causal conv1d kernels (causal_conv1d.cuh). Torch-free.
#include "causal_conv1d.cuh"

namespace biomamba {
namespace {

bool conv_params_ok(const Conv1dParams& p) {
  return p.batch >= 1 && p.dim >= 1 && p.len >= 1 && p.width >= 2 && p.width <= 4 && p.x && p.weight;
}

unsigned elementwise_blocks(const Conv1dParams& p) {
  const long long total = (long long)p.batch * p.dim * p.len;
  const long long blocks = (total + kConvThreads - 1) / kConvThreads;
  return (unsigned)(blocks < 65535LL * 32 ? blocks : 65535LL * 32);  // grid-stride loop covers the rest
}

#define BIOMAMBA_DISPATCH_WIDTH(width, W, ...)      \
  switch (width) {                                  \
    case 2: { constexpr int W = 2; __VA_ARGS__; break; } \
    case 3: { constexpr int W = 3; __VA_ARGS__; break; } \
    case 4: { constexpr int W = 4; __VA_ARGS__; break; } \
  }

}  // namespace

cudaError_t causal_conv1d_fwd(const Conv1dParams& p, cudaStream_t stream) {
  if (!conv_params_ok(p) || !p.out) return cudaErrorInvalidValue;
  const unsigned blocks = elementwise_blocks(p);
  BIOMAMBA_DISPATCH_DTYPE(p.dtype, T, BIOMAMBA_DISPATCH_WIDTH(p.width, W,
      conv_fwd_kernel<W, T><<<blocks, kConvThreads, 0, stream>>>(p)));
  return cudaGetLastError();
}

cudaError_t causal_conv1d_bwd(const Conv1dParams& p, cudaStream_t stream) {
  if (!conv_params_ok(p) || !p.dout || !p.dx || !p.dweight) return cudaErrorInvalidValue;
  if (p.dim > 2147483647 || p.batch > 65535) return cudaErrorInvalidValue;
  const unsigned blocks = elementwise_blocks(p);
  const dim3 grid_dw(p.dim, p.batch);
  BIOMAMBA_DISPATCH_DTYPE(p.dtype, T, BIOMAMBA_DISPATCH_WIDTH(p.width, W, {
      conv_bwd_dx_kernel<W, T><<<blocks, kConvThreads, 0, stream>>>(p);
      conv_bwd_dw_kernel<W, T><<<grid_dw, kConvThreads, 0, stream>>>(p);
  }));
  return cudaGetLastError();
}

}  // namespace biomamba
