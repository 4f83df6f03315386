/* The device runtime behind fastdl._ext._cuda: devices, memory, copies (api.h). */
#include <string.h>
#include "common.cuh"

extern "C" const char *fdl_cuda_error_string(int err) {
    return cudaGetErrorString((cudaError_t)err);
}

extern "C" int fdl_cuda_device_count(int *count) {
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e != cudaSuccess) *count = 0;
    return (int)e;
}

extern "C" int fdl_cuda_versions(int *runtime, int *driver) {
    *runtime = 0;
    *driver = 0;
    cudaRuntimeGetVersion(runtime);
    return (int)cudaDriverGetVersion(driver);
}

extern "C" int fdl_cuda_device_info(int dev, char *name, int name_len, int *major, int *minor,
                                    size_t *total_mem, int *sm_count) {
    cudaDeviceProp p;
    FDL_CUDA_TRY(cudaGetDeviceProperties(&p, dev));
    strncpy(name, p.name, (size_t)name_len - 1);
    name[name_len - 1] = 0;
    *major = p.major;
    *minor = p.minor;
    *total_mem = p.totalGlobalMem;
    *sm_count = p.multiProcessorCount;
    return 0;
}

extern "C" int fdl_cuda_current_device(int *dev) { return (int)cudaGetDevice(dev); }

extern "C" int fdl_cuda_pointer_device(const void *p, int *dev, int *is_device) {
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) return (int)e;
    *dev = a.device;
    *is_device = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
    return 0;
}

/* Stream-ordered allocation: the driver's pool makes the temporaries of an op cheap. */
extern "C" int fdl_cuda_malloc(void **p, size_t nbytes, void *stream) {
    *p = NULL;
    if (nbytes == 0) nbytes = 1;
    return (int)cudaMallocAsync(p, nbytes, FDL_CUDA_STREAM(stream));
}

extern "C" int fdl_cuda_free(void *p, void *stream) {
    if (!p) return 0;
    return (int)cudaFreeAsync(p, FDL_CUDA_STREAM(stream));
}

extern "C" int fdl_cuda_memcpy(void *dst, const void *src, size_t nbytes, int kind, void *stream) {
    if (nbytes == 0) return 0;
    return (int)cudaMemcpyAsync(dst, src, nbytes, (cudaMemcpyKind)kind, FDL_CUDA_STREAM(stream));
}

extern "C" int fdl_cuda_stream_sync(void *stream) {
    return (int)cudaStreamSynchronize(FDL_CUDA_STREAM(stream));
}

extern "C" int fdl_cuda_device_sync(void) { return (int)cudaDeviceSynchronize(); }

extern "C" int fdl_cuda_memset(void *dst, int value, size_t nbytes, void *stream) {
    if (nbytes == 0) return 0;
    return (int)cudaMemsetAsync(dst, value, nbytes, FDL_CUDA_STREAM(stream));
}

struct StridedView {
    int ndim;
    int64_t shape[FDL_CUDA_MAXDIM];
    int64_t strides[FDL_CUDA_MAXDIM];
};

template <typename T>
__global__ void strided_gather(T *__restrict__ dst, const char *__restrict__ src, StridedView v,
                               int64_t n) {
    FDL_GRID_STRIDE(i, n) {
        int64_t rem = i, off = 0;
        for (int d = v.ndim - 1; d >= 0; --d) {
            int64_t idx = rem % v.shape[d];
            rem /= v.shape[d];
            off += idx * v.strides[d];
        }
        dst[i] = *(const T *)(src + off);
    }
}

extern "C" int fdl_cuda_strided_copy(void *dst, const void *src, int ndim, const int64_t *shape,
                                     const int64_t *strides_bytes, int itemsize, void *stream) {
    if (ndim > FDL_CUDA_MAXDIM) return (int)cudaErrorInvalidValue;
    StridedView v;
    v.ndim = ndim;
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) {
        v.shape[d] = shape[d];
        v.strides[d] = strides_bytes[d];
        n *= shape[d];
    }
    if (n == 0) return 0;
    unsigned grid = fdl_cuda_grid(n, 256);
    cudaStream_t s = FDL_CUDA_STREAM(stream);
    switch (itemsize) {
    case 1: strided_gather<uint8_t><<<grid, 256, 0, s>>>((uint8_t *)dst, (const char *)src, v, n); break;
    case 2: strided_gather<uint16_t><<<grid, 256, 0, s>>>((uint16_t *)dst, (const char *)src, v, n); break;
    case 4: strided_gather<uint32_t><<<grid, 256, 0, s>>>((uint32_t *)dst, (const char *)src, v, n); break;
    case 8: strided_gather<uint64_t><<<grid, 256, 0, s>>>((uint64_t *)dst, (const char *)src, v, n); break;
    default: return (int)cudaErrorInvalidValue;
    }
    FDL_CUDA_RETURN_LAUNCH();
}
