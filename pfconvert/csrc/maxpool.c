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
        const int64_t n = Ho * Wp;
        memcpy(V, P, (size_t)n * sizeof(float));
        for (int64_t d = 1; d < kh; ++d) {
            const float *restrict src = P + d * Wp;
            for (int64_t i = 0; i < n; ++i) V[i] = mx(V[i], src[i]);
        }
    } else {
        for (int64_t oy = 0; oy < Ho; ++oy) {
            float *restrict v = V + oy * Wp;
            memcpy(v, P + oy * sh * Wp, (size_t)Wp * sizeof(float));
            for (int64_t d = 1; d < kh; ++d) {
                const float *restrict src = P + (oy * sh + d) * Wp;
                for (int64_t i = 0; i < Wp; ++i) v[i] = mx(v[i], src[i]);
            }
        }
    }
    const int64_t n = Ho * Wp - kw;
    memcpy(Q, V, (size_t)n * sizeof(float));
    for (int64_t j = 1; j < kw; ++j) {
        const float *restrict src = V + j;
        for (int64_t i = 0; i < n; ++i) Q[i] = mx(Q[i], src[i]);
    }
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
 * horizontal max at stride 1 and a strided pick. `buf` holds 2 * (W + 2 * pw + kw) floats. */
static void rows_plane(const float *restrict x, float *restrict y, float *restrict buf, int64_t H, int64_t W,
                       int64_t Ho, int64_t Wo, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    const int64_t padded = (Wo - 1) * sw + kw;           /* the padded row length the windows read */
    float *restrict row = buf, *restrict h = buf + padded + W + 2 * pw;
    for (int64_t i = 0; i < padded + W + 2 * pw; ++i) row[i] = -INFINITY;
    const int64_t span = padded - kw + 1;                /* stride-1 window starts needed */
    for (int64_t oy = 0; oy < Ho; ++oy) {
        const int64_t a = lo0(oy * sh - ph), b = hi0(oy * sh - ph + kh, H);
        float *restrict r = row + pw;
        memcpy(r, x + a * W, (size_t)W * sizeof(float));
        for (int64_t q = a + 1; q < b; ++q) {
            const float *restrict s = x + q * W;
            for (int64_t i = 0; i < W; ++i) r[i] = mx(r[i], s[i]);
        }
        float *restrict out = y + oy * Wo;
        float *restrict dst = sw == 1 ? out : h;
        memcpy(dst, row, (size_t)span * sizeof(float));
        for (int64_t j = 1; j < kw; ++j)
            for (int64_t i = 0; i < span; ++i) dst[i] = mx(dst[i], row[i + j]);
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
            const float *restrict first = x + (n * H + y0) * WC;
            float *restrict row = buf + pw * C;
            memcpy(row, first, (size_t)WC * sizeof(float));
            for (int64_t iy = y0 + 1; iy < y1; ++iy) {
                const float *restrict r = x + (n * H + iy) * WC;
                for (int64_t i = 0; i < WC; ++i) row[i] = mx(row[i], r[i]);
            }
            float *restrict out = y + t * Wo * C;
            if (sw == 1) {
                const int64_t n_out = Wo * C;
                memcpy(out, buf, (size_t)n_out * sizeof(float));
                for (int64_t j = 1; j < kw; ++j) {
                    const float *restrict src = buf + j * C;
                    for (int64_t i = 0; i < n_out; ++i) out[i] = mx(out[i], src[i]);
                }
            } else {
                for (int64_t ox = 0; ox < Wo; ++ox) {
                    float *restrict o = out + ox * C;
                    const float *restrict src = buf + ox * sw * C;
                    memcpy(o, src, (size_t)C * sizeof(float));
                    for (int64_t j = 1; j < kw; ++j)
                        for (int64_t c = 0; c < C; ++c) o[c] = mx(o[c], src[j * C + c]);
                }
            }
        }
        free(buf);
    }
    return failed;
}
