/*
 * Fused softmax cross entropy, forward and gradient in one sweep over a block of rows.
 *
 * For each row x (C logits) with target y, class weights w, label smoothing eps, z-loss
 * coefficient zl and soft cap c (c = 0: no cap), with z = c tanh(x / c) or z = x:
 *
 *   pass A  m = max_j z_j, z_y                                  (reads x from memory)
 *   pass B  e_j = exp(z_j - m) into a scratch row, s = sum_j e_j (reads x from cache)
 *           sw = sum_j w_j (z_j - m)  (only with smoothing)
 *   loss    log s - (z_y - m) = -log p_y,  L = m + log s
 *           l = (1-eps) w_y (-log p_y) + (eps/C) (W log s - sw) + zl w_y L^2
 *   pass C  g_j = [r e_j / s - (eps/C) w_j - (1-eps) w_y [j = y]] * scale * dz_j/dx_j
 *           with r = (1-eps) w_y + (eps/C) W + 2 zl w_y L        (in the scratch row)
 *   out     the scratch row is streamed to g                     (writes g to memory)
 *
 * The derivation is in crossentropy.gradients.sparse_softmax_cross_entropy, the readable
 * reference that this kernel is tested against. Each logit is read from memory once and
 * each gradient written once, with non-temporal stores, so g's lines are never read first;
 * x's row and the scratch row (C values each) stay in cache between the passes. g may
 * alias x (inplace_backward): x's row is fully read before its gradient is written.
 *
 * The softmax is never stored apart from the gradient, and no log-softmax is formed.
 * Half-precision rows are loaded into float and computed in float (the scratch row is
 * float), and only the final gradient is rounded to the storage type.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 (the shifted logits), vectorisable: 2^n * e^r with n = round(x / ln 2)
 * and |r| <= ln(2) / 2, e^r by a degree-7 polynomial (Cephes' expf coefficients, about
 * 1 ulp). Below -87.3 the true value is subnormal (< FLT_MIN) and is returned as 0, as is
 * exp(-inf); NaN stays NaN. */
static inline float exp_neg_f32(float x) {
    const float lo = -87.3f, hi = 88.7f; /* exp(88.7) rounds to 2^128 = inf: the +inf case */
    float xc = x < lo ? lo : (x > hi ? hi : x);
    float n = __builtin_roundf(xc * 1.44269504088896341f);
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float out = p * scale;
    out = x < lo ? 0.0f : out;
    return x != x ? x : out;
}

static inline double exp_neg_f64(double x) { return exp(x); }

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (f != f) return (uint16_t)0x7FC0;
    u += 0x7FFFu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}


/* dst[0:n] = src[0:n] with non-temporal (streaming) stores where the target supports them:
 * the gradient is not read again by this kernel, so it should not evict x's row from cache
 * nor cost a read of each line before it is written. */
