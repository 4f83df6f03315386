/*
 * Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel
 * random numbers: as easy as 1, 2, 3" (SC 2011), and the kernels built on it: dropout
 * (forward, backward from a mask or from the seed) and the samples of fastdl.init (normal by
 * Box-Muller, uniform; see "Initialisation samples" below).
 *
 * Generator. A 128-bit counter (c0, c1, c2, c3) and a 64-bit key (k0, k1) go through ten
 * rounds of
 *     (hi0, lo0) = 0xD2511F53 * c0,  (hi1, lo1) = 0xCD9E8D57 * c2   (32x32 -> 64 bits)
 *     (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
 * with the key bumped by the Weyl constants (0x9E3779B9, 0xBB67AE85) between rounds. The
 * output is the final counter: four 32-bit words. tests/test_dropout.py checks the published
 * known-answer vectors (Random123's kat_vectors) and a NumPy transcription bit for bit.
 *
 * The stream of a seed. fastdl numbers 32-bit words, not blocks: word i (a 64-bit index) is
 * word i % 4 of the block with counter (lo32(i / 4), hi32(i / 4), 0, 0) and key
 * (lo32(seed), hi32(seed)). Element i of a dropout (its C-order index in the array's logical
 * shape) uses word i, so all four words of every block are used and one block covers four
 * elements: the mask depends on (seed, i) only, never on the layout, the work split or the
 * thread count.
 *
 * Keep rule. Element i is kept iff word_i >= thr with thr = ceil(p * 2^32), i.e. iff the
 * uniform word_i / 2^32 (in [0, 1), resolution 2^-32) is >= p. The drop probability is then
 * exactly thr / 2^32, within 2^-32 of p. p > 1 - 2^-32 gives thr = 2^32: every element is
 * dropped (`drop_all`, no words are drawn).
 *
 * Vectorisation. Blocks are computed side by side in SIMD lanes, one block per 64-bit lane
 * (the 32x32 -> 64-bit product is vpmuludq): explicit AVX-512F and AVX2 kernels picked at run
 * time from the CPU's features, a portable loop written for the auto-vectoriser elsewhere and
 * for the few blocks at the ends of a range; the scalar fdl_philox4x32_10 serves the KAT test
 * and partial blocks. Each dropout work item generates its words in chunks of
 * FDL_DROPOUT_CHUNK into an L1 buffer and applies them in a second, vectorised loop.
 *
 * Cost (one Zen 4 core, 2026-11-25, min of repeated runs on a shared machine): 0.39 ns per
 * word (about 1.4 cycles) with AVX-512, 0.48 auto-vectorised; a dropout item in cache 0.46 ns
 * per float32 element. 16M float32 elements: 6.4 ms of words on one core, 3.2 on two, against
 * 2.5-3.3 ms for a copy of the same bytes on two: generating the words costs as much as
 * moving the bytes, so the two must overlap. They do when the chunks are short: the core runs
 * the next chunk's rounds while the previous chunk's loads and stores are in flight, and the
 * hardware prefetcher sees a steady stream. Dropout of 16M float32, one thread, by chunk:
 * 64 words 10.3 ms, 128 9.1-9.2, 256 13.3, 512 13.9-15.5, 1024 14.7 (a copy: 5.2). Software
 * prefetch of the next chunk measured no gain.
 */
#ifndef FASTDL_PHILOX_H
#define FASTDL_PHILOX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "config.h"
#include "vmath.h"

#define FDL_PHILOX_M0 0xD2511F53u
#define FDL_PHILOX_M1 0xCD9E8D57u
#define FDL_PHILOX_W0 0x9E3779B9u
#define FDL_PHILOX_W1 0xBB67AE85u

#define FDL_DROPOUT_ITEM 16384  /* C-order elements per work item (fixed: the split depends
                                   only on the size) */
#define FDL_DROPOUT_CHUNK 128   /* words generated into L1 before they are applied (a
                                   multiple of 64: the AVX-512 kernel's 16 blocks) */
#define FDL_DROPOUT_MAXDIM 64   /* NPY_MAXDIMS */

/* One Philox4x32 round. The four counter words and the key live in uint64_t variables that
   hold 32-bit values: the compiler then keeps the blocks in 64-bit SIMD lanes, where the
   32x32 -> 64-bit product is one vpmuludq. Written with uint32_t lanes, GCC 12 split every
   product into widening, vpmullq and permutes: 0.92 ns per word against 0.48 (one Zen 4 core,
   AVX-512 clone). */
#define FDL_PHILOX_ROUND(c0, c1, c2, c3, k0, k1) do {                                     \
        uint64_t p0_ = (uint64_t)(uint32_t)(c0) * FDL_PHILOX_M0;                         \
        uint64_t p1_ = (uint64_t)(uint32_t)(c2) * FDL_PHILOX_M1;                         \
        (c0) = (p1_ >> 32) ^ (c1) ^ (k0);                                                \
        (c2) = (p0_ >> 32) ^ (c3) ^ (k1);                                                \
        (c1) = p1_ & 0xFFFFFFFFu;                                                        \
        (c3) = p0_ & 0xFFFFFFFFu;                                                        \
    } while (0)

#define FDL_PHILOX_BUMP(ka, kb) do {                                                      \
        (ka) = (uint32_t)((ka) + FDL_PHILOX_W0);                                         \
        (kb) = (uint32_t)((kb) + FDL_PHILOX_W1);                                         \
    } while (0)

