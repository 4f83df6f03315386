/*
 * Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel
 * random numbers: as easy as 1, 2, 3" (SC 2011), and the dropout kernels built on it.
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
 * Vectorisation. fdl_philox_words runs the ten rounds for FDL_PHILOX_LANES blocks side by side
 * in a loop the compiler vectorises across blocks (the 32x32 -> 64-bit products become
 * vpmuludq); the scalar fdl_philox4x32_10 serves the KAT test and the partial blocks at the
 * ends of a range. Each dropout work item generates its words in chunks of FDL_DROPOUT_CHUNK
 * into an L1 buffer and applies them in a second, vectorised loop over the chunk.
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
#define FDL_DROPOUT_CHUNK 1024  /* words generated into L1 before they are applied */
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

/* Words first .. first + n - 1 of the stream of `seed` into out. */
FDL_INLINE void fdl_philox_words_inl(uint64_t seed, uint64_t first, ptrdiff_t n,
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
        fdl_philox_blocks(key[0], key[1], (uint32_t)b, (uint32_t)(b >> 32), nb, out + done);
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

FDL_DISPATCH static void fdl_philox_words(uint64_t seed, uint64_t first, ptrdiff_t n, uint32_t *out)
{
    fdl_philox_words_inl(seed, first, n, out);
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
            fdl_philox_words_inl(a->seed, (uint64_t)c, cn, u);                             \
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

#endif
