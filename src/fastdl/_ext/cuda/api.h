/*
 * The C ABI between the Cython module fastdl._ext._cuda and the .cu sources: the device
 * runtime (devices, memory, streams, strided copies). Every function returns a cudaError_t as
 * int (0 = success); streams are passed as void * (see common.cuh). Each op family declares
 * its launchers in its own header beside this one (elementwise.h, norm.h, ...).
 */
#ifndef FASTDL_CUDA_API_H
#define FASTDL_CUDA_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dtype codes shared by every launcher */
#define FDL_CUDA_F32 0
#define FDL_CUDA_F64 1
#define FDL_CUDA_I64 2
#define FDL_CUDA_I32 3
#define FDL_CUDA_U8 4
#define FDL_CUDA_BOOL 5

#define FDL_CUDA_MAXDIM 32

const char *fdl_cuda_error_string(int err);
int fdl_cuda_device_count(int *count);
int fdl_cuda_versions(int *runtime, int *driver);
int fdl_cuda_device_info(int dev, char *name, int name_len, int *major, int *minor,
                         size_t *total_mem, int *sm_count);
int fdl_cuda_current_device(int *dev);
int fdl_cuda_pointer_device(const void *p, int *dev, int *is_device);
int fdl_cuda_malloc(void **p, size_t nbytes, void *stream);
int fdl_cuda_free(void *p, void *stream);
int fdl_cuda_memcpy(void *dst, const void *src, size_t nbytes, int kind, void *stream);
int fdl_cuda_stream_sync(void *stream);
int fdl_cuda_device_sync(void);
int fdl_cuda_memset(void *dst, int value, size_t nbytes, void *stream);
/* dst (C-contiguous) = src viewed through shape and byte strides (any sign); itemsize 1..8 */
int fdl_cuda_strided_copy(void *dst, const void *src, int ndim, const int64_t *shape,
                          const int64_t *strides_bytes, int itemsize, void *stream);

#ifdef __cplusplus
}
#endif
#endif
