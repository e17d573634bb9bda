/*
 * A seeded random fuzz of the fused cross-entropy kernel (_cross_entropy.c) at its C
 * boundary, built with the kernel under -fsanitize=address,undefined by
 * tests/test_kernel_safety.py:
 *
 *   cc -O2 -g -march=... -fsanitize=address,undefined,float-cast-overflow \
 *      -fno-sanitize-recover=all tests/kernel_fuzz.c src/crossentropy/torch/_cross_entropy.c
 *   ./a.out SEED ITERATIONS
 *
 * Each case draws a storage type, a shape, row strides, class weights, smoothing, z-loss,
 * soft cap, a gradient buffer (none, apart, or the logits themselves), an ignore_index and
 * targets that include hostile values (negative, C, the int64 extremes), and allocates every
 * buffer to its exact size: on the heap, where AddressSanitizer's red zones catch an access
 * past either end, or against a PROT_NONE page, where a vector load or store past the end
 * (which the sanitizer does not see inside intrinsics) faults. It then checks what the
 * kernel promises:
 *   - the return value: the row count, or -(i + 1) for the first row i whose target is
 *     neither in [0, C) nor ignore_index;
 *   - the logits are unchanged unless the gradient is written over them, and the gap
 *     between gradient rows (row stride > C) is never written;
 *   - an ignored row has loss 0, lse 0 and an all-zero gradient.
 * Any failure prints the case and exits 1; a sanitizer report exits nonzero too.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ARGS                                                                                 \
    int64_t x_stride, void *g, int64_t g_stride, const int64_t *target, const void *weight,  \
        int64_t rows, int64_t C, int64_t ignore_index, double eps, double z_loss, double cap, \
        double weight_sum, double scale, double *loss, double *lse, void *scratch
int64_t ce_forward_f32(const void *x, ARGS);
int64_t ce_forward_f64(const void *x, ARGS);
int64_t ce_forward_bf16(const void *x, ARGS);
int64_t ce_forward_f16(const void *x, ARGS);
typedef int64_t (*kernel_t)(const void *x, ARGS);

static const struct {
    const char *name;
    kernel_t kernel;
    size_t size, acc; /* storage and compute (weights, scratch) sizes in bytes */
} TYPES[] = {
    {"f32", ce_forward_f32, 4, 4},
    {"f64", ce_forward_f64, 8, 8},
    {"bf16", ce_forward_bf16, 2, 4},
    {"f16", ce_forward_f16, 2, 4},
};

