# cython: language_level=3
"""OpenMP thread control and facts about how this build of fastdl was made."""

cdef extern from "fastdl/threads.h" nogil:
    int fdl_omp_max_threads()
    void fdl_omp_set_threads(int n)
    int fdl_omp_version()
    int FDL_HAVE_OPENMP

cdef extern from "fastdl/cpu.h" nogil:
    const char *fdl_simd_level()
    int fdl_have_dispatch()

cdef extern from *:
    """
    #if defined(__clang__)
    #  define FDL_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #  define FDL_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #  define FDL_COMPILER "msvc"
    #else
    #  define FDL_COMPILER "unknown"
    #endif
    #ifdef _OPENMP
    static void *fdl_omp_symbol(void) { return (void *)&omp_get_max_threads; }
    #else
    static void *fdl_omp_symbol(void) { return 0; }
    #endif
    """
    const char *FDL_COMPILER
    void *fdl_omp_symbol()

cdef extern from "<dlfcn.h>" nogil:
    ctypedef struct Dl_info:
        const char *dli_fname
    int dladdr(const void *addr, Dl_info *info)


def get_num_threads():
    return fdl_omp_max_threads()


def _set_num_threads(int n):
    fdl_omp_set_threads(n)


def build_info():
    cdef Dl_info info
    library = None
    sym = fdl_omp_symbol()
    if sym != NULL and dladdr(sym, &info) != 0 and info.dli_fname != NULL:
        library = (<bytes>info.dli_fname).decode("utf-8", "replace")
    return {
        "compiler": (<bytes>FDL_COMPILER).decode(),
        "openmp": bool(FDL_HAVE_OPENMP),
        "openmp_version": fdl_omp_version() or None,
        "openmp_library": library,
        "simd_level": (<bytes>fdl_simd_level()).decode(),
        "simd_dispatch": bool(fdl_have_dispatch()),
    }
