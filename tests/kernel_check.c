/*
 * A small check of the fused cross-entropy kernel (_cross_entropy.c) against the formula in
 * double precision, for any target the kernel compiles for: tests/test_packaging.py builds
 * it for aarch64 and runs it under qemu, and natively.
 *
 *   cc -O2 tests/kernel_check.c src/crossentropy/torch/_cross_entropy.c -lm && ./a.out
 *
 * For each row x (C logits) with target y, class weights w (W = sum w), smoothing eps,
 * z-loss zl, soft cap c (z = c tanh(x / c), or z = x without a cap) and scale:
 *
 *   L    = log sum_j exp z_j
 *   loss = (1 - eps) w_y (L - z_y) + (eps / C) (W L - sum_j w_j z_j) + zl w_y L^2
 *   g_j  = [r p_j - (eps / C) w_j - (1 - eps) w_y [j = y]] scale dz_j/dx_j,
 *          p_j = exp(z_j - L),  r = (1 - eps) w_y + (eps / C) W + 2 zl w_y L
 *
 * float32 and float64 rows of several widths (one that does not fill a vector), with and
 * without weights, smoothing, z-loss and cap; an ignored row (loss 0, gradient 0); and a
 * target outside [0, C), which the kernel refuses at its row (it returns -(i + 1)).
 * Prints one line per failure and exits 1; prints "kernel_check: N cases passed".
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ARGS                                                                                 \
    int64_t x_stride, void *g, int64_t g_stride, const int64_t *target, const void *weight,  \
        int64_t rows, int64_t C, int64_t ignore_index, double eps, double z_loss, double cap, \
        double weight_sum, double scale, double *loss, double *lse, void *scratch
int64_t ce_forward_f32(const void *x, ARGS);
int64_t ce_forward_f64(const void *x, ARGS);

enum { ROWS = 4, IGNORE = -100 };
static int failures = 0, cases = 0;

static double draw(uint64_t *state) { /* a logit in [-8, 8) */
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*state >> 11) / 9007199254740992.0 * 16.0 - 8.0;
}

static void fail(const char *what, int f64, int64_t C, double eps, double zl, double cap,
                 int weighted, double got, double want) {
    printf("FAIL %s: %s C=%lld eps=%g z_loss=%g cap=%g weighted=%d: got %.9g, want %.9g\n", what,
           f64 ? "f64" : "f32", (long long)C, eps, zl, cap, weighted, got, want);
    ++failures;
}