static inline void stream_f32(float *dst, const float *src, int64_t n) {
    int64_t j = 0;
#if defined(__AVX512F__)
    for (; j < n && ((uintptr_t)(dst + j) & 63); ++j) dst[j] = src[j];
    for (; j + 16 <= n; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
#elif defined(__AVX__)
    for (; j < n && ((uintptr_t)(dst + j) & 31); ++j) dst[j] = src[j];
    for (; j + 8 <= n; j += 8) _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
#endif
    for (; j < n; ++j) dst[j] = src[j];
}

static inline void stream_f64(double *dst, const double *src, int64_t n) {
    int64_t j = 0;
#if defined(__AVX512F__)
    for (; j < n && ((uintptr_t)(dst + j) & 63); ++j) dst[j] = src[j];
    for (; j + 8 <= n; j += 8) _mm512_stream_pd(dst + j, _mm512_loadu_pd(src + j));
#elif defined(__AVX__)
    for (; j < n && ((uintptr_t)(dst + j) & 31); ++j) dst[j] = src[j];
    for (; j + 4 <= n; j += 4) _mm256_stream_pd(dst + j, _mm256_loadu_pd(src + j));
#endif
    for (; j < n; ++j) dst[j] = src[j];
}

static inline void store_bf16(uint16_t *dst, const float *src, int64_t n) {
    _Pragma("omp simd") for (int64_t j = 0; j < n; ++j) dst[j] = f32_to_bf16(src[j]);
}

static inline void store_f16(_Float16 *dst, const float *src, int64_t n) {
    _Pragma("omp simd") for (int64_t j = 0; j < n; ++j) dst[j] = (_Float16)src[j];
}

static inline float f16_to_f32(_Float16 h) { return (float)h; }

#define IDENTITY(v) (v)

/*
 * One kernel per storage type T, computing in ACC with the exponential EXP.
 * Returns the number of rows processed.
 *   x, g        row-major (rows, C) with row strides in elements; g may equal x, or be
 *               NULL when only the loss is wanted (no gradient pass, nothing written)
 *   target      (rows,) class ids, already validated to be in [0, C) or ignore_index
 *   weight      (C,) class weights or NULL; weight_sum = sum_c w_c (C when NULL)
 *   scale       d(reduced loss)/d(row loss): 1/count for a mean, 1 otherwise
 *   loss        (rows,) per-row losses, unscaled
 *   scratch     (C,) ACC values private to the calling thread
 */
#define DEFINE_KERNEL(NAME, T, ACC, LOAD, WRITE_ROW, EXP, LOG, TANH)                          \
    int64_t NAME(const T *x, int64_t x_stride, T *g, int64_t g_stride, const int64_t *target, \
                 const ACC *weight, int64_t rows, int64_t C, int64_t ignore_index, double eps_, \
                 double z_loss_, double cap_, double weight_sum_, double scale_, double *loss,  \
                 ACC *scratch) {                                                                \
        const ACC eps = (ACC)eps_, zl = (ACC)z_loss_, cap = (ACC)cap_;                        \
        const ACC scale = (ACC)scale_, W = (ACC)weight_sum_;                                  \
        const ACC smooth = eps / (ACC)C;                                                       \
        for (int64_t i = 0; i < rows; ++i) {                                                   \
            const T *xr = x + i * x_stride;                                                    \
            T *gr = g ? g + i * g_stride : (T *)0;                                             \
            const int64_t y = target[i];                                                       \
            const ACC wy = (y == ignore_index) ? (ACC)0 : (weight ? weight[y] : (ACC)1);       \
            if (y == ignore_index || (wy == 0 && eps == 0)) {                                  \
                /* ignored, or weighted out entirely: zero loss, exactly zero gradient */      \
                loss[i] = 0.0;                                                                 \
                if (!g) continue;                                                              \
                for (int64_t j = 0; j < C; ++j) scratch[j] = 0;                                \
                WRITE_ROW(gr, scratch, C);                                                     \
                continue;                                                                      \
            }                                                                                  \
            /* pass A: the row maximum of z (and z_y) */                                       \
            ACC m = -INFINITY;                                                                 \
            if (cap > 0) {                                                                     \
                for (int64_t j = 0; j < C; ++j) {                                              \
                    ACC z = cap * TANH(LOAD(xr[j]) / cap);                                     \
                    m = z > m ? z : m;                                                         \
                }                                                                              \
            } else {                                                                           \
                _Pragma("omp simd reduction(max : m)") for (int64_t j = 0; j < C; ++j) {      \
                    ACC z = LOAD(xr[j]);                                                       \
                    m = z > m ? z : m;                                                         \
                }                                                                              \
            }                                                                                  \
            const ACC xy = LOAD(xr[y]);                                                        \
            const ACC zy = cap > 0 ? cap * TANH(xy / cap) : xy;                                \
            /* every z = -inf: shift by 0 so that z - m stays -inf, never nan */              \
            const ACC shift = isfinite(m) ? m : (ACC)0;                                        \
            /* pass B: e_j into the scratch row, s = sum e_j, sw = sum w_j (z_j - m) */        \
            ACC s = 0, sw = 0;                                                                 \
            if (cap > 0 || eps > 0) {                                                          \
                for (int64_t j = 0; j < C; ++j) {                                              \
                    ACC xj = LOAD(xr[j]);                                                      \
                    ACC d = (cap > 0 ? cap * TANH(xj / cap) : xj) - shift;                     \
                    ACC e = EXP(d);                                                            \
                    scratch[j] = e;                                                            \
                    s += e;                                                                    \
                    if (eps > 0) {                                                             \
                        ACC wj = weight ? weight[j] : (ACC)1;                                  \
                        sw += wj == 0 ? (ACC)0 : wj * d;                                       \
                    }                                                                          \
                }                                                                              \
            } else {                                                                           \
                _Pragma("omp simd reduction(+ : s)") for (int64_t j = 0; j < C; ++j) {        \
                    ACC e = EXP(LOAD(xr[j]) - shift);                                          \
                    scratch[j] = e;                                                            \
                    s += e;                                                                    \
                }                                                                              \
            }                                                                                  \
            const ACC log_s = LOG(s);                                                          \
            const ACC lse = shift + log_s;                                                     \
            /* the row's loss: -log p_y = log s - (z_y - m), each term 0 when its weight is */ \
            const ACC target_coef = (1 - eps) * wy;                                            \
            double l = target_coef == 0 ? 0.0 : (double)target_coef * (log_s - (zy - shift)); \
            if (eps > 0) l += (double)smooth * ((double)W * log_s - (double)sw);               \
            if (zl > 0) l += (double)(zl * wy) * (double)lse * (double)lse;                   \
            loss[i] = l;                                                                       \
            if (!g) continue; /* loss only: no gradient wanted */                              \
            /* pass C: the gradient, in the scratch row */                                     \
            ACC r = target_coef + smooth * W;                                                  \
            if (zl > 0) r += 2 * zl * wy * lse;                                                \
            const ACC a = r * scale / s;                                                       \
            if (eps > 0) {                                                                     \
                for (int64_t j = 0; j < C; ++j) {                                              \
                    ACC wj = weight ? weight[j] : (ACC)1;                                      \
                    scratch[j] = a * scratch[j] - smooth * wj * scale;                         \
                }                                                                              \
            } else {                                                                           \
                _Pragma("omp simd") for (int64_t j = 0; j < C; ++j) scratch[j] *= a;          \
            }                                                                                  \
            scratch[y] -= target_coef * scale;                                                 \
            if (cap > 0) {                                                                     \
                for (int64_t j = 0; j < C; ++j) {                                              \
                    ACC t = TANH(LOAD(xr[j]) / cap); /* dz/dx = 1 - tanh^2(x / c) */           \
                    scratch[j] *= 1 - t * t;                                                   \
                }                                                                              \
            }                                                                                  \
            WRITE_ROW(gr, scratch, C);                                                         \
        }                                                                                      \
        _mm_sfence(); /* streaming stores are visible before the caller reads g */            \
        return rows;                                                                           \
    }

DEFINE_KERNEL(ce_forward_f32, float, float, IDENTITY, stream_f32, exp_neg_f32, logf, tanhf)
DEFINE_KERNEL(ce_forward_f64, double, double, IDENTITY, stream_f64, exp_neg_f64, log, tanh)
DEFINE_KERNEL(ce_forward_bf16, uint16_t, float, bf16_to_f32, store_bf16, exp_neg_f32, logf, tanhf)
DEFINE_KERNEL(ce_forward_f16, _Float16, float, f16_to_f32, store_f16, exp_neg_f32, logf, tanhf)
