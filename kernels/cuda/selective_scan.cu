// Launchers of the selective scan kernels (selective_scan.cuh): pick the per-thread state count,
// the lane/channel split and the staged chunk length, then launch. Torch-free.
#include "selective_scan.cuh"

namespace biomamba {
namespace {

int next_pow2(int v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }

int states_per_lane(int dstate) { return dstate <= 128 ? 4 : 8; }

ScanLayout make_layout(const ScanParams& p, int ns) {
  ScanLayout L;
  L.nl = next_pow2((p.dstate + ns - 1) / ns);  // <= 32 because dstate <= 32 * ns
  L.np = ns * L.nl;
  L.dt = kThreads / L.nl;
  const int gb = p.b_var ? p.b_groups : 1, gc = p.c_var ? p.c_groups : 1;
  L.groups = gb / gcd(gb, gc) * gc;  // divides dim because gb and gc do
  L.dg = p.dim / L.groups;
  L.tc = kStateChunk;
  return L;
}

constexpr int kDefaultSmem = 48 * 1024;

int max_smem_optin() {
  int device = 0, bytes = kDefaultSmem;
  if (cudaGetDevice(&device) == cudaSuccess)
    cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  return bytes;
}

template <typename Kernel>
cudaError_t launch(Kernel kernel, const ScanParams& p, const ScanLayout& L, size_t smem,
                   cudaStream_t stream) {
  if (smem > (size_t)kDefaultSmem) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess) return err;
  }
  const dim3 grid((L.dg + L.dt - 1) / L.dt, L.groups, p.batch);
  kernel<<<grid, kThreads, smem, stream>>>(p, L);
  return cudaGetLastError();
}

template <int NS>
cudaError_t fwd_ns(const ScanParams& p, cudaStream_t stream) {
  ScanLayout L = make_layout(p, NS);
  for (int tc : {64, 32, 16}) {  // longest staged chunk that fits the default shared memory
    L.tc = tc;
    if (ScanSmem::fwd_floats(L) * sizeof(float) <= (size_t)kDefaultSmem) break;
  }
  const size_t smem = ScanSmem::fwd_floats(L) * sizeof(float);
  if (smem > (size_t)max_smem_optin()) return cudaErrorInvalidConfiguration;
  BIOMAMBA_DISPATCH_DTYPE(p.dtype, T, return launch(scan_fwd_kernel<NS, T>, p, L, smem, stream));
  return cudaErrorInvalidValue;
}

template <int NS>
cudaError_t bwd_ns(const ScanParams& p, cudaStream_t stream) {
  ScanLayout L = make_layout(p, NS);
  L.tc = 16;
  if (ScanSmem::bwd_floats(L, NS) * sizeof(float) > (size_t)kDefaultSmem) L.tc = 8;
  const size_t smem = ScanSmem::bwd_floats(L, NS) * sizeof(float);
  if (smem > (size_t)max_smem_optin()) return cudaErrorInvalidConfiguration;
  BIOMAMBA_DISPATCH_DTYPE(p.dtype, T, return launch(scan_bwd_kernel<NS, T>, p, L, smem, stream));
  return cudaErrorInvalidValue;
}

}  // namespace

const char* selective_scan_validate(const ScanParams& p) {
  if (p.batch < 1 || p.dim < 1 || p.len < 1) return "batch, dim and len must be positive";
  if (p.batch > 65535) return "batch must be at most 65535 (grid z)";
  if (p.dstate < 1 || p.dstate > kMaxDState) return "d_state must be in 1..256";
  if (p.b_var && (p.b_groups < 1 || p.dim % p.b_groups)) return "groups of B must divide dim";
  if (p.c_var && (p.c_groups < 1 || p.dim % p.c_groups)) return "groups of C must divide dim";
  if (!p.u || !p.delta || !p.A || !p.B || !p.C) return "u, delta, A, B and C are required";
  return nullptr;
}

cudaError_t selective_scan_fwd(const ScanParams& p, cudaStream_t stream) {
  if (selective_scan_validate(p) || !p.out || !p.last_state) return cudaErrorInvalidValue;
  return states_per_lane(p.dstate) == 4 ? fwd_ns<4>(p, stream) : fwd_ns<8>(p, stream);
}

cudaError_t selective_scan_bwd(const ScanParams& p, cudaStream_t stream) {
  if (selective_scan_validate(p) || !p.chunk_states || !p.dout || !p.du || !p.ddelta || !p.dA ||
      !p.dB || !p.dC || (p.z && !p.dz) || (p.D && !p.dD) || (p.delta_bias && !p.ddelta_bias))
    return cudaErrorInvalidValue;
  return states_per_lane(p.dstate) == 4 ? bwd_ns<4>(p, stream) : bwd_ns<8>(p, stream);
}

}  // namespace biomamba
