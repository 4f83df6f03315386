/*
 * GEMM through cuBLAS, loaded at run time (blas.h), the bias fill, and the channel sums of
 * bias gradients.
 *
 * cuBLAS is column-major; fastdl's arrays are row-major. A row-major matrix with row stride ld
 * is the column-major storage of its transpose with the same ld, so the row-major product
 * C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: cuBLAS gets B first, m and n
 * swapped, and each operand's transpose flag unchanged. No operand is ever copied to
 * transpose it.
 *
 * Determinism: one handle per device, and, for each stream it runs on, a workspace of its
 * own (cuBLAS is bitwise reproducible per stream only when concurrent streams do not share
 * one). Math mode CUBLAS_DEFAULT_MATH: float32 is computed in FP32, never TF32, unless
 * fdl_cuda_blas_set_tf32(1).
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mutex>
#include "common.cuh"
#include "blas.h"

namespace {

// ---------------------------------------------------------------------------------------
// The few cuBLAS entry points fastdl calls, declared here (their C signatures in
// cublas_api.h; enums are ints in the C ABI) so that building needs no cuBLAS headers.

typedef void *Handle;
enum { OP_N = 0, OP_T = 1 };
enum { MATH_DEFAULT = 0, MATH_TF32 = 3 };
enum {
    ST_SUCCESS = 0, ST_NOT_INITIALIZED = 1, ST_ALLOC_FAILED = 3, ST_INVALID_VALUE = 7,
    ST_ARCH_MISMATCH = 8, ST_MAPPING_ERROR = 11, ST_EXECUTION_FAILED = 13,
    ST_INTERNAL_ERROR = 14, ST_NOT_SUPPORTED = 15, ST_LICENSE_ERROR = 16
};

typedef int (*CreateFn)(Handle *);
typedef int (*SetStreamFn)(Handle, cudaStream_t);
typedef int (*SetWorkspaceFn)(Handle, void *, size_t);
typedef int (*SetMathFn)(Handle, int);
typedef const char *(*StatusStringFn)(int);

template <typename T> struct GemmFns {
    typedef int (*Gemm)(Handle, int, int, int, int, int, const T *, const T *, int, const T *,
                        int, const T *, T *, int);
    typedef int (*Gemm64)(Handle, int, int, int64_t, int64_t, int64_t, const T *, const T *,
                          int64_t, const T *, int64_t, const T *, T *, int64_t);
    typedef int (*Batched)(Handle, int, int, int, int, int, const T *, const T *, int,
                           long long, const T *, int, long long, const T *, T *, int,
                           long long, int);
    typedef int (*Batched64)(Handle, int, int, int64_t, int64_t, int64_t, const T *,
                             const T *, int64_t, long long, const T *, int64_t, long long,
                             const T *, T *, int64_t, long long, int64_t);
    Gemm gemm;
    Gemm64 gemm64;        // optional (cuBLAS >= 12): dimensions past INT_MAX
    Batched batched;
    Batched64 batched64;  // optional
};

struct Lib {
    void *so;
    char path[1024];
    CreateFn create;
    SetStreamFn set_stream;
    SetWorkspaceFn set_workspace;   // optional: without it, no per-stream workspace
    SetMathFn set_math;
    StatusStringFn status_string;   // optional
    GemmFns<float> s;
    GemmFns<double> d;
};

Lib g_lib;
std::mutex g_mu;          // guards g_lib's loading and every handle's configuration
int g_allow_tf32 = 0;

// Handles are never destroyed: at interpreter exit the driver may already be gone (a
// destroy then crashes), and one handle per device is all fastdl ever makes.
const int MAX_DEVICES = 64;
const int MAX_STREAM_WS = 8;

struct StreamWorkspace {
    cudaStream_t stream;
    void *ptr;
    uint64_t used;
};

struct DeviceBlas {
    Handle handle;
    int math;
    bool configured;
    cudaStream_t stream;
    size_t ws_bytes;
    StreamWorkspace ws[MAX_STREAM_WS];
    int nws;
    uint64_t tick;
};

DeviceBlas g_dev[MAX_DEVICES];

void append(char *dst, int cap, const char *text) {
    if (cap <= 0) return;
    size_t used = strlen(dst);
    if ((int)used >= cap - 1) return;
    snprintf(dst + used, (size_t)cap - used, "%s", text);
}

void *sym(void *so, const char *name, bool required, char *missing, int missing_len) {
    void *p = dlsym(so, name);
    if (!p && required) {
        if (missing[0]) append(missing, missing_len, ", ");
        append(missing, missing_len, name);
    }
    return p;
}

// Resolve every entry point of one opened library; false (with the names missing) when a
// required one is absent, e.g. a libcublas too old for strided batches.
bool resolve(void *so, Lib *lib, char *missing, int missing_len) {
    missing[0] = 0;
    lib->create = (CreateFn)sym(so, "cublasCreate_v2", true, missing, missing_len);
    lib->set_stream = (SetStreamFn)sym(so, "cublasSetStream_v2", true, missing, missing_len);
    lib->set_workspace =
        (SetWorkspaceFn)sym(so, "cublasSetWorkspace_v2", false, missing, missing_len);
    lib->set_math = (SetMathFn)sym(so, "cublasSetMathMode", true, missing, missing_len);
    lib->status_string =
        (StatusStringFn)sym(so, "cublasGetStatusString", false, missing, missing_len);
    lib->s.gemm = (GemmFns<float>::Gemm)sym(so, "cublasSgemm_v2", true, missing, missing_len);
    lib->d.gemm = (GemmFns<double>::Gemm)sym(so, "cublasDgemm_v2", true, missing, missing_len);
    lib->s.batched = (GemmFns<float>::Batched)sym(so, "cublasSgemmStridedBatched", true,
                                                  missing, missing_len);
    lib->d.batched = (GemmFns<double>::Batched)sym(so, "cublasDgemmStridedBatched", true,
                                                   missing, missing_len);
    lib->s.gemm64 = (GemmFns<float>::Gemm64)sym(so, "cublasSgemm_v2_64", false, missing,
                                                missing_len);
    lib->d.gemm64 = (GemmFns<double>::Gemm64)sym(so, "cublasDgemm_v2_64", false, missing,
                                                 missing_len);
    lib->s.batched64 = (GemmFns<float>::Batched64)sym(so, "cublasSgemmStridedBatched_64",
                                                      false, missing, missing_len);
    lib->d.batched64 = (GemmFns<double>::Batched64)sym(so, "cublasDgemmStridedBatched_64",
                                                       false, missing, missing_len);
    return missing[0] == 0;
}

const char *own_status_string(int status) {
    switch (status) {
    case ST_SUCCESS: return "success";
    case ST_NOT_INITIALIZED: return "cuBLAS not initialized (or not loaded)";
    case ST_ALLOC_FAILED: return "cuBLAS could not allocate memory";
    case ST_INVALID_VALUE: return "invalid value passed to cuBLAS";
    case ST_ARCH_MISMATCH: return "the device does not support this cuBLAS operation";
    case ST_MAPPING_ERROR: return "cuBLAS could not access GPU memory";
    case ST_EXECUTION_FAILED: return "a cuBLAS kernel failed to launch or run";
    case ST_INTERNAL_ERROR: return "cuBLAS internal error";
    case ST_NOT_SUPPORTED: return "operation not supported by this cuBLAS (sizes past 2^31 "
                                  "need cuBLAS >= 12)";
    case ST_LICENSE_ERROR: return "cuBLAS license error";
    default: return "unknown cuBLAS status";
    }
}

// The workspace of one stream on one device (LRU among MAX_STREAM_WS); NULL when it cannot
// be allocated, which makes cuBLAS run without one (slower kernels, same determinism).
void *stream_workspace(DeviceBlas &d, cudaStream_t stream) {
    d.tick++;
    for (int i = 0; i < d.nws; ++i) {
        if (d.ws[i].stream == stream) {
            d.ws[i].used = d.tick;
            return d.ws[i].ptr;
        }
    }
    int slot = d.nws;
    if (d.nws == MAX_STREAM_WS) {
        slot = 0;
        for (int i = 1; i < d.nws; ++i)
            if (d.ws[i].used < d.ws[slot].used) slot = i;
        // Work queued on the evicted stream may still be using its workspace.
        cudaDeviceSynchronize();
        if (d.ws[slot].ptr) cudaFree(d.ws[slot].ptr);
    } else {
        d.nws++;
    }
    void *p = NULL;
    if (cudaMalloc(&p, d.ws_bytes) != cudaSuccess) {
        cudaGetLastError();   // clear the sticky-free allocation error
        p = NULL;
    }
    d.ws[slot].stream = stream;
    d.ws[slot].ptr = p;
    d.ws[slot].used = d.tick;
    return p;
}

// The calling thread's device handle, configured for `stream` and the math mode. Holds g_mu
// (the caller keeps it locked while it enqueues the GEMM).
int ready_handle(cudaStream_t stream, Handle *out) {
    if (!g_lib.so) return -ST_NOT_INITIALIZED;
    int dev = 0;
    FDL_CUDA_TRY(cudaGetDevice(&dev));
    if (dev < 0 || dev >= MAX_DEVICES) return (int)cudaErrorInvalidDevice;
    DeviceBlas &d = g_dev[dev];
    int st;
    if (!d.handle) {
        st = g_lib.create(&d.handle);
        if (st != ST_SUCCESS) {
            d.handle = NULL;
            return -st;
        }
        int major = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        // cuBLAS's recommended workspace: 32 MiB on Hopper and newer, 4 MiB before.
        d.ws_bytes = major >= 9 ? (size_t)32 << 20 : (size_t)4 << 20;
        d.math = -1;
        d.configured = false;
    }
    if (!d.configured || d.stream != stream) {
        st = g_lib.set_stream(d.handle, stream);
        if (st != ST_SUCCESS) return -st;
        // cublasSetStream resets the workspace to the shared default pool: give this stream
        // its own again.
        if (g_lib.set_workspace) {
            void *ws = stream_workspace(d, stream);
            st = g_lib.set_workspace(d.handle, ws, ws ? d.ws_bytes : 0);
            if (st != ST_SUCCESS) return -st;
        }
        d.stream = stream;
        d.configured = true;
    }
    int math = g_allow_tf32 ? MATH_TF32 : MATH_DEFAULT;
    if (d.math != math) {
        st = g_lib.set_math(d.handle, math);
        if (st != ST_SUCCESS) return -st;
        d.math = math;
    }
    *out = d.handle;
    return 0;
}

// ---------------------------------------------------------------------------------------
// Row-major request -> column-major cuBLAS call

struct ColMajorCall {
    int opa, opb;
    int64_t m, n, k;
    const void *a;
    int64_t lda, sa;
    const void *b;
    int64_t ldb, sb;
    void *c;
    int64_t ldc, sc;
    int64_t batch;
};

ColMajorCall colmajor_call(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                           const void *a, int64_t lda, int64_t sa, const void *b, int64_t ldb,
                           int64_t sb, void *c, int64_t ldc, int64_t sc, int64_t batch) {
    ColMajorCall q;
    q.opa = trans_b ? OP_T : OP_N;
    q.opb = trans_a ? OP_T : OP_N;
    q.m = n;
    q.n = m;
    q.k = k;
    q.a = b;
    q.lda = ldb;
    q.sa = sb;
    q.b = a;
    q.ldb = lda;
    q.sb = sa;
    q.c = c;
    q.ldc = ldc;
    q.sc = sc;
    q.batch = batch;
    return q;
}

int64_t max1(int64_t v) { return v > 1 ? v : 1; }

// cuBLAS's own argument rules for gemm: a plan that breaks one is a fastdl bug, reported
// as CUBLAS_STATUS_INVALID_VALUE by the device path and by its host twin alike.
bool colmajor_valid(const ColMajorCall &q) {
    if (q.m < 0 || q.n < 0 || q.k < 0 || q.batch < 0) return false;
    int64_t a_rows = q.opa == OP_N ? q.m : q.k;
    int64_t b_rows = q.opb == OP_N ? q.k : q.n;
    return q.lda >= max1(a_rows) && q.ldb >= max1(b_rows) && q.ldc >= max1(q.m);
}

template <typename T> int run_cublas(const GemmFns<T> &f, Handle h, const ColMajorCall &q,
                                     double alpha_d, double beta_d) {
    const T alpha = (T)alpha_d, beta = (T)beta_d;
    const T *A = (const T *)q.a;
    const T *B = (const T *)q.b;
    T *C = (T *)q.c;
    bool big = q.m > INT_MAX || q.n > INT_MAX || q.k > INT_MAX || q.lda > INT_MAX ||
               q.ldb > INT_MAX || q.ldc > INT_MAX || q.batch > INT_MAX;
    if (q.batch == 1) {
        if (!big)
            return f.gemm(h, q.opa, q.opb, (int)q.m, (int)q.n, (int)q.k, &alpha, A, (int)q.lda,
                          B, (int)q.ldb, &beta, C, (int)q.ldc);
        if (!f.gemm64) return ST_NOT_SUPPORTED;
        return f.gemm64(h, q.opa, q.opb, q.m, q.n, q.k, &alpha, A, q.lda, B, q.ldb, &beta, C,
                        q.ldc);
    }
    if (!big)
        return f.batched(h, q.opa, q.opb, (int)q.m, (int)q.n, (int)q.k, &alpha, A, (int)q.lda,
                         (long long)q.sa, B, (int)q.ldb, (long long)q.sb, &beta, C, (int)q.ldc,
                         (long long)q.sc, (int)q.batch);
    if (!f.batched64) return ST_NOT_SUPPORTED;
    return f.batched64(h, q.opa, q.opb, q.m, q.n, q.k, &alpha, A, q.lda, (long long)q.sa, B,
                       q.ldb, (long long)q.sb, &beta, C, q.ldc, (long long)q.sc, q.batch);
}

// The column-major contract cuBLAS implements, on host memory (double accumulation).
template <typename T> void colmajor_host(const ColMajorCall &q, double alpha, double beta) {
    for (int64_t bi = 0; bi < q.batch; ++bi) {
        const T *A = (const T *)q.a + bi * q.sa;
        const T *B = (const T *)q.b + bi * q.sb;
        T *C = (T *)q.c + bi * q.sc;
        for (int64_t j = 0; j < q.n; ++j) {
            for (int64_t i = 0; i < q.m; ++i) {
                double acc = 0.0;
                for (int64_t l = 0; l < q.k; ++l) {
                    double av = q.opa == OP_N ? (double)A[i + l * q.lda] : (double)A[l + i * q.lda];
                    double bv = q.opb == OP_N ? (double)B[l + j * q.ldb] : (double)B[j + l * q.ldb];
                    acc += av * bv;
                }
                T *cij = C + i + j * q.ldc;
                *cij = beta == 0.0 ? (T)(alpha * acc) : (T)(alpha * acc + beta * (double)*cij);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bias fill: y (outer, n, inner) = bias broadcast. Lines are rows of n (inner == 1: one value
// per column) or planes of inner (one value per plane); threads run along a line, so the
// writes are coalesced.

struct FillShape {
    int64_t lines, len, n;
    bool planes;
};

FillShape fill_shape(int64_t outer, int64_t n, int64_t inner) {
    FillShape s;
    s.planes = inner != 1;
    s.lines = s.planes ? outer * n : outer;
    s.len = s.planes ? inner : n;
    s.n = n;
    return s;
}

template <typename T>
__host__ __device__ inline void fill_element(T *y, const T *bias, const FillShape &s,
                                             int64_t line, int64_t i) {
    y[line * s.len + i] = s.planes ? bias[line % s.n] : bias[i];
}

template <typename T>
__global__ void fill_bias_kernel(T *__restrict__ y, const T *__restrict__ bias, FillShape s) {
    for (int64_t line = blockIdx.y; line < s.lines; line += gridDim.y)
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < s.len;
             i += (int64_t)gridDim.x * blockDim.x)
            fill_element(y, bias, s, line, i);
}

template <typename T>
int fill_bias_t(T *y, const T *bias, int64_t outer, int64_t n, int64_t inner, cudaStream_t st) {
    FillShape s = fill_shape(outer, n, inner);
    if (s.lines <= 0 || s.len <= 0) return 0;
    int64_t gx = (s.len + 255) / 256;
    if (gx > 64) gx = 64;
    int64_t gy = s.lines < 65535 ? s.lines : 65535;
    fill_bias_kernel<T><<<dim3((unsigned)gx, (unsigned)gy), 256, 0, st>>>(y, bias, s);
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
void fill_bias_host_t(T *y, const T *bias, int64_t outer, int64_t n, int64_t inner) {
    FillShape s = fill_shape(outer, n, inner);
    for (int64_t line = 0; line < s.lines; ++line)
        for (int64_t i = 0; i < s.len; ++i) fill_element(y, bias, s, line, i);
}

// ---------------------------------------------------------------------------------------
// Channel sums out[o] = sum_{a,p} x[a, o, p] (x of shape (A, O, B)), in two passes whose
// split depends on the shape alone:
//  * "columns" (B < 32, e.g. linear's db with B = 1): the O*B columns of the (A, O*B)
//    matrix in blocks of 32 columns x 8 row lanes; rows cut into `chunks` of `len` rows; a
//    block writes its chunk's column sums (partial[c][col]). Warps read 32 consecutive
//    columns of a row: coalesced.
//  * "planes" (B >= 32, conv's db): per channel, the A planes of B contiguous values laid
//    end to end, cut into `chunks` of `len` values; block (o, c) sums its piece with 256
//    threads striding along each plane (partial[c][o]).
// The second pass adds a channel's partials in chunk order (and, for 1 < B < 32, its B
// columns) with a fixed tree. Every sum is in double; no atomics.

const int COL_LANES = 8;
const int PLANE_THREADS = 256;
const int FINISH_THREADS = 256;

struct SumPlan {
    bool planes;
    int64_t A, O, B;
    int64_t cols;        // O * B
    int64_t colblocks;   // columns mode: blocks of 32 columns
    int64_t chunks, len;
};

SumPlan sum_plan(int64_t A, int64_t O, int64_t B) {
    SumPlan p;
    p.A = A;
    p.O = O;
    p.B = B;
    p.cols = O * B;
    p.planes = B >= 32;
    p.colblocks = (p.cols + 31) / 32;
    int64_t chunks;
    if (!p.planes) {
        // about 512 blocks in all, and at least 64 rows a chunk
        int64_t want = (512 + p.colblocks - 1) / p.colblocks;
        chunks = (A + 63) / 64;
        if (chunks > want) chunks = want;
        if (chunks < 1) chunks = 1;
        p.len = (A + chunks - 1) / chunks;
        p.chunks = (A + p.len - 1) / p.len;
    } else {
        // about 1024 blocks in all, and at least 2048 values a chunk
        int64_t total = A * B;
        int64_t want = (1024 + O - 1) / O;
        chunks = (total + 2047) / 2048;
        if (chunks > want) chunks = want;
        if (chunks > 65535) chunks = 65535;
        if (chunks < 1) chunks = 1;
        p.len = (total + chunks - 1) / chunks;
        p.chunks = (total + p.len - 1) / p.len;
    }
    return p;
}

int64_t partial_count(const SumPlan &p) { return p.planes ? p.chunks * p.O : p.chunks * p.cols; }

// One lane of a columns-mode block: rows r0 + lane, r0 + lane + 8, ... of its chunk.
template <typename T>
__host__ __device__ inline double column_lane_sum(const T *x, const SumPlan &p, int64_t col,
                                                  int64_t chunk, int lane) {
    double acc = 0.0;
    int64_t r0 = chunk * p.len, r1 = r0 + p.len < p.A ? r0 + p.len : p.A;
    for (int64_t r = r0 + lane; r < r1; r += COL_LANES) acc += (double)x[r * p.cols + col];
    return acc;
}

// One thread of a planes-mode block: within each plane segment of the chunk, the values
// t, t + 256, ... from the segment's start.
template <typename T>
__host__ __device__ inline double plane_thread_sum(const T *x, const SumPlan &p, int64_t o,
                                                   int64_t chunk, int t) {
    double acc = 0.0;
    int64_t idx = chunk * p.len, end = idx + p.len;
    if (end > p.A * p.B) end = p.A * p.B;
    while (idx < end) {
        int64_t a = idx / p.B, p0 = idx - a * p.B;
        int64_t seg = p.B - p0 < end - idx ? p.B - p0 : end - idx;
        const T *row = x + (a * p.O + o) * p.B + p0;
        for (int64_t q = t; q < seg; q += PLANE_THREADS) acc += (double)row[q];
        idx += seg;
    }
    return acc;
}

// Values of channel o for the finishing pass: (chunk, column-in-channel) pairs in order.
__host__ __device__ inline double finish_value(const double *partial, const SumPlan &p,
                                               int64_t o, int64_t idx) {
    if (p.planes) return partial[idx * p.O + o];
    int64_t c = idx / p.B, q = idx - c * p.B;
    return partial[c * p.cols + o * p.B + q];
}

__host__ __device__ inline int64_t finish_count(const SumPlan &p) {
    return p.planes ? p.chunks : p.chunks * p.B;
}

template <typename T>
__global__ void sum_columns_kernel(const T *__restrict__ x, SumPlan p,
                                   double *__restrict__ partial) {
    __shared__ double s[COL_LANES][33];
    int tx = threadIdx.x, lane = threadIdx.y;
    int64_t col = (int64_t)blockIdx.x * 32 + tx;
    int64_t chunk = blockIdx.y;
    s[lane][tx] = col < p.cols ? column_lane_sum(x, p, col, chunk, lane) : 0.0;
    __syncthreads();
    for (int h = COL_LANES / 2; h >= 1; h >>= 1) {
        if (lane < h) s[lane][tx] += s[lane + h][tx];
        __syncthreads();
    }
    if (lane == 0 && col < p.cols) partial[chunk * p.cols + col] = s[0][tx];
}

template <typename T>
__global__ void sum_planes_kernel(const T *__restrict__ x, SumPlan p,
                                  double *__restrict__ partial) {
    __shared__ double s[PLANE_THREADS];
    int t = threadIdx.x;
    int64_t chunk = blockIdx.y;
    for (int64_t o = blockIdx.x; o < p.O; o += gridDim.x) {
        s[t] = plane_thread_sum(x, p, o, chunk, t);
        __syncthreads();
        for (int h = PLANE_THREADS / 2; h >= 1; h >>= 1) {
            if (t < h) s[t] += s[t + h];
            __syncthreads();
        }
        if (t == 0) partial[chunk * p.O + o] = s[0];
        __syncthreads();
    }
}

template <typename T>
__global__ void sum_finish_kernel(const double *__restrict__ partial, SumPlan p,
                                  T *__restrict__ out) {
    __shared__ double s[FINISH_THREADS];
    int t = threadIdx.x;
    int64_t count = finish_count(p);
    for (int64_t o = blockIdx.x; o < p.O; o += gridDim.x) {
        double acc = 0.0;
        for (int64_t idx = t; idx < count; idx += FINISH_THREADS)
            acc += finish_value(partial, p, o, idx);
        s[t] = acc;
        __syncthreads();
        for (int h = FINISH_THREADS / 2; h >= 1; h >>= 1) {
            if (t < h) s[t] += s[t + h];
            __syncthreads();
        }
        if (t == 0) out[o] = (T)s[0];
        __syncthreads();
    }
}

template <typename T>
__global__ void zero_kernel(T *__restrict__ out, int64_t n) {
    FDL_GRID_STRIDE(i, n) out[i] = (T)0;
}

template <typename T>
int sum_aob_t(const T *x, int64_t A, int64_t O, int64_t B, T *out, cudaStream_t st) {
    if (O <= 0) return 0;
    if (A <= 0 || B <= 0) {
        zero_kernel<T><<<fdl_cuda_grid(O, 256), 256, 0, st>>>(out, O);
        FDL_CUDA_RETURN_LAUNCH();
    }
    SumPlan p = sum_plan(A, O, B);
    double *partial = NULL;
    FDL_CUDA_TRY(cudaMallocAsync((void **)&partial, (size_t)partial_count(p) * sizeof(double), st));
    if (p.planes) {
        int64_t gx = p.O < 65535 ? p.O : 65535;
        dim3 grid((unsigned)gx, (unsigned)p.chunks);
        sum_planes_kernel<T><<<grid, PLANE_THREADS, 0, st>>>(x, p, partial);
    } else {
        dim3 grid((unsigned)p.colblocks, (unsigned)p.chunks);
        sum_columns_kernel<T><<<grid, dim3(32, COL_LANES), 0, st>>>(x, p, partial);
    }
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        int64_t gx = p.O < 65535 ? p.O : 65535;
        sum_finish_kernel<T><<<(unsigned)gx, FINISH_THREADS, 0, st>>>(partial, p, out);
        e = cudaGetLastError();
    }
    cudaFreeAsync(partial, st);
    return (int)e;
}

// Host twin: the same lanes, threads and trees, in the same order.
void tree_host(double *s, int n) {
    for (int h = n / 2; h >= 1; h >>= 1)
        for (int t = 0; t < h; ++t) s[t] += s[t + h];
}

template <typename T>
void sum_aob_host_t(const T *x, int64_t A, int64_t O, int64_t B, T *out) {
    if (O <= 0) return;
    if (A <= 0 || B <= 0) {
        for (int64_t o = 0; o < O; ++o) out[o] = (T)0;
        return;
    }
    SumPlan p = sum_plan(A, O, B);
    double *partial = (double *)malloc((size_t)partial_count(p) * sizeof(double));
    double s[PLANE_THREADS > FINISH_THREADS ? PLANE_THREADS : FINISH_THREADS];
    if (p.planes) {
        for (int64_t c = 0; c < p.chunks; ++c)
            for (int64_t o = 0; o < p.O; ++o) {
                for (int t = 0; t < PLANE_THREADS; ++t) s[t] = plane_thread_sum(x, p, o, c, t);
                tree_host(s, PLANE_THREADS);
                partial[c * p.O + o] = s[0];
            }
    } else {
        for (int64_t c = 0; c < p.chunks; ++c)
            for (int64_t col = 0; col < p.cols; ++col) {
                double lanes[COL_LANES];
                for (int l = 0; l < COL_LANES; ++l) lanes[l] = column_lane_sum(x, p, col, c, l);
                tree_host(lanes, COL_LANES);
                partial[c * p.cols + col] = lanes[0];
            }
    }
    int64_t count = finish_count(p);
    for (int64_t o = 0; o < p.O; ++o) {
        for (int t = 0; t < FINISH_THREADS; ++t) {
            double acc = 0.0;
            for (int64_t idx = t; idx < count; idx += FINISH_THREADS)
                acc += finish_value(partial, p, o, idx);
            s[t] = acc;
        }
        tree_host(s, FINISH_THREADS);
        out[o] = (T)s[0];
    }
    free(partial);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// C ABI

extern "C" int fdl_cuda_blas_load(const char *const *paths, int npaths, char *loaded,
                                  int loaded_len, char *err, int err_len) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (err_len > 0) err[0] = 0;
    if (!g_lib.so) {
        char missing[512];
        for (int i = 0; i < npaths && !g_lib.so; ++i) {
            dlerror();
            void *so = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
            if (!so) {
                const char *why = dlerror();   // names the file already
                if (!why) {
                    append(err, err_len, paths[i]);
                    why = ": cannot be opened";
                }
                append(err, err_len, why);
                append(err, err_len, "\n");
                continue;
            }
            Lib lib;
            memset(&lib, 0, sizeof(lib));
            if (!resolve(so, &lib, missing, (int)sizeof(missing))) {
                append(err, err_len, paths[i]);
                append(err, err_len, ": lacks ");
                append(err, err_len, missing);
                append(err, err_len, "\n");
                dlclose(so);
                continue;
            }
            lib.so = so;
            snprintf(lib.path, sizeof(lib.path), "%s", paths[i]);
            g_lib = lib;
        }
    }
    if (!g_lib.so) return 1;
    if (loaded_len > 0) snprintf(loaded, (size_t)loaded_len, "%s", g_lib.path);
    return 0;
}

extern "C" int fdl_cuda_blas_is_loaded(void) {
    std::lock_guard<std::mutex> lock(g_mu);
    return g_lib.so != NULL;
}

extern "C" const char *fdl_cuda_blas_status_string(int status) {
    if (g_lib.status_string) {
        const char *s = g_lib.status_string(status);
        if (s && s[0]) return s;
    }
    return own_status_string(status);
}

extern "C" void fdl_cuda_blas_set_tf32(int allow) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_allow_tf32 = allow ? 1 : 0;
}

extern "C" int fdl_cuda_blas_get_tf32(void) {
    std::lock_guard<std::mutex> lock(g_mu);
    return g_allow_tf32;
}

extern "C" int fdl_cuda_gemm(int dtype, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                             double alpha, const void *a, int64_t lda, int64_t stride_a,
                             const void *b, int64_t ldb, int64_t stride_b, double beta, void *c,
                             int64_t ldc, int64_t stride_c, int64_t batch, void *stream) {
    if (dtype != FDL_CUDA_F32 && dtype != FDL_CUDA_F64) return -ST_INVALID_VALUE;
    ColMajorCall q = colmajor_call(trans_a, trans_b, m, n, k, a, lda, stride_a, b, ldb, stride_b,
                                   c, ldc, stride_c, batch);
    if (!colmajor_valid(q)) return -ST_INVALID_VALUE;
    if (q.m == 0 || q.n == 0 || q.batch == 0) return 0;
    std::lock_guard<std::mutex> lock(g_mu);
    Handle h = NULL;
    int err = ready_handle(FDL_CUDA_STREAM(stream), &h);
    if (err) return err;
    int st = dtype == FDL_CUDA_F32 ? run_cublas(g_lib.s, h, q, alpha, beta)
                                   : run_cublas(g_lib.d, h, q, alpha, beta);
    return st == ST_SUCCESS ? 0 : -st;
}

extern "C" int fdl_cuda_gemm_host(int dtype, int trans_a, int trans_b, int64_t m, int64_t n,
                                  int64_t k, double alpha, const void *a, int64_t lda,
                                  int64_t stride_a, const void *b, int64_t ldb, int64_t stride_b,
                                  double beta, void *c, int64_t ldc, int64_t stride_c,
                                  int64_t batch) {
    if (dtype != FDL_CUDA_F32 && dtype != FDL_CUDA_F64) return -ST_INVALID_VALUE;
    ColMajorCall q = colmajor_call(trans_a, trans_b, m, n, k, a, lda, stride_a, b, ldb, stride_b,
                                   c, ldc, stride_c, batch);
    if (!colmajor_valid(q)) return -ST_INVALID_VALUE;
    if (q.m == 0 || q.n == 0 || q.batch == 0) return 0;
    if (dtype == FDL_CUDA_F32)
        colmajor_host<float>(q, alpha, beta);
    else
        colmajor_host<double>(q, alpha, beta);
    return 0;
}

extern "C" int fdl_cuda_fill_bias(int dtype, void *y, const void *bias, int64_t outer, int64_t n,
                                  int64_t inner, void *stream) {
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    if (dtype == FDL_CUDA_F32)
        return fill_bias_t((float *)y, (const float *)bias, outer, n, inner, st);
    if (dtype == FDL_CUDA_F64)
        return fill_bias_t((double *)y, (const double *)bias, outer, n, inner, st);
    return (int)cudaErrorInvalidValue;
}

extern "C" int fdl_cuda_fill_bias_host(int dtype, void *y, const void *bias, int64_t outer,
                                       int64_t n, int64_t inner) {
    if (dtype == FDL_CUDA_F32)
        fill_bias_host_t((float *)y, (const float *)bias, outer, n, inner);
    else if (dtype == FDL_CUDA_F64)
        fill_bias_host_t((double *)y, (const double *)bias, outer, n, inner);
    else
        return (int)cudaErrorInvalidValue;
    return 0;
}

extern "C" int fdl_cuda_sum_aob(int dtype, const void *x, int64_t A, int64_t O, int64_t B,
                                void *out, void *stream) {
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    if (dtype == FDL_CUDA_F32) return sum_aob_t((const float *)x, A, O, B, (float *)out, st);
    if (dtype == FDL_CUDA_F64) return sum_aob_t((const double *)x, A, O, B, (double *)out, st);
    return (int)cudaErrorInvalidValue;
}

extern "C" int fdl_cuda_sum_aob_host(int dtype, const void *x, int64_t A, int64_t O, int64_t B,
                                     void *out) {
    if (dtype == FDL_CUDA_F32)
        sum_aob_host_t((const float *)x, A, O, B, (float *)out);
    else if (dtype == FDL_CUDA_F64)
        sum_aob_host_t((const double *)x, A, O, B, (double *)out);
    else
        return (int)cudaErrorInvalidValue;
    return 0;
}
