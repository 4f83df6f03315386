/*
 * Column sums of a row-major panel, used for the bias gradient (db = dy.sum(axis=0)).
 *
 * Accuracy: rows are summed in blocks of FDL_COLSUM_BLOCK, and block sums are merged
 * pairwise (a binary counter over blocks), so the error grows like O(log n) rather than
 * O(n) as in NumPy's row-by-row accumulation along axis 0.
 * Determinism: the order of additions depends only on the number of rows, never on the
 * thread count; callers parallelise over column panels, each summed by one thread.
 */
#ifndef FASTDL_REDUCE_H
#define FASTDL_REDUCE_H

#include <string.h>
#include "config.h"

#define FDL_COLSUM_BLOCK 64

/* Stack for the pairwise merge: level l holds a partial sum over 2^l blocks. */
#define FDL_DEFINE_COLSUM(T, SUFFIX)                                                      \
FDL_DISPATCH static void fdl_colsum_##SUFFIX(const T *FDL_RESTRICT x, ptrdiff_t rows,     \
                                             ptrdiff_t cols, ptrdiff_t ld,                \
                                             T *FDL_RESTRICT out, T *FDL_RESTRICT scratch)\
{                                                                                         \
    /* scratch: (1 + bit_length(ceil(rows / FDL_COLSUM_BLOCK))) * cols elements */      \
    T *block = scratch;                                                                   \
    T *stack = scratch + cols;                                                            \
    unsigned long long nblocks = 0;                                                       \
    int depth = 0;                                                                        \
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += FDL_COLSUM_BLOCK) {                           \
        ptrdiff_t r1 = r0 + FDL_COLSUM_BLOCK < rows ? r0 + FDL_COLSUM_BLOCK : rows;       \
        const T *row = x + r0 * ld;                                                       \
        for (ptrdiff_t j = 0; j < cols; ++j) block[j] = row[j];                           \
        for (ptrdiff_t r = r0 + 1; r < r1; ++r) {                                         \
            row = x + r * ld;                                                             \
            for (ptrdiff_t j = 0; j < cols; ++j) block[j] += row[j];                      \
        }                                                                                 \
        /* merge equal-sized partial sums, as a binary counter carries */                 \
        unsigned long long carry = nblocks;                                               \
        while (carry & 1ULL) {                                                            \
            T *top = stack + (ptrdiff_t)(depth - 1) * cols;                               \
            for (ptrdiff_t j = 0; j < cols; ++j) block[j] += top[j];                      \
            --depth;                                                                      \
            carry >>= 1;                                                                  \
        }                                                                                 \
        memcpy(stack + (ptrdiff_t)depth * cols, block, (size_t)cols * sizeof(T));         \
        ++depth;                                                                          \
        ++nblocks;                                                                        \
    }                                                                                     \
    if (depth == 0) {                                                                     \
        for (ptrdiff_t j = 0; j < cols; ++j) out[j] = (T)0;                               \
        return;                                                                           \
    }                                                                                     \
    /* fold what is left, smallest partial sums first */                                  \
    memcpy(block, stack + (ptrdiff_t)(depth - 1) * cols, (size_t)cols * sizeof(T));       \
    for (int l = depth - 2; l >= 0; --l) {                                                \
        const T *part = stack + (ptrdiff_t)l * cols;                                      \
        for (ptrdiff_t j = 0; j < cols; ++j) block[j] += part[j];                         \
    }                                                                                     \
    memcpy(out, block, (size_t)cols * sizeof(T));                                         \
}

FDL_DEFINE_COLSUM(float, f32)
FDL_DEFINE_COLSUM(double, f64)

#endif