/* Ten rounds on uint64_t words c0..c3 (32-bit values), key k0, k1 (32-bit values). */
#define FDL_PHILOX_10(c0, c1, c2, c3, k0, k1) do {                                        \
        uint64_t ka_ = (k0), kb_ = (k1);                                                 \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_); FDL_PHILOX_BUMP(ka_, kb_);           \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_); FDL_PHILOX_BUMP(ka_, kb_);           \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_); FDL_PHILOX_BUMP(ka_, kb_);           \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_); FDL_PHILOX_BUMP(ka_, kb_);           \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_); FDL_PHILOX_BUMP(ka_, kb_);           \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_); FDL_PHILOX_BUMP(ka_, kb_);           \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_); FDL_PHILOX_BUMP(ka_, kb_);           \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_); FDL_PHILOX_BUMP(ka_, kb_);           \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_); FDL_PHILOX_BUMP(ka_, kb_);           \
        FDL_PHILOX_ROUND(c0, c1, c2, c3, ka_, kb_);                                      \
    } while (0)

/* The block function itself: out = Philox4x32-10(ctr, key). */
static inline void fdl_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2],
                                     uint32_t out[4])
{
    uint64_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    FDL_PHILOX_10(c0, c1, c2, c3, key[0], key[1]);
    out[0] = (uint32_t)c0;
    out[1] = (uint32_t)c1;
    out[2] = (uint32_t)c2;
    out[3] = (uint32_t)c3;
}

/* Whole blocks b0 .. b0 + nb - 1 (b0 + nb <= 2^32: one high word bhi), words in stream
   order. The loop over blocks is what vectorises. */
FDL_INLINE void fdl_philox_blocks(uint32_t k0, uint32_t k1, uint32_t b0, uint32_t bhi,
                                  ptrdiff_t nb, uint32_t *FDL_RESTRICT out)
{
    for (ptrdiff_t j = 0; j < nb; j++) {
        uint64_t c0 = (uint32_t)(b0 + (uint32_t)j), c1 = bhi, c2 = 0, c3 = 0;
        FDL_PHILOX_10(c0, c1, c2, c3, k0, k1);
        out[4 * j + 0] = (uint32_t)c0;
        out[4 * j + 1] = (uint32_t)c1;
        out[4 * j + 2] = (uint32_t)c2;
        out[4 * j + 3] = (uint32_t)c3;
    }
}

/*
 * Explicit SIMD block kernels. Auto-vectorised, the rounds above compile (GCC 12) to vpmullq,
 * a full 64x64-bit multiply: one uop per half on Zen 4 but three on Intel, and emulated with
 * three vpmuludq in the AVX2 clone. Written with vpmuludq (the 32x32 -> 64-bit multiply of
 * the low halves) the upper halves of the lanes need no clearing between rounds: vpmuludq
 * ignores them, and only the low 32 bits of each word are stored. Two independent vectors
 * of blocks per iteration hide the multiply latency. One Zen 4 core: 0.40 ns per word against
 * 0.48 auto-vectorised (AVX-512). Chosen at run time from the CPU's features (x86-64 with
 * GCC or Clang); elsewhere the portable loop runs.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(FDL_PHILOX_PORTABLE)
#  define FDL_PHILOX_X86 1
#  include <immintrin.h>

#define FDL_PHILOX_V512_ROUND(a0, a1, a2, a3, K0, K1) do {                                \
        __m512i p0_ = _mm512_mul_epu32(a0, m0), p1_ = _mm512_mul_epu32(a2, m1);          \
        a0 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1_, 32), a1, K0, 0x96);        \
        a2 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0_, 32), a3, K1, 0x96);        \
        a1 = p1_;                                                                        \
        a3 = p0_;                                                                        \
    } while (0)

/* Blocks in groups of 16 (two vectors of 8 64-bit lanes); returns how many were done. */
__attribute__((target("avx512f")))
static ptrdiff_t fdl_philox_blocks_avx512(uint32_t k0, uint32_t k1, uint32_t b0, uint32_t bhi,
                                          ptrdiff_t nb, uint32_t *out)
{
    const __m512i m0 = _mm512_set1_epi64(FDL_PHILOX_M0), m1 = _mm512_set1_epi64(FDL_PHILOX_M1);
    const __m512i lanes = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    /* qword interleave of (c0|c1) and (c2|c3) pairs: block order */
    const __m512i lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
    const __m512i hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    ptrdiff_t j = 0;
    for (; j + 16 <= nb; j += 16) {
        __m512i a0 = _mm512_add_epi64(_mm512_set1_epi64((uint32_t)(b0 + (uint32_t)j)), lanes);
        __m512i c0 = _mm512_add_epi64(_mm512_set1_epi64((uint32_t)(b0 + (uint32_t)j + 8u)),
                                      lanes);
        __m512i a1 = _mm512_set1_epi64(bhi), c1 = a1;
        __m512i a2 = _mm512_setzero_si512(), a3 = a2, c2 = a2, c3 = a2;
        uint32_t ka = k0, kb = k1;
        for (int r = 0; r < 10; r++) {
            __m512i K0 = _mm512_set1_epi64(ka), K1 = _mm512_set1_epi64(kb);
            FDL_PHILOX_V512_ROUND(a0, a1, a2, a3, K0, K1);
            FDL_PHILOX_V512_ROUND(c0, c1, c2, c3, K0, K1);
            ka += FDL_PHILOX_W0;
            kb += FDL_PHILOX_W1;
        }
        __m512i t01 = _mm512_mask_blend_epi32(0xAAAA, a0, _mm512_slli_epi64(a1, 32));
        __m512i t23 = _mm512_mask_blend_epi32(0xAAAA, a2, _mm512_slli_epi64(a3, 32));
        _mm512_storeu_si512((void *)(out + 4 * j), _mm512_permutex2var_epi64(t01, lo, t23));
        _mm512_storeu_si512((void *)(out + 4 * j + 16),
                            _mm512_permutex2var_epi64(t01, hi, t23));
        t01 = _mm512_mask_blend_epi32(0xAAAA, c0, _mm512_slli_epi64(c1, 32));
        t23 = _mm512_mask_blend_epi32(0xAAAA, c2, _mm512_slli_epi64(c3, 32));
        _mm512_storeu_si512((void *)(out + 4 * j + 32), _mm512_permutex2var_epi64(t01, lo, t23));
        _mm512_storeu_si512((void *)(out + 4 * j + 48), _mm512_permutex2var_epi64(t01, hi, t23));
    }
    return j;
}

