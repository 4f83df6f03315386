/*
 * Philox4x32-10 for the GPU, the same generator and the same stream as the CPU
 * (include/fastdl/philox.h, whose header comment is the specification):
 *
 *   round: (hi0, lo0) = 0xD2511F53 * c0, (hi1, lo1) = 0xCD9E8D57 * c2 (32x32 -> 64 bits),
 *          (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0),
 *          the key bumped by (0x9E3779B9, 0xBB67AE85) between the ten rounds;
 *   stream: word i of seed is word i % 4 of the block with counter
 *           (lo32(i / 4), hi32(i / 4), 0, 0) and key (lo32(seed), hi32(seed)).
 *
 * One source for both sides: the widening products are written as 64-bit multiplies of
 * 32-bit values, which nvcc compiles to one IMAD.WIDE.U32 each, so the host test shim
 * (_host_philox_words) runs the very code the kernels run.
 */
#ifndef FASTDL_CUDA_PHILOX_CUH
#define FASTDL_CUDA_PHILOX_CUH

#include <stdint.h>

#ifndef FDL_CU_HD
#define FDL_CU_HD __host__ __device__ __forceinline__
#endif

/* #pragma unroll for the device pass only: the host pass of these __host__ __device__
   bodies (the test shims) would warn about an unknown pragma under -Wall */
#ifndef FDL_CU_UNROLL
#ifdef __CUDA_ARCH__
#define FDL_CU_UNROLL _Pragma("unroll")
#else
#define FDL_CU_UNROLL
#endif
#endif

#define FDL_CU_PHILOX_M0 0xD2511F53u
#define FDL_CU_PHILOX_M1 0xCD9E8D57u
#define FDL_CU_PHILOX_W0 0x9E3779B9u
#define FDL_CU_PHILOX_W1 0xBB67AE85u

struct FdlCuPhilox {
    uint32_t w[4];
};

/* One Philox4x32 round on the counter (c0, c1, c2, c3) under the round key (k0, k1). */
FDL_CU_HD void fdl_cu_philox_round(uint32_t &c0, uint32_t &c1, uint32_t &c2, uint32_t &c3,
                                   uint32_t k0, uint32_t k1) {
    uint64_t p0 = (uint64_t)c0 * FDL_CU_PHILOX_M0;
    uint64_t p1 = (uint64_t)c2 * FDL_CU_PHILOX_M1;
    c0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    c2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
}

/* Philox4x32-10 of counter c under key (k0, k1): ten rounds, the key bumped between them
   (a bump after the last round would be unused). */
FDL_CU_HD FdlCuPhilox fdl_cu_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                           uint32_t k0, uint32_t k1) {
    FDL_CU_UNROLL
    for (int r = 0; r < 10; ++r) {
        fdl_cu_philox_round(c0, c1, c2, c3, k0, k1);
        k0 += FDL_CU_PHILOX_W0;
        k1 += FDL_CU_PHILOX_W1;
    }
    FdlCuPhilox out = {{c0, c1, c2, c3}};
    return out;
}

/* Words 4 b .. 4 b + 3 of the stream of seed. */
FDL_CU_HD FdlCuPhilox fdl_cu_philox_block(uint64_t seed, uint64_t b) {
    return fdl_cu_philox4x32_10((uint32_t)b, (uint32_t)(b >> 32), 0u, 0u, (uint32_t)seed,
                                (uint32_t)(seed >> 32));
}

#endif
