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
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The x86 instruction sets are used only where the compiler targets them (-march=...);
 * elsewhere (aarch64, where -O3 vectorises the portable loops with NEON) the same kernel
 * is plain C. Streaming stores need a store fence before the caller reads what they
 * wrote; plain stores do not. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define STORE_FENCE() _mm_sfence()
#if defined(__AVX512F__) && defined(__AVX512BW__)
#define CE_AVX512 1 /* the AVX-512 rows below, 16 float lanes */
#else
#define CE_AVX512 0
#endif
#if defined(__AVX__)
#define CE_AVX 1 /* 256-bit streaming stores */
#else
#define CE_AVX 0
#endif
#else
#define STORE_FENCE() ((void)0)
#define CE_AVX512 0
#define CE_AVX 0
#endif

/* exp(x) for x <= 0 (the shifted logits), vectorisable: 2^n * e^r with n = round(x / ln 2)
 * and |r| <= ln(2) / 2, e^r by a degree-7 polynomial (Cephes' expf coefficients, about
 * 1 ulp). Below -87.3 the true value is subnormal (< FLT_MIN) and is returned as 0, as is
 * exp(-inf); NaN stays NaN. */
static inline float exp_neg_f32(float x) {
    const float lo = -87.3f, hi = 88.7f; /* exp(88.7) rounds to 2^128 = inf: the +inf case */
    /* NaN fails both tests and becomes lo (returned as NaN below): float -> int of NaN is
     * undefined behaviour */
    float xc = x >= lo ? (x <= hi ? x : hi) : lo;
    /* n = round(xc / ln 2) by adding and subtracting 1.5 * 2^23 (|xc / ln 2| < 2^22, so the
     * sum's last bit is the units; ties to even): unlike roundf, this vectorises on every
     * SIMD target, SSE2 included, where a scalar loop would also sum s in one lane, less
     * accurately. */
    const float magic = 12582912.0f;
    float n = (xc * 1.44269504088896341f + magic) - magic;
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
#if CE_AVX512
    for (; j < n && ((uintptr_t)(dst + j) & 63); ++j) dst[j] = src[j];
    for (; j + 16 <= n; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
#elif CE_AVX
    for (; j < n && ((uintptr_t)(dst + j) & 31); ++j) dst[j] = src[j];
    for (; j + 8 <= n; j += 8) _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
#endif
    for (; j < n; ++j) dst[j] = src[j];
}

static inline void stream_f64(double *dst, const double *src, int64_t n) {
    int64_t j = 0;
#if CE_AVX512
    for (; j < n && ((uintptr_t)(dst + j) & 63); ++j) dst[j] = src[j];
    for (; j + 8 <= n; j += 8) _mm512_stream_pd(dst + j, _mm512_loadu_pd(src + j));
#elif CE_AVX
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
 * Returns the number of rows processed, or -(i + 1) when row i's target is neither in
 * [0, C) nor ignore_index: the kernel stops there, before reading that row, and leaves
 * the losses and gradients of its block incomplete (the caller raises). Whatever the
 * caller checked, no index outside [0, C) of a row, of weight or of the scratch row is
 * ever formed.
 *   x, g        row-major (rows, C) with row strides in elements; g may equal x, or be
 *               NULL when only the loss is wanted (no gradient pass, nothing written)
 *   target      (rows,) class ids in [0, C), or ignore_index to skip the row
 *   weight      (C,) class weights or NULL; weight_sum = sum_c w_c (C when NULL)
 *   scale       d(reduced loss)/d(row loss): 1/count for a mean, 1 otherwise
 *   loss        (rows,) per-row losses, unscaled
 *   lse_out     (rows,) per-row logsumexp of z (0 for skipped rows), or NULL
 *   scratch     (2 C,) ACC values private to the calling thread (the generic kernel uses
 *               the first C, the pipelined AVX-512 rows both halves)
 */
#define DEFINE_KERNEL(NAME, T, ACC, LOAD, WRITE_ROW, EXP, LOG, TANH)                          \
    int64_t NAME(const T *x, int64_t x_stride, T *g, int64_t g_stride, const int64_t *target, \
                 const ACC *weight, int64_t rows, int64_t C, int64_t ignore_index, double eps_, \
                 double z_loss_, double cap_, double weight_sum_, double scale_, double *loss,  \
                 double *lse_out, ACC *scratch) {                                                                \
        const ACC eps = (ACC)eps_, zl = (ACC)z_loss_, cap = (ACC)cap_;                        \
        const ACC scale = (ACC)scale_, W = (ACC)weight_sum_;                                  \
        const ACC smooth = eps / (ACC)C;                                                       \
        for (int64_t i = 0; i < rows; ++i) {                                                   \
            const T *xr = x + i * x_stride;                                                    \
            T *gr = g ? g + i * g_stride : (T *)0;                                             \
            const int64_t y = target[i];                                                       \
            /* one unsigned compare: a negative y wraps to >= 2^63, so out of range too */     \
            if (y != ignore_index && (uint64_t)y >= (uint64_t)C) {                             \
                STORE_FENCE();                                                                  \
                return -(i + 1);                                                               \
            }                                                                                  \
            const ACC wy = (y == ignore_index) ? (ACC)0 : (weight ? weight[y] : (ACC)1);       \
            if (y == ignore_index || (wy == 0 && eps == 0)) {                                  \
                /* ignored, or weighted out entirely: zero loss, exactly zero gradient */      \
                loss[i] = 0.0;                                                                 \
                if (lse_out) lse_out[i] = 0.0;                                                 \
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
            if (lse_out) lse_out[i] = (double)lse;                                             \
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
        STORE_FENCE(); /* streaming stores are visible before the caller reads g */            \
        return rows;                                                                           \
    }

DEFINE_KERNEL(ce_forward_f32_generic, float, float, IDENTITY, stream_f32, exp_neg_f32, logf, tanhf)
DEFINE_KERNEL(ce_forward_f64, double, double, IDENTITY, stream_f64, exp_neg_f64, log, tanh)
DEFINE_KERNEL(ce_forward_bf16_generic, uint16_t, float, bf16_to_f32, store_bf16, exp_neg_f32, logf, tanhf)
DEFINE_KERNEL(ce_forward_f16_generic, _Float16, float, f16_to_f32, store_f16, exp_neg_f32, logf, tanhf)

/*
 * float32 without smoothing or soft-capping, the common case, on AVX-512: the same three
 * passes, 16 lanes at a time, with a cheaper exponential and pass C fused into the
 * streaming store. Anything else goes to the generic kernel above.
 */
#if CE_AVX512

/* exp(d) for d <= 0: 2^n e^r with n = round(d / ln 2) and r = d - n ln 2 (Cody-Waite, two
 * steps, exact for these n), e^r by a degree-6 polynomial fitted to the relative error on
 * [-ln 2 / 2, ln 2 / 2] (1.6 ulp in float32), 2^n applied by vscalefps, which underflows
 * to 0 (so exp(-inf) = 0) and keeps NaN. */
static inline __m512 exp16_neg(__m512 d) {
    d = _mm512_max_ps(_mm512_set1_ps(-110.0f), d); /* NaN in d stays NaN */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(d, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), d);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.3843653723597527e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.37415549904108e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166800156235695e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666431725025177e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.999999403953552e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 16 values of each storage type in and out of float lanes: loads (whole and masked),
 * streaming stores of 16 lanes (alignment ALIGN bytes), and single values. */
/* 16 values of each storage type in and out of float lanes: loads (whole and masked),
 * stores of 16 lanes, streaming (to an address aligned to ALIGN bytes) or not, and single
 * values. */
#define F32_LOAD(p) _mm512_loadu_ps(p)
#define F32_MASKLOAD(k, p) _mm512_maskz_loadu_ps(k, p)
#define F32_NTSTORE(p, v) _mm512_stream_ps(p, v)
#define F32_STORE(p, v) _mm512_storeu_ps(p, v)
#define F32_ONE(v) (v)
#define F32_FROM(v) (v)

#define BF16_WIDEN(h) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
#define BF16_LOAD(p) BF16_WIDEN(_mm256_loadu_si256((const __m256i *)(p)))
#define BF16_MASKLOAD(k, p) BF16_WIDEN(_mm256_maskz_loadu_epi16(k, p))
#if defined(__AVX512BF16__)
#define BF16_NARROW(v) ((__m256i)_mm512_cvtneps_pbh(v))
#else
#define BF16_NARROW(v) bf16_round16(v)
#endif
#define BF16_NTSTORE(p, v) _mm256_stream_si256((__m256i *)(p), BF16_NARROW(v))
#define BF16_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), BF16_NARROW(v))
#define BF16_ONE(v) f32_to_bf16(v)
#define BF16_FROM(v) bf16_to_f32(v)

#define F16_NARROW(v) _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define F16_LOAD(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define F16_MASKLOAD(k, p) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p))
#define F16_NTSTORE(p, v) _mm256_stream_si256((__m256i *)(p), F16_NARROW(v))
#define F16_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), F16_NARROW(v))
#define F16_ONE(v) ((_Float16)(v))
#define F16_FROM(v) ((float)(v))

#if !defined(__AVX512BF16__)
/* float -> bfloat16, round to nearest even, NaN kept quiet: 16 lanes */
static inline __m256i bf16_round16(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC00000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}
#endif

/*
 * The rows of one thread, software-pipelined: while pass B computes row i's exponentials
 * (compute-bound), the same loop streams out row i-1's gradient (memory-bound) and
 * prefetches row i+1's logits, so that the arithmetic and the memory traffic overlap
 * instead of taking turns. Two scratch rows alternate: row i's exponentials go into one
 * while row i-1's are read from the other. The math per row is that of the generic kernel
 * with eps = 0 and no cap.
 */
#define DEFINE_ROWS_AVX512(NAME, T, LOAD, MASKLOAD, NTSTORE, STORE, ONE, FROM, ALIGN)          \
    static int64_t NAME(const T *x, int64_t x_stride, T *g, int64_t g_stride,                   \
                        const int64_t *target, const float *weight, int64_t rows, int64_t C,    \
                        int64_t ignore_index, float zl, float scale, double *loss,               \
                        double *lse_out, float *scratch) {                                                         \
        const __mmask16 tail = (__mmask16)((1u << (C % 16)) - 1u);                               \
        const int64_t body = C - C % 16;                                                         \
        float *cur = scratch, *old = scratch + C;                                                \
        /* the row whose gradient is still to be written: its output, a, w_y scale and y */     \
        T *pend = (T *)0;                                                                        \
        float pend_a = 0, pend_ty = 0;                                                           \
        int64_t pend_y = 0;                                                                      \
        int pend_stream = 0;                                                                     \
        for (int64_t i = 0; i < rows; ++i) {                                                     \
            const T *xr = x + i * x_stride;                                                      \
            T *gr = g ? g + i * g_stride : (T *)0;                                               \
            const T *next = i + 1 < rows ? x + (i + 1) * x_stride : (const T *)0;              \
            const int64_t y = target[i];                                                         \
            if (y != ignore_index && (uint64_t)y >= (uint64_t)C) { /* as in the generic kernel */\
                STORE_FENCE();                                                                    \
                return -(i + 1);                                                                 \
            }                                                                                    \
            const float wy = (y == ignore_index) ? 0.0f : (weight ? weight[y] : 1.0f);           \
            if (wy == 0) { /* ignored or weighted out: zero loss, exactly zero gradient */       \
                loss[i] = 0.0;                                                                   \
                if (lse_out) lse_out[i] = 0.0;                                                   \
                if (gr) memset(gr, 0, (size_t)C * sizeof(T));                                     \
                continue;                                                                        \
            }                                                                                    \
            /* pass A: the maximum (the row was prefetched while the previous one ran) */       \
            __m512 vm = _mm512_set1_ps(-INFINITY);                                               \
            for (int64_t j = 0; j < body; j += 16) vm = _mm512_max_ps(vm, LOAD(xr + j));         \
            if (tail) vm = _mm512_mask_max_ps(vm, tail, vm, MASKLOAD(tail, xr + body));          \
            const float m = _mm512_reduce_max_ps(vm);                                            \
            const float shift = isfinite(m) ? m : 0.0f;                                          \
            const __m512 vshift = _mm512_set1_ps(shift);                                         \
            const __m512 pa = _mm512_set1_ps(pend_a), pty = _mm512_set1_ps(pend_ty);             \
            /* pass B: e_j = exp(x_j - m) into cur, s = sum e_j; interleaved: the pending     \
             * row's gradient g_j = a e_j - w_y scale [j = y] out of old, and a prefetch */     \
            __m512 vs = _mm512_setzero_ps();                                                     \
            for (int64_t j = 0; j < body; j += 16) {                                             \
                __m512 e = exp16_neg(_mm512_sub_ps(LOAD(xr + j), vshift));                       \
                _mm512_storeu_ps(cur + j, e);                                                    \
                vs = _mm512_add_ps(vs, e);                                                       \
                if (pend) {                                                                      \
                    __m512 v = _mm512_mul_ps(pa, _mm512_loadu_ps(old + j));                      \
                    if ((uint64_t)(pend_y - j) < 16)                                             \
                        v = _mm512_mask_sub_ps(v, (__mmask16)(1u << (pend_y - j)), v, pty);      \
                    if (pend_stream) NTSTORE(pend + j, v); else STORE(pend + j, v);              \
                }                                                                                \
                if (next) _mm_prefetch((const char *)(next + j), _MM_HINT_T1);                   \
            }                                                                                    \
            if (tail) {                                                                          \
                __m512 e = exp16_neg(_mm512_sub_ps(MASKLOAD(tail, xr + body), vshift));          \
                e = _mm512_maskz_mov_ps(tail, e);                                                \
                _mm512_mask_storeu_ps(cur + body, tail, e);                                      \
                vs = _mm512_add_ps(vs, e);                                                       \
            }                                                                                    \
            if (pend)                                                                            \
                for (int64_t j = body; j < C; ++j)                                               \
                    pend[j] = ONE(pend_a * old[j] - (j == pend_y ? pend_ty : 0.0f));              \
            const float s = _mm512_reduce_add_ps(vs);                                            \
            const float log_s = logf(s), lse = shift + log_s;                                    \
            double l = (double)wy * (double)(log_s - (FROM(xr[y]) - shift));                    \
            if (zl > 0) l += (double)(zl * wy) * (double)lse * (double)lse;                     \
            loss[i] = l;                                                                         \
            if (lse_out) lse_out[i] = (double)lse;                                               \
            /* this row's gradient is written during the next row's pass B */                   \
            pend = gr;                                                                           \
            if (gr) {                                                                            \
                float r = wy;                                                                    \
                if (zl > 0) r += 2 * zl * wy * lse;                                              \
                pend_a = r * scale / s;                                                          \
                pend_ty = wy * scale;                                                            \
                pend_y = y;                                                                      \
                pend_stream = ((uintptr_t)gr & (ALIGN - 1)) == 0;                                \
                float *swap = cur;                                                               \
                cur = old;                                                                       \
                old = swap;                                                                      \
            }                                                                                    \
        }                                                                                        \
        if (pend) { /* the last row's gradient */                                                \
            const __m512 pa = _mm512_set1_ps(pend_a), pty = _mm512_set1_ps(pend_ty);             \
            for (int64_t j = 0; j < body; j += 16) {                                             \
                __m512 v = _mm512_mul_ps(pa, _mm512_loadu_ps(old + j));                          \
                if ((uint64_t)(pend_y - j) < 16)                                                 \
                    v = _mm512_mask_sub_ps(v, (__mmask16)(1u << (pend_y - j)), v, pty);          \
                if (pend_stream) NTSTORE(pend + j, v); else STORE(pend + j, v);                  \
            }                                                                                    \
            for (int64_t j = body; j < C; ++j)                                                   \
                pend[j] = ONE(pend_a * old[j] - (j == pend_y ? pend_ty : 0.0f));                  \
        }                                                                                        \
        STORE_FENCE(); /* streaming stores are visible before the caller reads g */              \
        return rows;                                                                             \
    }

DEFINE_ROWS_AVX512(rows_f32_avx512, float, F32_LOAD, F32_MASKLOAD, F32_NTSTORE, F32_STORE, F32_ONE, F32_FROM, 64)
DEFINE_ROWS_AVX512(rows_bf16_avx512, uint16_t, BF16_LOAD, BF16_MASKLOAD, BF16_NTSTORE, BF16_STORE, BF16_ONE, BF16_FROM, 32)
DEFINE_ROWS_AVX512(rows_f16_avx512, _Float16, F16_LOAD, F16_MASKLOAD, F16_NTSTORE, F16_STORE, F16_ONE, F16_FROM, 32)
#endif

/* The exported kernels: the AVX-512 rows for the common case (no smoothing, no cap), the
 * generic kernel otherwise. */
#if CE_AVX512
#define FAST_ROWS(ROWS)                                                                        \
    if (eps == 0 && cap == 0)                                                                  \
        return ROWS(x, x_stride, g, g_stride, target, weight, rows, C, ignore_index,          \
                    (float)z_loss, (float)scale, loss, lse_out, scratch);
#else
#define FAST_ROWS(ROWS)
#endif

#define DEFINE_DISPATCH(NAME, T, ROW, GENERIC)                                                 \
    int64_t NAME(const T *x, int64_t x_stride, T *g, int64_t g_stride, const int64_t *target,  \
                 const float *weight, int64_t rows, int64_t C, int64_t ignore_index, double eps, \
                 double z_loss, double cap, double weight_sum, double scale, double *loss,       \
                 double *lse_out, float *scratch) {                                              \
        FAST_ROWS(ROW)                                                                           \
        return GENERIC(x, x_stride, g, g_stride, target, weight, rows, C, ignore_index, eps,   \
                       z_loss, cap, weight_sum, scale, loss, lse_out, scratch);                 \
    }

DEFINE_DISPATCH(ce_forward_f32, float, rows_f32_avx512, ce_forward_f32_generic)
DEFINE_DISPATCH(ce_forward_bf16, uint16_t, rows_bf16_avx512, ce_forward_bf16_generic)
DEFINE_DISPATCH(ce_forward_f16, _Float16, rows_f16_avx512, ce_forward_f16_generic)

/*
 * The CPU's x86-64 microarchitecture level, as the prebuilt kernels are chosen: 4 when it
 * runs the x86-64-v4 build (AVX-512 F/BW/CD/DQ/VL), 3 the x86-64-v3 one (AVX2, FMA, BMI,
 * F16C, LZCNT, MOVBE), 1 the baseline (SSE2) one; 0 on other architectures. The loader
 * asks the baseline build, which runs everywhere. The features are checked one by one
 * (both GCC and Clang know these names), and the compiler's check includes the operating
 * system's support for the wide registers.
 */
int64_t ce_cpu_level(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const int v3 = __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") &&
                   __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                   __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma") &&
                   __builtin_cpu_supports("lzcnt") && __builtin_cpu_supports("movbe");
    const int v4 = v3 && __builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512cd") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    return v4 ? 4 : v3 ? 3 : 1;
#else
    return 0;
#endif
}

/*
 * Per-token statistics and gradient: the row math of crossentropy.torch._tokens (its
 * docstring has the derivation and the decided answers for +-inf and NaN logits), over a
 * block of rows of a (rows, width) matrix whose columns are the classes [start, start +
 * width) of the vocabulary. With u = z / T (a division, as the torch operations do):
 *
 *   statistics  pass A  m = max u (NaN if a logit is), from max z (rounding by a division
 *                       by T > 0 is monotone, so max z / T is exactly the largest u)
 *               pass B  d = u - shift (shift = m where finite, else 0; the row from cache),
 *                       s = sum e^d, t = sum e^d max(d, FLOOR), u_y for a target here
 *   gradient    one pass, w = max(u - m, FLOOR) with the raw m, p' = e^w:
 *               dz_k = p'_k (c1 + c2 w_k) + [k = y] g / T,
 *               c1 = -(g - h t / s) / (s T) (h t / s taken as 0 where h = 0), c2 = -h / (s T)
 *               a row with g = h = 0 is written as exactly 0.
 *
 * d is floored at FLOOR before it multiplies anything: e^d is 0 below it (float32 and
 * float64), so a class at -inf adds exactly 0, never 0 * -inf; a NaN d stays NaN (the
 * comparison is written so that it does). Each element's gradient depends on its own
 * logit and the row's numbers only, so the gradient may be written over the logits.
 * Target ids are whole-vocabulary class ids: y - start outside [0, width) (compared
 * unsigned, so a negative one too) means "not in this slice" and is never an index.
 * Half-precision rows are computed in float, the gradient rounded to the storage type once.
 */
#define TOKEN_FLOOR (-1.0e4)

#define DEFINE_TOKEN_KERNELS(STATS, GRAD, T, ACC, LOAD, ONE, EXP)                              \
    int64_t STATS(const T *x, int64_t x_stride, const int64_t *target, int64_t start,            \
                  int64_t rows, int64_t width, double temperature_, ACC *peak, ACC *mass,        \
                  ACC *spread, ACC *picked) {                                                     \
        const ACC temp = (ACC)temperature_, floor_ = (ACC)TOKEN_FLOOR;                            \
        for (int64_t i = 0; i < rows; ++i) {                                                      \
            const T *xr = x + i * x_stride;                                                       \
            ACC top = -INFINITY;                                                                  \
            int nan = 0;                                                                          \
            _Pragma("omp simd reduction(max : top) reduction(| : nan)")                           \
            for (int64_t j = 0; j < width; ++j) {                                                 \
                ACC z = LOAD(xr[j]);                                                              \
                top = z > top ? z : top;                                                          \
                nan |= z != z;                                                                    \
            }                                                                                     \
            const ACC m = nan ? (ACC)NAN : top / temp;                                            \
            const ACC shift = isfinite(m) ? m : (ACC)0;                                           \
            ACC s = 0, t = 0;                                                                     \
            _Pragma("omp simd reduction(+ : s, t)")                                               \
            for (int64_t j = 0; j < width; ++j) {                                                 \
                ACC d = LOAD(xr[j]) / temp - shift;                                               \
                ACC e = EXP(d);                                                                   \
                s += e;                                                                           \
                t += e * (d < floor_ ? floor_ : d);                                               \
            }                                                                                     \
            const uint64_t col = (uint64_t)target[i] - (uint64_t)start;                           \
            peak[i] = m;                                                                          \
            mass[i] = s;                                                                          \
            spread[i] = t;                                                                        \
            picked[i] = col < (uint64_t)width ? LOAD(xr[col]) / temp : (ACC)0;                    \
        }                                                                                         \
        return rows;                                                                              \
    }                                                                                             \
    int64_t GRAD(const T *x, int64_t x_stride, T *out, int64_t out_stride,                        \
                 const int64_t *target, int64_t start, int64_t rows, int64_t width,               \
                 double temperature_, const ACC *peak, const ACC *mass, const ACC *spread,        \
                 const ACC *grad_log_prob, const ACC *grad_entropy) {                             \
        const ACC temp = (ACC)temperature_, floor_ = (ACC)TOKEN_FLOOR;                            \
        for (int64_t i = 0; i < rows; ++i) {                                                      \
            const T *xr = x + i * x_stride;                                                       \
            T *orow = out + i * out_stride;                                                       \
            const ACC g = grad_log_prob[i], h = grad_entropy[i];                                  \
            if (g == 0 && h == 0) {                                                               \
                for (int64_t j = 0; j < width; ++j) orow[j] = ONE((ACC)0);                        \
                continue;                                                                         \
            }                                                                                     \
            const ACC m = peak[i], s = mass[i], scale = s * temp;                                 \
            const ACC c1 = -(g - (h == 0 ? (ACC)0 : h * (spread[i] / s))) / scale;                \
            const ACC c2 = -h / scale;                                                            \
            const uint64_t col = (uint64_t)target[i] - (uint64_t)start;                           \
            const ACC gy = col < (uint64_t)width ? g / temp : (ACC)0;                             \
            _Pragma("omp simd") for (int64_t j = 0; j < width; ++j) {                             \
                ACC w = LOAD(xr[j]) / temp - m;                                                   \
                w = w < floor_ ? floor_ : w;                                                      \
                ACC v = EXP(w) * (c1 + c2 * w);                                                   \
                v += (uint64_t)j == col ? gy : (ACC)0;                                            \
                orow[j] = ONE(v);                                                                 \
            }                                                                                     \
        }                                                                                         \
        return rows;                                                                              \
    }

#define TOKEN_F32_ONE(v) (v)
#define TOKEN_F64_ONE(v) (v)
#define TOKEN_BF16_ONE(v) f32_to_bf16(v)
#define TOKEN_F16_ONE(v) ((_Float16)(v))

DEFINE_TOKEN_KERNELS(token_stats_f32, token_grad_f32, float, float, IDENTITY, TOKEN_F32_ONE,
                     exp_neg_f32)
DEFINE_TOKEN_KERNELS(token_stats_f64, token_grad_f64, double, double, IDENTITY, TOKEN_F64_ONE,
                     exp_neg_f64)
DEFINE_TOKEN_KERNELS(token_stats_bf16, token_grad_bf16, uint16_t, float, bf16_to_f32,
                     TOKEN_BF16_ONE, exp_neg_f32)
DEFINE_TOKEN_KERNELS(token_stats_f16, token_grad_f16, _Float16, float, f16_to_f32,
                     TOKEN_F16_ONE, exp_neg_f32)

/* log(1 + x) for x in [0, 1], vectorisable: 1 + x = 2^e (1 + t) with e = 0, t = x below
 * sqrt(2) - 1, else e = 1, t = (x - 1) / 2, so t is in [sqrt(1/2) - 1, sqrt(2) - 1] and
 * log(1 + t) is Cephes' logf polynomial (about 1 ulp); x itself keeps log1p's precision
 * for small x. NaN stays NaN. */
static inline float log1p_unit_f32(float x) {
    const int big = x > 0.41421356f;
    const float t = big ? (x - 1.0f) * 0.5f : x, e = big ? 1.0f : 0.0f;
    const float z = t * t;
    float y = 7.0376836292e-2f;
    y = y * t - 1.1514610310e-1f;
    y = y * t + 1.1676998740e-1f;
    y = y * t - 1.2420140846e-1f;
    y = y * t + 1.4249322787e-1f;
    y = y * t - 1.6668057665e-1f;
    y = y * t + 2.0000714765e-1f;
    y = y * t - 2.4999993993e-1f;
    y = y * t + 3.3333331174e-1f;
    y = y * t * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return (t + y) + 0.693359375f * e;
}

static inline double log1p_unit_f64(double x) { return log1p(x); }

/* exp(x) for x <= 0 down to float's subnormals, as torch's exp gives them: below -87 the
 * argument is raised by 24 ln 2 and the result scaled by 2^-24 (one evaluation either way,
 * vectorisable), so a probability underflows to 0 where torch's does (e^x < 2^-150), not
 * at e^-87.3; the distillation kernel's p = 0 terms are then the torch operations' ones. */
static inline float exp_sub_f32(float x) {
    const int low = x < -87.0f;
    return exp_neg_f32(low ? x + 16.635532333438686f : x) * (low ? 5.9604644775390625e-8f : 1.0f);
}

/*
 * Distillation over whole rows: the row math of crossentropy.torch._distill (its docstring
 * has the derivation and the decided numerics), the three phases over one row of the
 * student z_s and one of the teacher z_t (V classes each, the same storage type), the two
 * rows and three scratch rows of V floats staying in cache between them. With u = z_s / T,
 * v = z_t / T (divisions, as the torch operations do), each log-sum-exp taken with the
 * library's shift (the maximum where it is finite, else 0:
 * crossentropy._array.shift_and_log_sum) and log p = (u - shift) - log sum e^(u - shift):
 *
 *   phase 1  pass A  the maxima of z_s and z_t (NaN if a logit is)
 *            pass B  e_s = e^(u - shift_s), e_t likewise, into the scratch rows, and their
 *                    sums s_s, s_t; e_1 = e^(z_s - shift_1) and s_1 when hard_weight != 0
 *                    and T != 1 (at T = 1 they are e_s, s_s); z_s[y] for a target y in
 *                    [0, V) (one unsigned compare: otherwise no target term)
 *   phase 2  with p_s = e_s / s_s, p_t = e_t / s_t (no exponential) and the log p's from
 *            the logits: D = sum of the divergence's terms, R = (1 - beta) sum_k p_s,k
 *            (log p_s,k - log M_k) (jsd), a term whose probability factor is 0 being
 *            exactly 0; the jsd keeps log M_k in e_t's scratch row
 *   loss     soft_weight D + hard_weight (L_1 - z_y), each term only where its weight
 *            is not 0; 0 for a row that is not live
 *   phase 3  per class, times the row's scale r, from the scratch rows and the logits:
 *              (r soft_weight / T) dD/du_k + r hard_weight (e_1,k / s_1 - [k = y])
 *            with dD/du_k = p_s - p_t (forward KL: needs no row sum, so it is written in
 *            phase 2's loop), p_s (log p_s - log p_t - D) (reverse KL),
 *            p_s ((1 - beta)(log p_s - log M) - R) (jsd); a row that is not live or whose
 *            scale is 0 is written as exactly 0. One loop per divergence, each vectorised.
 *
 * So each class costs two exponentials (three with hard_weight != 0 and T != 1), and for
 * the jsd one log1p and one division more: log M_k = logaddexp(log beta + log p_t,k,
 * log(1 - beta) + log p_s,k) = max + log1p(e^-|difference|) (-inf where both are), the
 * e^-|difference| being the smaller of beta p_t,k and (1 - beta) p_s,k over the larger (0
 * where the larger underflows to 0, whose terms are 0). A row whose maximum is not finite
 * (+inf, NaN, all -inf) is not shifted by it, so its e's may overflow where p does not:
 * its scratch row takes p = e^(log p) instead (a loop more, in such rows only).
 * Probabilities are exponentials down to float's subnormals (exp_sub_f32), as torch's exp
 * gives them, so that the terms taken as exactly 0 (p = 0) are the torch operations'
 * ones. The gradient of each class depends on its own logits and the row's numbers only,
 * so it may be written over the student's row (out == student). Half-precision rows are
 * computed in float, the gradient rounded to the storage type once.
 *   student, teacher  (rows, V) with row strides in elements
 *   out               (rows, V) gradient rows (may be the student), or NULL: losses only
 *   target            (rows,) class ids; live (rows,) 0/1; scale (rows,) or NULL (1)
 *   divergence        0 forward KL, 1 reverse KL, 2 jsd (0 < beta < 1)
 *   loss              (rows,) per-row losses
 *   scratch           scratch_size >= 3 V values of the compute type, the caller's thread's
 * Returns rows, or -1 (nothing read or written) when the scratch is NULL or too small.
 */
#define DISTILL_FORWARD_KL 0
#define DISTILL_REVERSE_KL 1
#define DISTILL_JSD 2

#define DEFINE_DISTILL_KERNEL(NAME, T, ACC, LOAD, ONE, EXP, LOG, LOG1P)                            \
    int64_t NAME(const T *xs, int64_t s_stride, const T *xt, int64_t t_stride, T *out,             \
                 int64_t out_stride, const int64_t *target, const uint8_t *live,                   \
                 const ACC *scale, int64_t rows, int64_t V, int64_t divergence, double beta_,      \
                 double temperature_, double soft_weight_, double hard_weight_, ACC *loss,         \
                 ACC *scratch, int64_t scratch_size) {                                             \
        const ACC temp = (ACC)temperature_, beta = (ACC)beta_;                                     \
        const ACC sw = (ACC)soft_weight_, hw = (ACC)hard_weight_;                                  \
        const int jsd = divergence == DISTILL_JSD, reverse = divergence == DISTILL_REVERSE_KL;     \
        const ACC log_b = jsd ? (ACC)log(beta_) : (ACC)0;                                          \
        const ACC log_b1 = jsd ? (ACC)log1p(-beta_) : (ACC)0;                                      \
        const ACC keep = jsd ? (ACC)1 - beta : (ACC)0; /* 1 - beta */                              \
        const int hard = hw != 0, unit = temperature_ == 1.0, own_q = hard && !unit;               \
        /* the three scratch rows: e_s (then read as p_s), e_t (jsd: then log M), e_1 */           \
        if (!scratch || V < 0 || scratch_size / 3 < V) return -1;                                  \
        ACC *es = scratch, *et = scratch + V, *e1 = scratch + 2 * V;                               \
        for (int64_t i = 0; i < rows; ++i) {                                                       \
            const T *sr = xs + i * s_stride, *tr = xt + i * t_stride;                              \
            T *orow = out ? out + i * out_stride : (T *)0;                                         \
            const ACC r = scale ? scale[i] : (ACC)1;                                               \
            if (!live[i]) {                                                                        \
                loss[i] = 0;                                                                       \
                if (orow)                                                                          \
                    for (int64_t j = 0; j < V; ++j) orow[j] = ONE((ACC)0);                         \
                continue;                                                                          \
            }                                                                                      \
            /* phase 1, pass A: the maxima */                                                      \
            ACC top_s = -INFINITY, top_t = -INFINITY;                                              \
            int nan_s = 0, nan_t = 0;                                                              \
            _Pragma("omp simd reduction(max : top_s, top_t) reduction(| : nan_s, nan_t)")          \
            for (int64_t j = 0; j < V; ++j) {                                                      \
                const ACC a = LOAD(sr[j]), b = LOAD(tr[j]);                                        \
                top_s = a > top_s ? a : top_s;                                                     \
                top_t = b > top_t ? b : top_t;                                                     \
                nan_s |= a != a;                                                                   \
                nan_t |= b != b;                                                                   \
            }                                                                                      \
            const ACC m_s = nan_s ? (ACC)NAN : top_s / temp, m_t = nan_t ? (ACC)NAN : top_t / temp; \
            const ACC m_1 = nan_s ? (ACC)NAN : top_s;                                              \
            const ACC sh_s = isfinite(m_s) ? m_s : (ACC)0, sh_t = isfinite(m_t) ? m_t : (ACC)0;    \
            const ACC sh_1 = isfinite(m_1) ? m_1 : (ACC)0;                                         \
            /* phase 1, pass B: the exponentials, kept in the scratch rows, and their sums */      \
            ACC s_s = 0, s_t = 0, s_1 = 0;                                                         \
            _Pragma("omp simd reduction(+ : s_s, s_t)")                                            \
            for (int64_t j = 0; j < V; ++j) {                                                      \
                const ACC a = EXP(LOAD(sr[j]) / temp - sh_s), b = EXP(LOAD(tr[j]) / temp - sh_t);  \
                es[j] = a;                                                                         \
                et[j] = b;                                                                         \
                s_s += a;                                                                          \
                s_t += b;                                                                          \
            }                                                                                      \
            if (own_q) {                                                                           \
                _Pragma("omp simd reduction(+ : s_1)")                                             \
                for (int64_t j = 0; j < V; ++j) {                                                  \
                    const ACC c = EXP(LOAD(sr[j]) - sh_1);                                         \
                    e1[j] = c;                                                                     \
                    s_1 += c;                                                                      \
                }                                                                                  \
            }                                                                                      \
            const ACC ls_s = LOG(s_s), ls_t = LOG(s_t);                                            \
            const ACC ls_1 = unit ? ls_s : LOG(s_1), q_1 = unit ? sh_s : sh_1;                     \
            /* p = e / s, by 1 / s once per row; q = e^(z_s - L_1) (at T = 1 it is p_s) */         \
            ACC is = (ACC)1 / s_s, it = (ACC)1 / s_t, iq = own_q ? (ACC)1 / s_1 : (ACC)0;          \
            /* a row whose maximum is not finite (+inf, NaN, all -inf) is not shifted by it:       \
             * its e's may overflow where p = e^(log p) does not, so there the scratch row         \
             * takes p = e^(log p) itself, as the torch operations have it */                      \
            if (!isfinite(m_s)) {                                                                  \
                is = 1;                                                                            \
                _Pragma("omp simd")                                                                \
                for (int64_t j = 0; j < V; ++j) es[j] = EXP((LOAD(sr[j]) / temp - sh_s) - ls_s);   \
            }                                                                                      \
            if (!isfinite(m_t)) {                                                                  \
                it = 1;                                                                            \
                _Pragma("omp simd")                                                                \
                for (int64_t j = 0; j < V; ++j) et[j] = EXP((LOAD(tr[j]) / temp - sh_t) - ls_t);   \
            }                                                                                      \
            if (own_q && !isfinite(m_1)) {                                                         \
                iq = 1;                                                                            \
                _Pragma("omp simd")                                                                \
                for (int64_t j = 0; j < V; ++j) e1[j] = EXP((LOAD(sr[j]) - q_1) - ls_1);           \
            }                                                                                      \
            iq = own_q ? iq : is;                                                                  \
            const ACC *qr = own_q ? e1 : es;                                                       \
            const uint64_t y = (uint64_t)target[i];                                                \
            const ACC z_y = y < (uint64_t)V ? LOAD(sr[y]) : (ACC)0;                                \
            const ACC A = sw != 0 ? r * sw / temp : (ACC)0, C = r * hw;                            \
            const ACC gy = y < (uint64_t)V ? C : (ACC)0;                                           \
            /* the forward KL's gradient needs no row sum: written in phase 2's loop */            \
            const int fused = orow && r != 0 && sw != 0 && !jsd && !reverse;                       \
            /* phase 2: D and R */                                                                 \
            ACC D = 0, R = 0;                                                                      \
            if (sw != 0 && jsd) {                                                                  \
                _Pragma("omp simd reduction(+ : D, R)")                                            \
                for (int64_t j = 0; j < V; ++j) {                                                  \
                    const ACC lps = (LOAD(sr[j]) / temp - sh_s) - ls_s;                            \
                    const ACC lpt = (LOAD(tr[j]) / temp - sh_t) - ls_t;                            \
                    const ACC ps = es[j] * is, pt = et[j] * it;                                    \
                    const ACC a = log_b + lpt, b = log_b1 + lps, w = a > b ? a : b;                \
                    /* e^-|a - b| = the smaller of beta p_t, (1 - beta) p_s over the larger */     \
                    const ACC ma = beta * pt, mb = keep * ps;                                      \
                    const ACC big = ma > mb ? ma : mb, small = ma > mb ? mb : ma;                  \
                    const ACC ratio = big > 0 ? small / big : (ACC)0;                              \
                    const ACC lm = w == -INFINITY ? w : w + LOG1P(ratio);                          \
                    const ACC ts = ps == 0 ? (ACC)0 : ps * (lps - lm);                             \
                    const ACC tt = pt == 0 ? (ACC)0 : pt * (lpt - lm);                             \
                    et[j] = lm;                                                                    \
                    D += beta * tt + keep * ts;                                                    \
                    R += keep * ts;                                                                \
                }                                                                                  \
            } else if (sw != 0 && reverse) {                                                       \
                _Pragma("omp simd reduction(+ : D)")                                               \
                for (int64_t j = 0; j < V; ++j) {                                                  \
                    const ACC lps = (LOAD(sr[j]) / temp - sh_s) - ls_s;                            \
                    const ACC lpt = (LOAD(tr[j]) / temp - sh_t) - ls_t;                            \
                    const ACC ps = es[j] * is;                                                     \
                    D += ps == 0 ? (ACC)0 : ps * (lps - lpt);                                      \
                }                                                                                  \
            } else if (fused) {                                                                    \
                _Pragma("omp simd reduction(+ : D)")                                               \
                for (int64_t j = 0; j < V; ++j) {                                                  \
                    const ACC lps = (LOAD(sr[j]) / temp - sh_s) - ls_s;                            \
                    const ACC lpt = (LOAD(tr[j]) / temp - sh_t) - ls_t;                            \
                    const ACC ps = es[j] * is, pt = et[j] * it;                                    \
                    D += pt == 0 ? (ACC)0 : pt * (lpt - lps);                                      \
                    ACC g = A * (ps - pt);                                                         \
                    g += hard ? C * (qr[j] * iq) - ((uint64_t)j == y ? gy : (ACC)0) : (ACC)0;      \
                    orow[j] = ONE(g);                                                              \
                }                                                                                  \
            } else if (sw != 0) {                                                                  \
                _Pragma("omp simd reduction(+ : D)")                                               \
                for (int64_t j = 0; j < V; ++j) {                                                  \
                    const ACC lps = (LOAD(sr[j]) / temp - sh_s) - ls_s;                            \
                    const ACC lpt = (LOAD(tr[j]) / temp - sh_t) - ls_t;                            \
                    const ACC pt = et[j] * it;                                                     \
                    D += pt == 0 ? (ACC)0 : pt * (lpt - lps);                                      \
                }                                                                                  \
            }                                                                                      \
            /* the NaN of a NaN logit even where every term's factor came out 0 */                 \
            if (sw != 0 && (nan_s || nan_t)) D = (ACC)NAN;                                         \
            /* CE = L_1 - z_y = log s_1 - (z_y - shift_1) */                                       \
            const ACC ce = hard ? ls_1 - (z_y - q_1) : (ACC)0;                                     \
            loss[i] = (sw != 0 ? sw * D : (ACC)0) + (hard ? hw * ce : (ACC)0);                     \
            if (!orow || fused) continue;                                                          \
            if (r == 0) {                                                                          \
                for (int64_t j = 0; j < V; ++j) orow[j] = ONE((ACC)0);                             \
                continue;                                                                          \
            }                                                                                      \
            /* phase 3: the gradient from the scratch rows, one loop per divergence (each          \
             * vectorised); the soft part is exactly 0 when soft_weight is, the hard part          \
             * when hard_weight is */                                                              \
            if (sw != 0 && jsd) {                                                                  \
                _Pragma("omp simd")                                                                \
                for (int64_t j = 0; j < V; ++j) {                                                  \
                    const ACC lps = (LOAD(sr[j]) / temp - sh_s) - ls_s;                            \
                    const ACC ps = es[j] * is;                                                     \
                    ACC g = ps == 0 ? (ACC)0 : A * (ps * (keep * (lps - et[j]) - R));              \
                    g += hard ? C * (qr[j] * iq) - ((uint64_t)j == y ? gy : (ACC)0) : (ACC)0;      \
                    orow[j] = ONE(g);                                                              \
                }                                                                                  \
            } else if (sw != 0 && reverse) {                                                       \
                _Pragma("omp simd")                                                                \
                for (int64_t j = 0; j < V; ++j) {                                                  \
                    const ACC lps = (LOAD(sr[j]) / temp - sh_s) - ls_s;                            \
                    const ACC lpt = (LOAD(tr[j]) / temp - sh_t) - ls_t;                            \
                    const ACC ps = es[j] * is;                                                     \
                    ACC g = ps == 0 ? (ACC)0 : A * (ps * ((lps - lpt) - D));                       \
                    g += hard ? C * (qr[j] * iq) - ((uint64_t)j == y ? gy : (ACC)0) : (ACC)0;      \
                    orow[j] = ONE(g);                                                              \
                }                                                                                  \
            } else { /* soft_weight 0: the hard part alone */                                      \
                _Pragma("omp simd")                                                                \
                for (int64_t j = 0; j < V; ++j) {                                                  \
                    ACC g = 0;                                                                     \
                    g += hard ? C * (qr[j] * iq) - ((uint64_t)j == y ? gy : (ACC)0) : (ACC)0;      \
                    orow[j] = ONE(g);                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        return rows;                                                                               \
    }

DEFINE_DISTILL_KERNEL(distill_rows_f32, float, float, IDENTITY, TOKEN_F32_ONE, exp_sub_f32, logf,
                      log1p_unit_f32)
DEFINE_DISTILL_KERNEL(distill_rows_f64, double, double, IDENTITY, TOKEN_F64_ONE, exp_neg_f64, log,
                      log1p_unit_f64)
DEFINE_DISTILL_KERNEL(distill_rows_bf16, uint16_t, float, bf16_to_f32, TOKEN_BF16_ONE,
                      exp_sub_f32, logf, log1p_unit_f32)
DEFINE_DISTILL_KERNEL(distill_rows_f16, _Float16, float, f16_to_f32, TOKEN_F16_ONE, exp_sub_f32,
                      logf, log1p_unit_f32)

/*
 * Per-row scores of a report (crossentropy.torch.scoring): for one row of logits z (C
 * classes) and its label y,
 *
 *   pass A  z_y (only for y in [0, C): one unsigned compare, else no index is formed),
 *           m = max_j z_j, rank = #{j: z_j > z_y} + #{j < y: z_j == z_y}, and whether a
 *           logit is not finite (z - z != 0: NaN and +-inf, one subtraction)
 *   pass B  e_j = exp(z_j - m) (the row from cache); k = #{j: z_j == m} (>= 1), the sum
 *           of the others t = sum_{j: z_j < m} e_j and q = sum_j e_j^2, both summed in
 *           double; argmax = min{j: z_j == m} (the first of tied maxima)
 *   out     peak = m, log_sum = log s = log k + log1p(t / k) with s = k + t (so logsumexp
 *           = m + log s), picked = z_y, squares = q / s^2 = sum_j p_j^2, argmax, rank
 *
 * log1p keeps the relative precision of a small loss: a confident row (t << 1, y the
 * argmax) has loss log1p(t) ~ t, where log(1 + t) would keep only t's digits above 1e-16.
 *
 * The caller forms the loss as log s - (z_y - m), never as (m + log s) - z_y, which would
 * lose the digits of a small loss under a large m. float32 and half rows take the float
 * exponential of the other kernels (about 1 ulp) of the float difference z_j - m corrected
 * by its rounding error (so a term is not off by |z_j - m| ulps, 25 ulps at a logit 25
 * below the maximum), the sums in double: the relative error of t, and so of a small loss,
 * is about a float ulp (measured below 2e-7 by tests/test_report_rows.py); float64 rows are
 * computed in double throughout (libm's exp).
 *
 * Every row is written. A row whose label is outside [0, C) gets picked = NaN and
 * rank = -1 (its other numbers do not depend on y); a row holding a logit that is not
 * finite (NaN, +-inf) gets NaN for every float output and -1 for argmax and rank, which
 * the caller reads as "refused" (so the finiteness check costs no pass of its own). No
 * such row forms an undefined operation (the shift is 0 where m is not finite, as in the
 * kernels above, and the float exponential clamps its argument).
 *   x        (rows, C) with the row stride x_stride in elements (rows may even coincide:
 *            they are only read)
 *   target   (rows,) int64 labels
 *   outputs  (rows,) each: peak, log_sum, picked, squares (double); argmax, rank (int64)
 * Returns rows when every label was in [0, C), else -(i + 1) for the first row i whose
 * label was not (every row is still written, as above).
 */
/* One row's outputs from its sums (see above): a row with a logit that is not finite gets
 * NaN and -1; otherwise k >= 1 (a finite row holds its maximum), s = k + t. */
static inline void score_write(int64_t i, int bad, double top, double zy, int64_t k, double t,
                               double q, int64_t first, int64_t rank_value, double *peak,
                               double *log_sum, double *picked, double *squares,
                               int64_t *argmax, int64_t *rank) {
    if (bad) {
        peak[i] = log_sum[i] = picked[i] = squares[i] = (double)NAN;
        argmax[i] = rank[i] = -1;
        return;
    }
    const double s = (double)k + t;
    peak[i] = top;
    log_sum[i] = log((double)k) + log1p(t / (double)k);
    squares[i] = q / (s * s);
    picked[i] = zy;
    argmax[i] = first;
    rank[i] = rank_value;
}

#define SCORE_BLOCK 1024

#define DEFINE_SCORE_KERNEL(NAME, T, ACC, LOAD, EXP)                                     \
    static int64_t NAME(const T *x, int64_t x_stride, const int64_t *target, int64_t rows,          \
                 int64_t C, double *peak, double *log_sum, double *picked, double *squares,    \
                 int64_t *argmax, int64_t *rank) {                                             \
        int64_t first_bad = -1;                                                                \
        for (int64_t i = 0; i < rows; ++i) {                                                   \
            const T *xr = x + i * x_stride;                                                    \
            const int64_t y = target[i];                                                       \
            /* one unsigned compare: a negative y wraps to >= 2^63, so out of range too */     \
            const int ok = (uint64_t)y < (uint64_t)C;                                          \
            if (!ok && first_bad < 0) first_bad = i;                                           \
            const ACC zy = ok ? LOAD(xr[y]) : (ACC)0;                                          \
            const int64_t before = ok ? y : 0;                                                 \
            /* pass A: the maximum, the rank of z_y, a logit that is not finite */             \
            ACC top = -INFINITY;                                                               \
            int bad = 0;                                                                       \
            int64_t above = 0, tied = 0;                                                       \
            _Pragma("omp simd reduction(max : top) reduction(| : bad) reduction(+ : above, tied)") \
            for (int64_t j = 0; j < C; ++j) {                                                  \
                const ACC z = LOAD(xr[j]);                                                     \
                top = z > top ? z : top;                                                       \
                bad |= !(z - z == 0);                                                          \
                above += z > zy;                                                               \
                tied += (z == zy) & (j < before);                                              \
            }                                                                                  \
            const ACC shift = isfinite(top) ? top : (ACC)0;                                    \
            /* pass B: the sums of e and e^2, the first maximum; summed by blocks of         \
             * SCORE_BLOCK classes (each block's sums added to the row's), so that a sum's   \
             * rounding grows with C / SCORE_BLOCK + SCORE_BLOCK / lanes, not C / lanes */    \
            double t = 0, q = 0;                                                               \
            int64_t first = C, k = 0;                                                          \
            for (int64_t b = 0; b < C; b += SCORE_BLOCK) {                                     \
                const int64_t end = C - b < SCORE_BLOCK ? C : b + SCORE_BLOCK;                 \
                double tb = 0, qb = 0;                                                         \
                _Pragma("omp simd reduction(+ : tb, qb, k) reduction(min : first)")            \
                for (int64_t j = b; j < end; ++j) {                                            \
                    const ACC z = LOAD(xr[j]);                                                 \
                    /* d = z - m rounded and its rounding error r (TwoSum, exact):            \
                     * e^(d + r) = e^d (1 + r) to second order, so e is as exact as the      \
                     * exponential (0 stays 0: r is NaN where d overflowed to -inf) */        \
                    const ACC d = z - shift, back = d - z;                                     \
                    const ACC r = (z - (d - back)) - (shift + back);                           \
                    const ACC e0 = EXP(d), e = e0 == 0 ? e0 : e0 + e0 * r;                     \
                    const int at_top = z == top;                                               \
                    tb += at_top ? 0.0 : (double)e;                                            \
                    k += at_top;                                                               \
                    qb += (double)(e * e);                                                     \
                    first = (at_top && j < first) ? j : first;                                 \
                }                                                                              \
                t += tb;                                                                       \
                q += qb;                                                                       \
            }                                                                                  \
            score_write(i, bad, (double)top, ok ? (double)zy : (double)NAN, k, t, q,          \
                        first < C ? first : -1, ok ? above + tied : -1, peak, log_sum, picked,   \
                        squares, argmax, rank);                                                \
        }                                                                                      \
        return first_bad < 0 ? rows : -(first_bad + 1);                                        \
    }

DEFINE_SCORE_KERNEL(score_rows_f32_generic, float, float, IDENTITY, exp_neg_f32)
DEFINE_SCORE_KERNEL(score_rows_f64_generic, double, double, IDENTITY, exp_neg_f64)
DEFINE_SCORE_KERNEL(score_rows_bf16_generic, uint16_t, float, bf16_to_f32, exp_neg_f32)
DEFINE_SCORE_KERNEL(score_rows_f16_generic, _Float16, float, f16_to_f32, exp_neg_f32)

#if CE_AVX512
/*
 * The same rows on AVX-512, 16 float lanes (float32 and half rows): the counts of pass A
 * and k by popcounts of comparison masks, the first maximum from the first mask that has
 * one, t and q summed in 2 x 8 double lanes (each lane sums C / 16 terms: for float rows
 * their rounding is far below the float exponential's), exp16_neg (1.6 ulp) for the
 * exponential, with the same TwoSum correction of z - m. Lanes past C (the masked tail)
 * count nowhere.
 */
#define SCORE_MASK_BEFORE(rem) /* the lanes j + l < before, rem = before - j */              \
    ((rem) >= 16 ? (__mmask16)0xFFFF : (rem) <= 0 ? (__mmask16)0 : (__mmask16)((1u << (rem)) - 1u))

#define DEFINE_SCORE_AVX512(NAME, T, LOAD, MASKLOAD, FROM)                                     \
    static int64_t NAME(const T *x, int64_t x_stride, const int64_t *target, int64_t rows,     \
                        int64_t C, double *peak, double *log_sum, double *picked,              \
                        double *squares, int64_t *argmax, int64_t *rank) {                     \
        const __mmask16 tail = (__mmask16)((1u << (C % 16)) - 1u);                             \
        const int64_t body = C - C % 16;                                                       \
        const __m512 zero = _mm512_setzero_ps();                                               \
        int64_t first_bad = -1;                                                                \
        for (int64_t i = 0; i < rows; ++i) {                                                   \
            const T *xr = x + i * x_stride;                                                    \
            const int64_t y = target[i];                                                       \
            const int ok = (uint64_t)y < (uint64_t)C;                                          \
            if (!ok && first_bad < 0) first_bad = i;                                           \
            const float zy = ok ? FROM(xr[y]) : 0.0f;                                          \
            const int64_t before = ok ? y : 0;                                                 \
            const __m512 vzy = _mm512_set1_ps(zy);                                             \
            /* pass A */                                                                       \
            __m512 vm = _mm512_set1_ps(-INFINITY);                                             \
            __mmask16 badm = 0;                                                                \
            int64_t above = 0, tied = 0;                                                       \
            for (int64_t j = 0; j < C; j += 16) {                                              \
                const __mmask16 live = j < body ? (__mmask16)0xFFFF : tail;                    \
                const __m512 v = j < body ? LOAD(xr + j) : MASKLOAD(live, xr + j);             \
                vm = _mm512_mask_max_ps(vm, live, vm, v);                                      \
                badm |= _mm512_mask_cmp_ps_mask(live, _mm512_sub_ps(v, v), zero, _CMP_NEQ_UQ); \
                above += __builtin_popcount(_mm512_mask_cmp_ps_mask(live, v, vzy, _CMP_GT_OQ)); \
                const __mmask16 eq = _mm512_mask_cmp_ps_mask(live, v, vzy, _CMP_EQ_OQ);        \
                if (eq && j < before)                                                          \
                    tied += __builtin_popcount(eq & SCORE_MASK_BEFORE(before - j));            \
            }                                                                                  \
            const float top = _mm512_reduce_max_ps(vm);                                        \
            const float shift = isfinite(top) ? top : 0.0f;                                    \
            const __m512 vshift = _mm512_set1_ps(shift), vtop = _mm512_set1_ps(top);           \
            /* pass B */                                                                       \
            __m512d t0 = _mm512_setzero_pd(), t1 = t0, q0 = t0, q1 = t0;                       \
            int64_t first = C, k = 0;                                                          \
            for (int64_t j = 0; j < C; j += 16) {                                              \
                const __mmask16 live = j < body ? (__mmask16)0xFFFF : tail;                    \
                const __m512 v = j < body ? LOAD(xr + j) : MASKLOAD(live, xr + j);             \
                const __m512 d = _mm512_sub_ps(v, vshift), back = _mm512_sub_ps(d, v);         \
                const __m512 r = _mm512_sub_ps(_mm512_sub_ps(v, _mm512_sub_ps(d, back)),       \
                                               _mm512_add_ps(vshift, back));                   \
                const __m512 e0 = exp16_neg(d);                                                \
                const __mmask16 nz = _mm512_mask_cmp_ps_mask(live, e0, zero, _CMP_NEQ_OQ);     \
                const __m512 e = _mm512_maskz_fmadd_ps(nz, e0, r, e0);                         \
                const __mmask16 at = _mm512_mask_cmp_ps_mask(live, v, vtop, _CMP_EQ_OQ);       \
                const __m512 rest = _mm512_maskz_mov_ps((__mmask16)~at, e);                    \
                const __m512 e2 = _mm512_mul_ps(e, e);                                         \
                t0 = _mm512_add_pd(t0, _mm512_cvtps_pd(_mm512_castps512_ps256(rest)));         \
                t1 = _mm512_add_pd(t1, _mm512_cvtps_pd(_mm256_castpd_ps(                       \
                                           _mm512_extractf64x4_pd(_mm512_castps_pd(rest), 1)))); \
                q0 = _mm512_add_pd(q0, _mm512_cvtps_pd(_mm512_castps512_ps256(e2)));           \
                q1 = _mm512_add_pd(q1, _mm512_cvtps_pd(_mm256_castpd_ps(                       \
                                           _mm512_extractf64x4_pd(_mm512_castps_pd(e2), 1)))); \
                if (at) {                                                                      \
                    k += __builtin_popcount(at);                                               \
                    if (first == C) first = j + __builtin_ctz(at);                             \
                }                                                                              \
            }                                                                                  \
            const double t = _mm512_reduce_add_pd(_mm512_add_pd(t0, t1));                      \
            const double q = _mm512_reduce_add_pd(_mm512_add_pd(q0, q1));                      \
            score_write(i, badm != 0, (double)top, ok ? (double)zy : (double)NAN, k, t, q,    \
                        first < C ? first : -1, ok ? above + tied : -1, peak, log_sum, picked,   \
                        squares, argmax, rank);                                                \
        }                                                                                      \
        return first_bad < 0 ? rows : -(first_bad + 1);                                        \
    }

DEFINE_SCORE_AVX512(score_rows_f32_avx512, float, F32_LOAD, F32_MASKLOAD, F32_FROM)
DEFINE_SCORE_AVX512(score_rows_bf16_avx512, uint16_t, BF16_LOAD, BF16_MASKLOAD, BF16_FROM)
DEFINE_SCORE_AVX512(score_rows_f16_avx512, _Float16, F16_LOAD, F16_MASKLOAD, F16_FROM)
#define SCORE_FAST(FAST) return FAST(x, x_stride, target, rows, C, peak, log_sum, picked, squares, argmax, rank);
#else
#define SCORE_FAST(FAST)
#endif

/* The exported kernels: the AVX-512 rows where the build has them, the generic ones
 * otherwise (and for float64). */
#define DEFINE_SCORE_DISPATCH(NAME, T, FAST, GENERIC)                                          \
    int64_t NAME(const T *x, int64_t x_stride, const int64_t *target, int64_t rows, int64_t C,  \
                 double *peak, double *log_sum, double *picked, double *squares,               \
                 int64_t *argmax, int64_t *rank) {                                             \
        FAST                                                                                   \
        return GENERIC(x, x_stride, target, rows, C, peak, log_sum, picked, squares, argmax,   \
                       rank);                                                                  \
    }

DEFINE_SCORE_DISPATCH(score_rows_f32, float, SCORE_FAST(score_rows_f32_avx512), score_rows_f32_generic)
DEFINE_SCORE_DISPATCH(score_rows_f64, double, , score_rows_f64_generic)
DEFINE_SCORE_DISPATCH(score_rows_bf16, uint16_t, SCORE_FAST(score_rows_bf16_avx512), score_rows_bf16_generic)
DEFINE_SCORE_DISPATCH(score_rows_f16, _Float16, SCORE_FAST(score_rows_f16_avx512), score_rows_f16_generic)