#define FDL_PHILOX_V256_ROUND(a0, a1, a2, a3, K0, K1) do {                                \
        __m256i p0_ = _mm256_mul_epu32(a0, m0), p1_ = _mm256_mul_epu32(a2, m1);          \
        a0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1_, 32), a1), K0);     \
        a2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0_, 32), a3), K1);     \
        a1 = p1_;                                                                        \
        a3 = p0_;                                                                        \
    } while (0)

/* Blocks in groups of 8 (two vectors of 4 64-bit lanes); returns how many were done. */
__attribute__((target("avx2")))
static ptrdiff_t fdl_philox_blocks_avx2(uint32_t k0, uint32_t k1, uint32_t b0, uint32_t bhi,
                                        ptrdiff_t nb, uint32_t *out)
{
    const __m256i m0 = _mm256_set1_epi64x(FDL_PHILOX_M0), m1 = _mm256_set1_epi64x(FDL_PHILOX_M1);
    const __m256i lanes = _mm256_set_epi64x(3, 2, 1, 0);
    ptrdiff_t j = 0;
    for (; j + 8 <= nb; j += 8) {
        __m256i a0 = _mm256_add_epi64(_mm256_set1_epi64x((uint32_t)(b0 + (uint32_t)j)), lanes);
        __m256i c0 = _mm256_add_epi64(_mm256_set1_epi64x((uint32_t)(b0 + (uint32_t)j + 4u)),
                                      lanes);
        __m256i a1 = _mm256_set1_epi64x(bhi), c1 = a1;
        __m256i a2 = _mm256_setzero_si256(), a3 = a2, c2 = a2, c3 = a2;
        uint32_t ka = k0, kb = k1;
        for (int r = 0; r < 10; r++) {
            __m256i K0 = _mm256_set1_epi64x(ka), K1 = _mm256_set1_epi64x(kb);
            FDL_PHILOX_V256_ROUND(a0, a1, a2, a3, K0, K1);
            FDL_PHILOX_V256_ROUND(c0, c1, c2, c3, K0, K1);
            ka += FDL_PHILOX_W0;
            kb += FDL_PHILOX_W1;
        }
        __m256i t01 = _mm256_blend_epi32(a0, _mm256_slli_epi64(a1, 32), 0xAA);
        __m256i t23 = _mm256_blend_epi32(a2, _mm256_slli_epi64(a3, 32), 0xAA);
        __m256i l = _mm256_unpacklo_epi64(t01, t23), h = _mm256_unpackhi_epi64(t01, t23);
        _mm256_storeu_si256((__m256i *)(out + 4 * j), _mm256_permute2x128_si256(l, h, 0x20));
        _mm256_storeu_si256((__m256i *)(out + 4 * j + 8), _mm256_permute2x128_si256(l, h, 0x31));
        t01 = _mm256_blend_epi32(c0, _mm256_slli_epi64(c1, 32), 0xAA);
        t23 = _mm256_blend_epi32(c2, _mm256_slli_epi64(c3, 32), 0xAA);
        l = _mm256_unpacklo_epi64(t01, t23);
        h = _mm256_unpackhi_epi64(t01, t23);
        _mm256_storeu_si256((__m256i *)(out + 4 * j + 16), _mm256_permute2x128_si256(l, h, 0x20));
        _mm256_storeu_si256((__m256i *)(out + 4 * j + 24), _mm256_permute2x128_si256(l, h, 0x31));
    }
    return j;
}

/* 2: AVX-512F, 1: AVX2, 0: the portable loop. The test is a load and a bit test of
   libgcc's cpu model, run once per chunk of words. */
static inline int fdl_philox_simd(void)
{
    if (__builtin_cpu_supports("avx512f"))
        return 2;
    if (__builtin_cpu_supports("avx2"))
        return 1;
    return 0;
}
#else
#  define FDL_PHILOX_X86 0
#endif

