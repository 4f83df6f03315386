/* Run-time CPU feature detection: what the running CPU offers, not the build host. */
#ifndef FASTDL_CPU_H
#define FASTDL_CPU_H

#include "config.h"

/* The SIMD level the FDL_DISPATCH loops run at on this CPU. */
static inline const char *fdl_simd_level(void)
{
#if defined(FASTDL_NATIVE)
    return "native (built with -march=native)";
#elif FDL_HAVE_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512)";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2+FMA)";
    return "x86-64 baseline (SSE2)";
#elif defined(__aarch64__)
    return "aarch64 baseline (NEON)";
#else
    return "baseline (no runtime dispatch on this platform)";
#endif
}

static inline int fdl_have_dispatch(void) { return FDL_HAVE_DISPATCH; }

#endif
