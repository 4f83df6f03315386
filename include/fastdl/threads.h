/* OpenMP runtime access that also compiles (serially) without OpenMP. */
#ifndef FASTDL_THREADS_H
#define FASTDL_THREADS_H

#ifdef _OPENMP
#  include <omp.h>
#  define FDL_HAVE_OPENMP 1
static inline int fdl_omp_max_threads(void) { return omp_get_max_threads(); }
static inline void fdl_omp_set_threads(int n) { omp_set_num_threads(n); }
static inline int fdl_omp_version(void) { return _OPENMP; }
static inline int fdl_omp_num_procs(void) { return omp_get_num_procs(); }
#else
#  define FDL_HAVE_OPENMP 0
static inline int fdl_omp_max_threads(void) { return 1; }
static inline void fdl_omp_set_threads(int n) { (void)n; }
static inline int fdl_omp_version(void) { return 0; }
static inline int fdl_omp_num_procs(void) { return 1; }
#endif

#endif