/* Whole blocks with the best kernel the CPU has; the rest of a group with the portable loop. */
static inline void fdl_philox_blocks_best(int simd, uint32_t k0, uint32_t k1, uint32_t b0,
                                          uint32_t bhi, ptrdiff_t nb, uint32_t *out)
{
    ptrdiff_t done = 0;
#if FDL_PHILOX_X86
    if (simd == 2)
        done = fdl_philox_blocks_avx512(k0, k1, b0, bhi, nb, out);
    else if (simd == 1)
        done = fdl_philox_blocks_avx2(k0, k1, b0, bhi, nb, out);
#else
    (void)simd;
#endif
    if (done < nb)
        fdl_philox_blocks(k0, k1, b0 + (uint32_t)done, bhi, nb - done, out + 4 * done);
}

/* Words first .. first + n - 1 of the stream of `seed` into out. */
static inline void fdl_philox_words_simd(int simd, uint64_t seed, uint64_t first, ptrdiff_t n,
                                         uint32_t *FDL_RESTRICT out)
{
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t ctr[4], blk[4];
    ptrdiff_t done = 0;
    uint64_t b = first >> 2;
    unsigned w = (unsigned)(first & 3);
    if (w != 0 && n > 0) {   /* a partial block at the start */
        ctr[0] = (uint32_t)b; ctr[1] = (uint32_t)(b >> 32); ctr[2] = 0; ctr[3] = 0;
        fdl_philox4x32_10(ctr, key, blk);
        for (; w < 4 && done < n; w++)
            out[done++] = blk[w];
        b++;
    }
    while (n - done >= 4) {
        /* whole blocks, never across a change of the counter's high word */
        ptrdiff_t nb = (n - done) >> 2;
        uint64_t room = ((uint64_t)1 << 32) - (b & 0xFFFFFFFFu);
        if ((uint64_t)nb > room)
            nb = (ptrdiff_t)room;
        fdl_philox_blocks_best(simd, key[0], key[1], (uint32_t)b, (uint32_t)(b >> 32), nb,
                               out + done);
        done += 4 * nb;
        b += (uint64_t)nb;
    }
    if (done < n) {          /* a partial block at the end */
        ctr[0] = (uint32_t)b; ctr[1] = (uint32_t)(b >> 32); ctr[2] = 0; ctr[3] = 0;
        fdl_philox4x32_10(ctr, key, blk);
        for (w = 0; done < n; w++)
            out[done++] = blk[w];
    }
}

static int fdl_philox_best_level(void)
{
#if FDL_PHILOX_X86
    return fdl_philox_simd();
#else
    return 0;
#endif
}

/* Words first .. first + n - 1 of the stream of `seed` into out, with the CPU's best kernel
   (simd = -1), or a given one (0: portable, 1: AVX2, 2: AVX-512; the tests run each one the
   CPU has). */
static void fdl_philox_words(uint64_t seed, uint64_t first, ptrdiff_t n, uint32_t *out, int simd)
{
#if FDL_PHILOX_X86
    int best = fdl_philox_simd();
#else
    int best = 0;
#endif
    if (simd < 0 || simd > best)
        simd = best;
    fdl_philox_words_simd(simd, seed, first, n, out);
}

/* ------------------------------------------------------------------------------------- */
/* Dropout                                                                                 */

enum {
    FDL_DROPOUT_FWD = 0,       /* y = keep(word_i) ? x * scale : 0; mask (if any) = keep */
    FDL_DROPOUT_FROM_MASK = 1  /* y = mask_i ? x * scale : 0 (the backward from a stored mask) */
};

/* The operands as C-order rows: `nd` outer axes (sizes dims, byte strides per operand) and
   a row axis of `len` elements (element strides xr, yr; byte stride mr for the mask). */
typedef struct {
    char *x;
    char *y;
    unsigned char *m;   /* NULL: no mask written (FWD) */
    int nd;
    ptrdiff_t dims[FDL_DROPOUT_MAXDIM];
    ptrdiff_t xs[FDL_DROPOUT_MAXDIM], ys[FDL_DROPOUT_MAXDIM], ms[FDL_DROPOUT_MAXDIM];
    ptrdiff_t len, xr, yr, mr;
    ptrdiff_t size;     /* elements in all */
    uint64_t seed;
    uint32_t thr;
    int drop_all;
    int mode;
    double scale;
    ptrdiff_t tiles_a, tiles_b;  /* the tiled walk (fdl_dropout_tile_*): tiles per axis */
} fdl_dropout_args;

