/* Compiler portability and SIMD dispatch for fastdl's inner loops. */
#ifndef FASTDL_CONFIG_H
#define FASTDL_CONFIG_H

#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#  define FDL_RESTRICT __restrict__
/* Scalar helpers called per element inside vectorised loops: if the compiler declines to
   inline one (it did for the larger activation derivatives), the loop calls it per element
   and stops vectorising, 20-50x slower. */
#  define FDL_INLINE static inline __attribute__((always_inline))
#else
#  define FDL_RESTRICT
#  define FDL_INLINE static inline
#endif

/*
 * Wheels must run on any x86-64 CPU, so nothing is built with -march=native by default.
 * Hot loops marked FDL_DISPATCH are compiled three times by GCC (x86-64-v4 = AVX-512,
 * x86-64-v3 = AVX2+FMA, baseline SSE2) and the dynamic loader picks the best clone for
 * the running CPU through an ifunc, once, at load time. A source build with
 * FASTDL_NATIVE=1 compiles everything for the build host instead and drops the clones.
 * Clones need GCC and an ELF/glibc ifunc; elsewhere the loop is built once for baseline.
 */
#if !defined(FASTDL_NATIVE) && defined(__GNUC__) && !defined(__clang__) \
    && defined(__x86_64__) && defined(__linux__)
#  define FDL_DISPATCH __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#  define FDL_HAVE_DISPATCH 1
#else
#  define FDL_DISPATCH
#  define FDL_HAVE_DISPATCH 0
#endif

#endif
