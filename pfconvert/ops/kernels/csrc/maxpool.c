/* Max-pooling without argmax indices for float32 CPU inference: NCHW and NHWC layouts, -inf padding, NaN
 * propagating (a window holding a NaN gives NaN, as torch's max_pool2d does). Built and loaded by
 * pfconvert/native.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float mx(float a, float b) { return (b > a || b != b) ? b : a; }
static inline int64_t lo0(int64_t v) { return v < 0 ? 0 : v; }
static inline int64_t hi0(int64_t v, int64_t n) { return v > n ? n : v; }

/* dst[i] = max over d < count of src[i + d * step], for i < n (count >= 1): the one loop every pass below runs. */
static inline void window_max(const float *restrict src, int64_t step, int64_t count, float *restrict dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
    for (int64_t d = 1; d < count; ++d) {
        const float *restrict s = src + d * step;
        for (int64_t i = 0; i < n; ++i) dst[i] = mx(dst[i], s[i]);
    }
}

/* Any geometry, one narrow plane: copied into a -inf padded plane, then a vertical and a horizontal max over the
 * flattened padded rows (loops that run across row ends, so they stay long and vectorise even for 7x7 maps), then
 * the output pixels are picked out. `buf` holds padded_floats(...) floats, whose pad cells are -inf. */
static int64_t padded_floats(int64_t H, int64_t W, int64_t Ho, int64_t kh, int64_t kw, int64_t ph, int64_t pw) {
    const int64_t Wp = W + 2 * pw + kw;  /* room for the horizontal loop's reads past the last column */
    return (H + 2 * ph + kh) * Wp + 2 * Ho * Wp;
}

static void padded_plane(const float *restrict x, float *restrict y, float *restrict buf, int64_t H, int64_t W,
                         int64_t Ho, int64_t Wo, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                         int64_t pw) {
    const int64_t Wp = W + 2 * pw + kw;
    float *restrict P = buf, *restrict V = buf + (H + 2 * ph + kh) * Wp, *restrict Q = V + Ho * Wp;
    for (int64_t r = 0; r < H; ++r) memcpy(P + (r + ph) * Wp + pw, x + r * W, (size_t)W * sizeof(float));
    if (sh == 1) {
        window_max(P, Wp, kh, V, Ho * Wp);
    } else {
        for (int64_t oy = 0; oy < Ho; ++oy) window_max(P + oy * sh * Wp, Wp, kh, V + oy * Wp, Wp);
    }
    window_max(V, 1, kw, Q, Ho * Wp - kw);
    for (int64_t oy = 0; oy < Ho; ++oy) {
        const float *restrict q = Q + oy * Wp;
        float *restrict out = y + oy * Wo;
        if (sw == 1) {
            memcpy(out, q, (size_t)Wo * sizeof(float));
        } else {
            for (int64_t ox = 0; ox < Wo; ++ox) out[ox] = q[ox * sw];
        }
    }
}

/* Any geometry, one plane, row by row: vertical max of the window's rows into a -inf padded row, then the
 * horizontal max at stride 1 and a strided pick. `buf` holds 2 * (W + 2 * pw + kw) floats, all -inf on entry. */
static void rows_plane(const float *restrict x, float *restrict y, float *restrict buf, int64_t H, int64_t W,
                       int64_t Ho, int64_t Wo, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    const int64_t padded = (Wo - 1) * sw + kw;           /* the padded row length the windows read */
    float *restrict row = buf, *restrict h = buf + padded + W + 2 * pw;  /* pad cells stay -inf */
    const int64_t span = padded - kw + 1;                /* stride-1 window starts needed */
    for (int64_t oy = 0; oy < Ho; ++oy) {
        const int64_t a = lo0(oy * sh - ph), b = hi0(oy * sh - ph + kh, H);
        window_max(x + a * W, W, b - a, row + pw, W);
        float *restrict out = y + oy * Wo;
        window_max(row, 1, kw, sw == 1 ? out : h, span);
        if (sw != 1)
            for (int64_t ox = 0; ox < Wo; ++ox) out[ox] = h[ox * sw];
    }
}

static int64_t team(int64_t threads, int64_t work) { return (threads > 1 && work > 32768) ? threads : 1; }

/* Returns 0, or 1 where a thread could not allocate its scratch buffer (the output is then incomplete). */
int pf_maxpool_nchw(const float *x, float *y, int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t threads) {
    /* narrow planes: padded whole-plane passes; wide rows vectorise well one by one */
    const int narrow = W < 32;
    const int64_t need = narrow ? padded_floats(H, W, Ho, kh, kw, ph, pw) : 2 * ((Wo - 1) * sw + kw + W + 2 * pw);
    int failed = 0;
    #pragma omp parallel num_threads(team(threads, planes * H * W))
    {
        float *buf = (float *)malloc((size_t)need * sizeof(float));
        if (buf != NULL)
            for (int64_t i = 0; i < need; ++i) buf[i] = -INFINITY;
        #pragma omp for schedule(static)
        for (int64_t p = 0; p < planes; ++p) {
            if (buf == NULL) {
                #pragma omp atomic write
                failed = 1;
            } else if (narrow) {
                padded_plane(x + p * H * W, y + p * Ho * Wo, buf, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw);
            } else {
                rows_plane(x + p * H * W, y + p * Ho * Wo, buf, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw);
            }
        }
        free(buf);
    }
    return failed;
}

/* channels_last: each output row is the vertical max of its window's input rows (one long loop over W * C floats
 * per row) into a -inf padded row, then the horizontal max over kw pixels (C floats apart): kh + kw - 2 max ops per
 * output instead of kh * kw - 1. Returns 0, or 1 where a thread could not allocate its row buffer. */
int pf_maxpool_nhwc(const float *x, float *y, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t threads) {
    const int64_t Wp = W + 2 * pw + kw, need = Wp * C;
    int failed = 0;
    #pragma omp parallel num_threads(team(threads, N * C * H * W))
    {
        float *buf = (float *)malloc((size_t)need * sizeof(float));
        if (buf != NULL)
            for (int64_t i = 0; i < need; ++i) buf[i] = -INFINITY;
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < N * Ho; ++t) {
            if (buf == NULL) {
                #pragma omp atomic write
                failed = 1;
                continue;
            }
            const int64_t n = t / Ho, oy = t % Ho;
            const int64_t y0 = lo0(oy * sh - ph), y1 = hi0(oy * sh - ph + kh, H);
            const int64_t WC = W * C;
            window_max(x + (n * H + y0) * WC, WC, y1 - y0, buf + pw * C, WC);
            float *restrict out = y + t * Wo * C;
            if (sw == 1) {
                window_max(buf, C, kw, out, Wo * C);
            } else {
                for (int64_t ox = 0; ox < Wo; ++ox) window_max(buf + ox * sw * C, C, kw, out + ox * C, C);
            }
        }
        free(buf);
    }
    return failed;
}