/* One row piece: n elements, the words (FWD) or the mask (FROM_MASK) deciding each. */
#define FDL_DROPOUT_PIECE(T, SEL, NAME)                                                    \
FDL_INLINE void NAME(const T *FDL_RESTRICT x, ptrdiff_t sx, T *FDL_RESTRICT y, ptrdiff_t sy, \
                     unsigned char *FDL_RESTRICT m, ptrdiff_t sm,                           \
                     const uint32_t *FDL_RESTRICT u, uint32_t thr, int drop_all,            \
                     const unsigned char *FDL_RESTRICT min, T scale, ptrdiff_t n)           \
{                                                                                          \
    ptrdiff_t i;                                                                           \
    if (min != NULL) {                                                                     \
        if (sx == 1 && sy == 1 && sm == 1) {                                               \
            for (i = 0; i < n; i++)                                                        \
                y[i] = SEL(min[i] != 0, x[i] * scale, (T)0);                               \
        } else {                                                                           \
            for (i = 0; i < n; i++)                                                        \
                y[i * sy] = SEL(min[i * sm] != 0, x[i * sx] * scale, (T)0);                \
        }                                                                                  \
        return;                                                                            \
    }                                                                                      \
    if (drop_all) {                                                                        \
        for (i = 0; i < n; i++)                                                            \
            y[i * sy] = (T)0;                                                              \
        if (m != NULL)                                                                     \
            for (i = 0; i < n; i++)                                                        \
                m[i * sm] = 0;                                                             \
        return;                                                                            \
    }                                                                                      \
    if (sx == 1 && sy == 1) {                                                              \
        for (i = 0; i < n; i++)                                                            \
            y[i] = SEL(u[i] >= thr, x[i] * scale, (T)0);                                   \
    } else {                                                                               \
        for (i = 0; i < n; i++)                                                            \
            y[i * sy] = SEL(u[i] >= thr, x[i * sx] * scale, (T)0);                         \
    }                                                                                      \
    if (m != NULL) {                                                                       \
        if (sm == 1) {                                                                     \
            for (i = 0; i < n; i++)                                                        \
                m[i] = (unsigned char)(u[i] >= thr);                                       \
        } else {                                                                           \
            for (i = 0; i < n; i++)                                                        \
                m[i * sm] = (unsigned char)(u[i] >= thr);                                  \
        }                                                                                  \
    }                                                                                      \
}

FDL_DROPOUT_PIECE(float, fdl_selectf, fdl_dropout_piece_f32)
FDL_DROPOUT_PIECE(double, fdl_select, fdl_dropout_piece_f64)

/* Work item `item`: C-order elements [item * ITEM, min(size, (item + 1) * ITEM)), in chunks of
   FDL_DROPOUT_CHUNK, each chunk walked as pieces of rows. */
#define FDL_DROPOUT_ITEM_FN(T, PIECE, NAME)                                                \
FDL_DISPATCH static void NAME(const fdl_dropout_args *a, ptrdiff_t item)                          \
{                                                                                          \
    uint32_t u[FDL_DROPOUT_CHUNK];                                                         \
    int rng = a->mode == FDL_DROPOUT_FWD && !a->drop_all;                                  \
    ptrdiff_t i0 = item * FDL_DROPOUT_ITEM;                                                \
    ptrdiff_t i1 = i0 + FDL_DROPOUT_ITEM < a->size ? i0 + FDL_DROPOUT_ITEM : a->size;     \
    T scale = (T)a->scale;                                                                 \
    for (ptrdiff_t c = i0; c < i1; c += FDL_DROPOUT_CHUNK) {                               \
        ptrdiff_t cn = i1 - c < FDL_DROPOUT_CHUNK ? i1 - c : FDL_DROPOUT_CHUNK;           \
        if (rng)                                                                           \
            fdl_philox_words(a->seed, (uint64_t)c, cn, u, -1);                             \
        ptrdiff_t idx = c;                                                                 \
        while (idx < c + cn) {                                                             \
            ptrdiff_t row = idx / a->len, col = idx - row * a->len;                        \
            ptrdiff_t piece = a->len - col < c + cn - idx ? a->len - col : c + cn - idx;  \
            ptrdiff_t xo = 0, yo = 0, mo = 0, r = row;                                     \
            for (int d = a->nd - 1; d >= 0; d--) {                                         \
                ptrdiff_t q = r / a->dims[d], k = r - q * a->dims[d];                      \
                xo += k * a->xs[d];                                                        \
                yo += k * a->ys[d];                                                        \
                mo += k * a->ms[d];                                                        \
                r = q;                                                                     \
            }                                                                              \
            const T *xp = (const T *)(a->x + xo) + col * a->xr;                            \
            T *yp = (T *)(a->y + yo) + col * a->yr;                                        \
            unsigned char *mp = a->m == NULL ? NULL : a->m + mo + col * a->mr;             \
            if (a->mode == FDL_DROPOUT_FROM_MASK)                                          \
                PIECE(xp, a->xr, yp, a->yr, NULL, a->mr, u, 0, 0, mp, scale, piece);       \
            else                                                                           \
                PIECE(xp, a->xr, yp, a->yr, mp, a->mr, u + (idx - c), a->thr, a->drop_all, \
                      NULL, scale, piece);                                                 \
            idx += piece;                                                                  \
        }                                                                                  \
    }                                                                                      \
}

FDL_DROPOUT_ITEM_FN(float, fdl_dropout_piece_f32, fdl_dropout_item_f32)
FDL_DROPOUT_ITEM_FN(double, fdl_dropout_piece_f64, fdl_dropout_item_f64)

/*
 * The tiled walk, for arrays whose contiguous axis is not the last one (Fortran order, a
 * transposed view): the last outer axis A is the contiguous one, the row axis B is not.
 * Walking B (C order) gathers x with a large stride; walking A reads memory in order but
 * needs the words of C indices L apart. A tile of FDL_DROPOUT_TILE_A x FDL_DROPOUT_TILE_B
 * elements gets both: its words are generated row by row of B (consecutive C indices, 64 per
 * call: whole SIMD groups of blocks) into L1, turned into keep bits (32-bit words, so the walk
 * along A vectorises with the data), then the tile is walked along A. Work item: (outer
 * index, tile of A, tile of B), a function of the shape only; fresh results take x's axis
 * order, so they stream too.
 * Measured, 4096x4096 float32, one thread, out= of x's layout: Fortran order, C-order walk
 * 133-160 ms; tiled, keep decisions read at a stride (scalar loop) 35-39 ms; keep bits 20.5-21
 * ms; a C array 9.1-9.4 ms. Tiles of 64 to 1024 along A measured alike; 64 keeps the words in
 * L1 (16 KiB).
 */