static uint64_t state;
static uint64_t next(void) { /* splitmix64 */
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int64_t below(int64_t n) { return n <= 0 ? 0 : (int64_t)(next() % (uint64_t)n); }
static double uniform(void) { return (double)(next() >> 11) * 0x1.0p-53; }

/* Exact-size buffers: on the heap (sanitizer red zones), or ending at / starting after a
 * PROT_NONE page (hardware faults for vector accesses). Freed at the end of the case. */
static int placement;
static struct block {
    void *map, *heap;
    size_t length;
} blocks[16];
static int nblocks;

static void *exact(size_t bytes) {
    struct block *b = &blocks[nblocks++];
    memset(b, 0, sizeof *b);
    if (placement == 0 || bytes == 0) {
        b->heap = malloc(bytes ? bytes : 1);
        return b->heap;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t span = (bytes + page - 1) / page * page;
    b->length = span + 2 * page;
    char *base = mmap(NULL, b->length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    b->map = base;
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + span, page, PROT_NONE);
    return placement == 1 ? base + page + span - bytes : base + page;
}

static void release(void) {
    for (int k = 0; k < nblocks; ++k) {
        if (blocks[k].heap) free(blocks[k].heap);
        if (blocks[k].map) munmap(blocks[k].map, blocks[k].length);
    }
    nblocks = 0;
}

static void store(void *p, int t, double v) { /* one value in storage type t */
    if (t == 0) *(float *)p = (float)v;
    else if (t == 1) *(double *)p = v;
    else if (t == 2) {
        float f = (float)v;
        uint32_t u;
        memcpy(&u, &f, 4);
        uint16_t h = (uint16_t)(u >> 16);
        memcpy(p, &h, 2);
    } else *(_Float16 *)p = (_Float16)(float)v;
}

static double logit(void) {
    int64_t k = below(200);
    if (k == 0) return -INFINITY;
    if (k == 1) return INFINITY;
    if (k == 2) return NAN;
    if (k < 6) return (uniform() - 0.5) * 2e4; /* large: saturating exponentials */
    return (uniform() - 0.5) * 20.0;
}

static int64_t hostile(int64_t C) {
    switch (below(8)) {
    case 0: return INT64_MIN;
    case 1: return INT64_MAX;
    case 2: return -1;
    case 3: return C;
    case 4: return C + 1 + below(1000);
    case 5: return -1 - below(1000);
    case 6: return (int64_t)next();
    default: return INT32_MAX;
    }
}

static int fail(uint64_t seed, long it, const char *what) {
    fprintf(stderr, "kernel_fuzz: seed %llu case %ld: %s\n", (unsigned long long)seed, it, what);
    return 1;
}

int main(int argc, char **argv) {
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 0;
    long iterations = argc > 2 ? strtol(argv[2], NULL, 10) : 1000;
    state = seed;
    long bad_rows = 0, skipped_rows = 0;
    for (long it = 0; it < iterations; ++it) {
        placement = (int)below(3);
        const int t = (int)below(4);
        const size_t size = TYPES[t].size, acc = TYPES[t].acc;
        /* C around the 16-lane blocks of the AVX-512 rows, and a few wide rows */
        int64_t C = below(4) == 0 ? 1 + below(2100) : 1 + below(70);
        int64_t rows = below(5) == 0 ? 0 : 1 + below(12);
        int64_t x_stride = C + (below(3) == 0 ? below(40) : 0);
        const int gmode = (int)below(3); /* 0: no gradient, 1: a buffer apart, 2: g = x */
        int64_t g_stride = gmode == 2 ? x_stride : C + (below(3) == 0 ? below(40) : 0);
        const int64_t ignore_choices[] = {-100, -1, 0, C - 1, C, INT64_MIN, INT64_MAX};
        int64_t ignore = below(8) == 7 ? (int64_t)next() : ignore_choices[below(7)];
        const double eps = below(2) ? 0.0 : uniform();
        const double zl = below(3) ? 0.0 : uniform() * 1e-2;
        const double cap = below(3) ? 0.0 : 0.5 + uniform() * 50.0;
        const double scale = below(2) ? 1.0 : uniform();
        const int want_lse = (int)below(2), want_weight = (int)below(2);

        size_t x_count = rows ? (size_t)((rows - 1) * x_stride + C) : 0;
        size_t g_count = rows ? (size_t)((rows - 1) * g_stride + C) : 0;
        char *x = exact(x_count * size);
        for (size_t j = 0; j < x_count; ++j) store(x + j * size, t, logit());
        char *x_copy = malloc(x_count * size + 1);
        memcpy(x_copy, x, x_count * size);
        char *g = NULL;
        if (gmode == 1) {
            g = exact(g_count * size);
            memset(g, 0xA5, g_count * size); /* the gaps must keep this */
        } else if (gmode == 2) {
            g = x;
        }
        int64_t *target = exact((size_t)rows * sizeof(int64_t));
        int64_t expected = rows;
        for (int64_t i = 0; i < rows; ++i) {
            int64_t k = below(20);
            target[i] = k == 0 ? ignore : (k == 1 ? hostile(C) : below(C));
            int out = target[i] != ignore && (uint64_t)target[i] >= (uint64_t)C;
            if (out && expected == rows) expected = -(i + 1);
        }
        void *weight = NULL;
        double weight_sum = (double)C;
        if (want_weight) {
            weight = exact((size_t)C * acc);
            weight_sum = 0;
            for (int64_t j = 0; j < C; ++j) {
                double w = below(5) == 0 ? 0.0 : uniform() * 3.0;
                weight_sum += w;
                if (acc == 4) ((float *)weight)[j] = (float)w;
                else ((double *)weight)[j] = w;
            }
        }
        double *loss = exact((size_t)rows * sizeof(double));
        double *lse = want_lse ? exact((size_t)rows * sizeof(double)) : NULL;
        void *scratch = exact((size_t)(2 * C) * acc);

        int64_t got = TYPES[t].kernel(x, x_stride, g, g_stride, target, weight, rows, C, ignore,
                                      eps, zl, cap, weight_sum, scale, loss, lse, scratch);
        char what[256];
        if (got != expected) {
            snprintf(what, sizeof what, "%s rows %lld C %lld: returned %lld, expected %lld",
                     TYPES[t].name, (long long)rows, (long long)C, (long long)got,
                     (long long)expected);
            return fail(seed, it, what);
        }
        if (gmode != 2 && memcmp(x, x_copy, x_count * size) != 0)
            return fail(seed, it, "the logits were written");
        for (int64_t i = 0; gmode == 1 && i + 1 < rows; ++i)
            for (int64_t j = C; j < g_stride; ++j)
                if ((unsigned char)g[(size_t)(i * g_stride + j) * size] != 0xA5)
                    return fail(seed, it, "a gap between gradient rows was written");
        if (expected < 0) {
            bad_rows++;
        } else {
            for (int64_t i = 0; i < rows; ++i) {
                if (target[i] != ignore) continue;
                skipped_rows++;
                if (loss[i] != 0.0 || (lse && lse[i] != 0.0))
                    return fail(seed, it, "an ignored row has a nonzero loss or lse");
                for (int64_t j = 0; g && j < C * (int64_t)size; ++j)
                    if (g[(size_t)(i * g_stride) * size + (size_t)j] != 0)
                        return fail(seed, it, "an ignored row has a nonzero gradient");
            }
        }
        free(x_copy);
        release();
    }
    printf("kernel_fuzz: %ld cases (%ld stopped at a bad target, %ld ignored rows checked)\n",
           iterations, bad_rows, skipped_rows);
    return 0;
}
