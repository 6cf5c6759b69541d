// Small device helpers shared by the kernels: dtype conversion, softplus, lane-group sums.
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace biomamba {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T> __device__ __forceinline__ float load(const void* base, long long i) {
  return to_float(static_cast<const T*>(base)[i]);
}
template <typename T> __device__ __forceinline__ void store(void* base, long long i, float v) {
  static_cast<T*>(base)[i] = from_float<T>(v);
}

// torch.nn.functional.softplus with its default threshold 20 (identity above it).
__device__ __forceinline__ float softplus(float x) { return x <= 20.f ? log1pf(expf(x)) : x; }
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// Sum over the `width` consecutive lanes (a power of two <= 32) that hold one channel; every lane
// of the warp must call it with the same width. All lanes of the group get the sum.
__device__ __forceinline__ float lane_group_sum(float v, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Dispatch a templated call on the input dtype.
#define BIOMAMBA_DISPATCH_DTYPE(dtype, T, ...)                           \
  switch (dtype) {                                                      \
    case DType::kFloat32: { using T = float; __VA_ARGS__; break; }      \
    case DType::kFloat16: { using T = __half; __VA_ARGS__; break; }     \
    case DType::kBFloat16: { using T = __nv_bfloat16; __VA_ARGS__; break; } \
  }

}  // namespace biomamba