#define FDL_DROPOUT_TILE_A 64    /* elements of the contiguous axis A per tile */
#define FDL_DROPOUT_TILE_B 64    /* elements of the row axis B per tile: the bits of a uint64 */

#define FDL_DROPOUT_TILE_FN(T, SEL, NAME)                                                  \
FDL_DISPATCH static void NAME(const fdl_dropout_args *a, ptrdiff_t item)                   \
{                                                                                          \
    uint32_t u[FDL_DROPOUT_TILE_A * FDL_DROPOUT_TILE_B];                                       \
    uint32_t keep[FDL_DROPOUT_TILE_B / 32][FDL_DROPOUT_TILE_A];                            \
    int nd = a->nd;                         /* axis nd - 1 is A */                         \
    ptrdiff_t RA = a->dims[nd - 1], L = a->len;                                            \
    ptrdiff_t tb = item % a->tiles_b, rest = item / a->tiles_b;                            \
    ptrdiff_t ta = rest % a->tiles_a, o = rest / a->tiles_a;                               \
    ptrdiff_t a0 = ta * FDL_DROPOUT_TILE_A, b0 = tb * FDL_DROPOUT_TILE_B;                      \
    ptrdiff_t na = RA - a0 < FDL_DROPOUT_TILE_A ? RA - a0 : FDL_DROPOUT_TILE_A;                \
    ptrdiff_t nb = L - b0 < FDL_DROPOUT_TILE_B ? L - b0 : FDL_DROPOUT_TILE_B;                  \
    ptrdiff_t xo = 0, yo = 0, mo = 0, r = o;                                               \
    for (int d = nd - 2; d >= 0; d--) {                                                    \
        ptrdiff_t q = r / a->dims[d], k = r - q * a->dims[d];                              \
        xo += k * a->xs[d];                                                                \
        yo += k * a->ys[d];                                                                \
        mo += k * a->ms[d];                                                                \
        r = q;                                                                             \
    }                                                                                      \
    ptrdiff_t xa = a->xs[nd - 1] / (ptrdiff_t)sizeof(T);                                 \
    ptrdiff_t ya = a->ys[nd - 1] / (ptrdiff_t)sizeof(T);                                 \
    ptrdiff_t ma = a->ms[nd - 1];                                                          \
    const T *x = (const T *)(a->x + xo) + a0 * xa + b0 * a->xr;                            \
    T *y = (T *)(a->y + yo) + a0 * ya + b0 * a->yr;                                        \
    unsigned char *m = a->m == NULL ? NULL : a->m + mo + a0 * ma + b0 * a->mr;             \
    T scale = (T)a->scale;                                                                 \
    uint32_t thr = a->thr;                                                                 \
    if (a->mode == FDL_DROPOUT_FROM_MASK) {                                                \
        for (ptrdiff_t j = 0; j < nb; j++)                                                 \
            for (ptrdiff_t i = 0; i < na; i++)                                             \
                y[i * ya + j * a->yr] = SEL(m[i * ma + j * a->mr] != 0,                    \
                                            x[i * xa + j * a->xr] * scale, (T)0);          \
        return;                                                                            \
    }                                                                                      \
    if (a->drop_all) {                                                                     \
        for (ptrdiff_t j = 0; j < nb; j++)                                                 \
            for (ptrdiff_t i = 0; i < na; i++) {                                           \
                y[i * ya + j * a->yr] = (T)0;                                              \
                if (m != NULL)                                                             \
                    m[i * ma + j * a->mr] = 0;                                             \
            }                                                                              \
        return;                                                                            \
    }                                                                                      \
    uint64_t base = ((uint64_t)o * (uint64_t)RA + (uint64_t)a0) * (uint64_t)L + (uint64_t)b0; \
    for (ptrdiff_t i = 0; i < na; i++) {                                                   \
        fdl_philox_words(a->seed, base + (uint64_t)(i * L), nb, u + i * FDL_DROPOUT_TILE_B, -1); \
        for (ptrdiff_t j = nb; j < FDL_DROPOUT_TILE_B; j++)   /* bits never used */        \
            u[i * FDL_DROPOUT_TILE_B + j] = 0;                                             \
    }                                                                                      \
    /* the keep decisions of row i of the tile as bits: B element j is bit j % 32 of      \
       keep[j / 32][i] (32-bit, so the walk along A vectorises with the float data) */     \
    for (ptrdiff_t i = 0; i < na; i++) {                                                   \
        const uint32_t *ui = u + i * FDL_DROPOUT_TILE_B;                                   \
        for (ptrdiff_t h = 0; h < FDL_DROPOUT_TILE_B / 32; h++) {                          \
            uint32_t bits = 0;                                                             \
            for (ptrdiff_t j = 0; j < 32; j++)                                             \
                bits |= (uint32_t)(ui[32 * h + j] >= thr) << j;                            \
            keep[h][i] = bits;                                                             \
        }                                                                                  \
    }                                                                                      \
    for (ptrdiff_t j = 0; j < nb; j++) {                                                   \
        const T *xj = x + j * a->xr;                                                       \
        T *yj = y + j * a->yr;                                                             \
        const uint32_t *kj = keep[j >> 5];                                                 \
        unsigned sh = (unsigned)(j & 31);                                                  \
        if (xa == 1 && ya == 1) {                                                          \
            for (ptrdiff_t i = 0; i < na; i++)                                             \
                yj[i] = SEL((int)((kj[i] >> sh) & 1u), xj[i] * scale, (T)0);               \
        } else {                                                                           \
            for (ptrdiff_t i = 0; i < na; i++)                                             \
                yj[i * ya] = SEL((int)((kj[i] >> sh) & 1u), xj[i * xa] * scale, (T)0);    \
        }                                                                                  \
        if (m != NULL) {                                                                   \
            unsigned char *mj = m + j * a->mr;                                             \
            for (ptrdiff_t i = 0; i < na; i++)                                             \
                mj[i * ma] = (unsigned char)((kj[i] >> sh) & 1u);                          \
        }                                                                                  \
    }                                                                                      \
}

