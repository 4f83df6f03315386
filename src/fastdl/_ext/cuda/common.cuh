/*
 * Shared by every fastdl .cu file: the error convention of the C ABI, launch geometry, the
 * dtype codes the Cython side passes in. Kernels are templates over float/double; launchers
 * are extern "C" functions returning a cudaError_t as int (0 = success) and taking the
 * caller's stream as a void * (the __cuda_array_interface__ values 1 and 2 are the handles
 * cudaStreamLegacy and cudaStreamPerThread, so the stream number passes through unchanged).
 */
#ifndef FASTDL_CUDA_COMMON_CUH
#define FASTDL_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>
#include "api.h"

#define FDL_CUDA_STREAM(s) ((cudaStream_t)(s))

/* Return the launch's error (configuration errors surface at once; faults at the next sync). */
#define FDL_CUDA_RETURN_LAUNCH() return (int)cudaGetLastError()
#define FDL_CUDA_TRY(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return (int)e_; } while (0)

/* Grid-stride loops: a grid sized to the device (a few blocks per SM), not to n. */
static inline unsigned fdl_cuda_grid(int64_t n, int threads) {
    int64_t blocks = (n + threads - 1) / threads;
    int dev = 0, sms = 80;
    if (cudaGetDevice(&dev) == cudaSuccess)
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    int64_t cap = (int64_t)sms * 8;
    if (blocks > cap) blocks = cap;
    return (unsigned)(blocks < 1 ? 1 : blocks);
}

#define FDL_GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

#endif