/* One call over ROWS rows (the last one ignored) against the formula. */
static void check(int f64, int64_t C, double eps, double zl, double cap, int weighted) {
    const size_t size = f64 ? sizeof(double) : sizeof(float);
    double *xd = malloc(ROWS * C * sizeof(double)), *w = malloc(C * sizeof(double));
    void *x = malloc(ROWS * C * size), *g = malloc(ROWS * C * size);
    void *wk = malloc(C * size), *scratch = malloc(2 * C * size);
    int64_t target[ROWS];
    double loss[ROWS], lse[ROWS], W = 0, scale = 0.25;
    uint64_t state = (uint64_t)C * 7919u + (uint64_t)(eps * 10) + (uint64_t)(cap * 3);
    for (int64_t k = 0; k < ROWS * C; ++k) {
        double v = draw(&state);
        if (f64) ((double *)x)[k] = v; else ((float *)x)[k] = (float)v;
        xd[k] = f64 ? v : (double)(float)v; /* the values the kernel sees */
    }
    for (int64_t j = 0; j < C; ++j) {
        w[j] = weighted ? 0.5 + (double)(j % 5) / 4 : 1.0;
        if (f64) ((double *)wk)[j] = w[j]; else ((float *)wk)[j] = (float)w[j];
        W += w[j];
    }
    for (int i = 0; i < ROWS; ++i) target[i] = (int64_t)((i * 7 + 3) % C);
    target[ROWS - 1] = IGNORE;
    int64_t (*kernel)(const void *, ARGS) = f64 ? ce_forward_f64 : ce_forward_f32;
    int64_t done = kernel(x, C, g, C, target, weighted ? wk : NULL, ROWS, C, IGNORE, eps, zl, cap,
                          W, scale, loss, lse, scratch);
    ++cases;
    if (done != ROWS) fail("rows processed", f64, C, eps, zl, cap, weighted, done, ROWS);
    const double tol = f64 ? 1e-12 : 2e-5;
    for (int i = 0; i < ROWS; ++i) {
        const double *xr = xd + i * C;
        const int64_t y = target[i];
        double want_loss = 0, L = 0, m = -INFINITY, sz = 0;
        if (y != IGNORE) {
            for (int64_t j = 0; j < C; ++j) {
                double z = cap > 0 ? cap * tanh(xr[j] / cap) : xr[j];
                m = z > m ? z : m;
            }
            double s = 0;
            for (int64_t j = 0; j < C; ++j) {
                double z = cap > 0 ? cap * tanh(xr[j] / cap) : xr[j];
                s += exp(z - m);
                sz += w[j] * z;
            }
            L = m + log(s);
            double zy = cap > 0 ? cap * tanh(xr[y] / cap) : xr[y];
            want_loss = (1 - eps) * w[y] * (L - zy) + eps / C * (W * L - sz) + zl * w[y] * L * L;
        }
        if (fabs(loss[i] - want_loss) > tol * (1 + fabs(want_loss)))
            fail("loss", f64, C, eps, zl, cap, weighted, loss[i], want_loss);
        double r = y == IGNORE ? 0 : (1 - eps) * w[y] + eps / C * W + 2 * zl * w[y] * L;
        for (int64_t j = 0; j < C; ++j) {
            double want = 0;
            if (y != IGNORE) {
                double t = cap > 0 ? tanh(xr[j] / cap) : 0, z = cap > 0 ? cap * t : xr[j];
                want = r * exp(z - L) - eps / C * w[j] - (j == y ? (1 - eps) * w[y] : 0);
                want *= scale * (cap > 0 ? 1 - t * t : 1);
            }
            double got = f64 ? ((double *)g)[i * C + j] : ((float *)g)[i * C + j];
            if (fabs(got - want) > tol * (1 + fabs(want)) || (y == IGNORE && got != 0)) {
                fail("gradient", f64, C, eps, zl, cap, weighted, got, want);
                break;
            }
        }
    }
    /* a target outside [0, C) in row 2: refused there, before it is read */
    target[2] = C;
    done = kernel(x, C, g, C, target, NULL, ROWS, C, IGNORE, eps, zl, cap, (double)C, scale, loss,
                  lse, scratch);
    if (done != -3) fail("bad target at row 2", f64, C, eps, zl, cap, weighted, done, -3);
    target[2] = -1;
    done = kernel(x, C, NULL, 0, target, NULL, ROWS, C, IGNORE, eps, zl, cap, (double)C, scale,
                  loss, lse, scratch);
    if (done != -3) fail("negative target at row 2", f64, C, eps, zl, cap, weighted, done, -3);
    free(xd), free(w), free(x), free(g), free(wk), free(scratch);
}

int main(void) {
    const int64_t widths[] = {1, 7, 33, 1000};
    const double options[][3] = {{0, 0, 0}, {0.1, 0, 0}, {0, 1e-3, 0}, {0, 0, 2.5}, {0.2, 1e-3, 3}};
    for (int f64 = 0; f64 < 2; ++f64)
        for (size_t c = 0; c < sizeof widths / sizeof *widths; ++c)
            for (size_t o = 0; o < sizeof options / sizeof *options; ++o)
                for (int weighted = 0; weighted < 2; ++weighted)
                    check(f64, widths[c], options[o][0], options[o][1], options[o][2], weighted);
    if (failures) return 1;
    printf("kernel_check: %d cases passed\n", cases);
    return 0;
}