FDL_DROPOUT_TILE_FN(float, fdl_selectf, fdl_dropout_tile_f32)
FDL_DROPOUT_TILE_FN(double, fdl_select, fdl_dropout_tile_f64)

/* ------------------------------------------------------------------------------------- */
/* Initialisation samples: normal (Box-Muller) and uniform, from the stream of a seed        */
/*
 * Words per element: 1 in float32, 2 in float64 (53-bit uniforms). Element i (C order) uses
 * words [wpe * i, wpe * (i + 1)), so a sample depends on (seed, i) only.
 *   uniform: u = top 24 (float32) or 53 (float64) bits of its words / 2^24 or 2^53, in [0, 1);
 *            y = u * (2a) - a.
 *   normal:  elements 2k and 2k + 1 are a Box-Muller pair: with u1 in (0, 1) from the words
 *            of element 2k and u2 in [0, 1) from those of element 2k + 1,
 *            r = sqrt(-2 ln u1), y(2k) = std * r cos(2 pi u2), y(2k + 1) = std * r sin(2 pi u2).
 *            u1 = (m + 1/2) / 2^32 (float32: the full 32-bit word, tails to 6.8 sigma) or
 *            (m + 1/2) / 2^53 (float64: 9.6 sigma). An odd last element takes the cosine.
 * sin and cos of 2 pi u2: the quadrant from the top two bits, then Taylor polynomials on
 * [0, pi/2) (truncation below 1e-9 relative in float32, 1e-19 in float64), fdl_logf/fdl_log
 * for the logarithm: no libm call, so the loops vectorise.
 */
#define FDL_INIT_ITEM 16384      /* elements per work item */
#define FDL_INIT_CHUNK 128       /* elements per chunk of words (even) */

enum { FDL_INIT_NORMAL = 0, FDL_INIT_UNIFORM = 1 };

typedef struct {
    char *y;
    ptrdiff_t size;
    uint64_t seed;
    double scale;   /* normal: std; uniform: 2a / 2^24 (float32) or 2a / 2^53 (float64) */
    double shift;   /* uniform: a */
    int kind;
} fdl_init_args;

/* (cos, sin) of (pi/2) * (q + f), f in [0, 1), q in 0..3 */
FDL_INLINE void fdl_quarter_sincosf(uint32_t q, float f, float *c, float *s)
{
    float x = f * 1.57079632679489662f, z = x * x;
    float sp = x * (1.0f + z * (-1.66666667e-1f + z * (8.33333333e-3f + z * (-1.98412698e-4f
               + z * (2.75573192e-6f + z * (-2.50521084e-8f + z * 1.60590438e-10f))))));
    float cp = 1.0f + z * (-0.5f + z * (4.16666667e-2f + z * (-1.38888889e-3f + z * (
               2.48015873e-5f + z * (-2.75573192e-7f + z * (2.08767570e-9f
               + z * -1.14707456e-11f))))));
    uint32_t swap = q & 1u, negc = ((q + 1u) >> 1) & 1u, negs = (q >> 1) & 1u;
    float cc = fdl_selectf((int)swap, sp, cp), ss = fdl_selectf((int)swap, cp, sp);
    *c = fdl_vm_asfloat(fdl_vm_asuint(cc) ^ (negc << 31));
    *s = fdl_vm_asfloat(fdl_vm_asuint(ss) ^ (negs << 31));
}

FDL_INLINE void fdl_quarter_sincos(uint64_t q, double f, double *c, double *s)
{
    double x = f * 1.5707963267948966, z = x * x;
    double sp = x * (1.0 + z * (-1.0 / 6 + z * (1.0 / 120 + z * (-1.0 / 5040 + z * (
                1.0 / 362880 + z * (-1.0 / 39916800 + z * (1.0 / 6227020800.0 + z * (
                -1.0 / 1307674368000.0 + z * (1.0 / 355687428096000.0 + z * (
                -1.0 / 121645100408832000.0 + z * (1.0 / 51090942171709440000.0
                + z * (-1.0 / 25852016738884976640000.0))))))))))));
    double cp = 1.0 + z * (-1.0 / 2 + z * (1.0 / 24 + z * (-1.0 / 720 + z * (1.0 / 40320
                + z * (-1.0 / 3628800 + z * (1.0 / 479001600 + z * (-1.0 / 87178291200.0
                + z * (1.0 / 20922789888000.0 + z * (-1.0 / 6402373705728000.0 + z * (
                1.0 / 2432902008176640000.0 + z * (-1.0 / 1124000727777607680000.0
                + z * (1.0 / 620448401733239439360000.0))))))))))));
    uint64_t swap = q & 1u, negc = ((q + 1u) >> 1) & 1u, negs = (q >> 1) & 1u;
    double cc = fdl_select((int)swap, sp, cp), ss = fdl_select((int)swap, cp, sp);
    *c = fdl_vm_asdouble(fdl_vm_asuint64(cc) ^ (negc << 63));
    *s = fdl_vm_asdouble(fdl_vm_asuint64(ss) ^ (negs << 63));
}

/* n pairs of normals (2n elements) from 2n words */
FDL_INLINE void fdl_normal_pairs_f32(const uint32_t *FDL_RESTRICT w, float *FDL_RESTRICT y,
                                     ptrdiff_t n, float std)
{
    for (ptrdiff_t k = 0; k < n; k++) {
        float u1 = (float)w[2 * k] * 0x1p-32f + 0x1p-33f;      /* (0, 1] */
        uint32_t a = w[2 * k + 1];
        float f = (float)(a & 0x3FFFFFFFu) * 0x1p-30f;          /* [0, 1) */
        float t = -2.0f * fdl_logf(u1);
        float r = sqrtf(fdl_selectf(t > 0.0f, t, 0.0f)) * std;
        float c, s;
        fdl_quarter_sincosf(a >> 30, f, &c, &s);
        y[2 * k] = r * c;
        y[2 * k + 1] = r * s;
    }
}

/* n pairs of normals (2n elements) from 4n words */
FDL_INLINE void fdl_normal_pairs_f64(const uint32_t *FDL_RESTRICT w, double *FDL_RESTRICT y,
                                     ptrdiff_t n, double std)
{
    for (ptrdiff_t k = 0; k < n; k++) {
        uint64_t m1 = ((uint64_t)w[4 * k] << 21) | (w[4 * k + 1] >> 11);
        uint64_t m2 = ((uint64_t)w[4 * k + 2] << 21) | (w[4 * k + 3] >> 11);
        double u1 = (double)(int64_t)m1 * 0x1p-53 + 0x1p-54;   /* (0, 1) */
        double f = (double)(int64_t)(m2 & ((1ull << 51) - 1)) * 0x1p-51;
        double t = -2.0 * fdl_log(u1);
        double r = sqrt(fdl_select(t > 0.0, t, 0.0)) * std;
        double c, s;
        fdl_quarter_sincos(m2 >> 51, f, &c, &s);
        y[2 * k] = r * c;
        y[2 * k + 1] = r * s;
    }
}

FDL_INLINE void fdl_uniform_f32(const uint32_t *FDL_RESTRICT w, float *FDL_RESTRICT y,
                                ptrdiff_t n, float scale, float shift)
{
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = (float)(int32_t)(w[i] >> 8) * scale - shift;
}

FDL_INLINE void fdl_uniform_f64(const uint32_t *FDL_RESTRICT w, double *FDL_RESTRICT y,
                                ptrdiff_t n, double scale, double shift)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        uint64_t m = ((uint64_t)w[2 * i] << 21) | (w[2 * i + 1] >> 11);
        y[i] = (double)(int64_t)m * scale - shift;
    }
}

/* Work item `item` of an initialisation: C-order elements [item * ITEM, ...) of a
   contiguous result. */
#define FDL_INIT_ITEM_FN(T, WPE, NORMAL, UNIFORM, NAME)                                   \
FDL_DISPATCH static void NAME(const fdl_init_args *a, ptrdiff_t item)                      \
{                                                                                          \
    uint32_t u[WPE * FDL_INIT_CHUNK];                                                      \
    T tail[2];                                                                             \
    T *y = (T *)a->y;                                                                      \
    ptrdiff_t i0 = item * FDL_INIT_ITEM;                                                   \
    ptrdiff_t i1 = i0 + FDL_INIT_ITEM < a->size ? i0 + FDL_INIT_ITEM : a->size;           \
    for (ptrdiff_t c = i0; c < i1; c += FDL_INIT_CHUNK) {                                  \
        ptrdiff_t cn = i1 - c < FDL_INIT_CHUNK ? i1 - c : FDL_INIT_CHUNK;                  \
        ptrdiff_t even = cn + (cn & 1);     /* an odd last element draws a whole pair */   \
        fdl_philox_words(a->seed, (uint64_t)(WPE * c), WPE * even, u, -1);                 \
        if (a->kind == FDL_INIT_UNIFORM) {                                                 \
            UNIFORM(u, y + c, cn, (T)a->scale, (T)a->shift);                               \
            continue;                                                                      \
        }                                                                                  \
        NORMAL(u, y + c, cn >> 1, (T)a->scale);                                            \
        if (cn & 1) {                                                                      \
            NORMAL(u + WPE * (cn - 1), tail, 1, (T)a->scale);                              \
            y[c + cn - 1] = tail[0];                                                       \
        }                                                                                  \
    }                                                                                      \
}

FDL_INIT_ITEM_FN(float, 1, fdl_normal_pairs_f32, fdl_uniform_f32, fdl_init_item_f32)
FDL_INIT_ITEM_FN(double, 2, fdl_normal_pairs_f64, fdl_uniform_f64, fdl_init_item_f64)

#endif
