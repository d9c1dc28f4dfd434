/* Training-mode BatchNorm -> 2x2/2 max-pool -> ReLU over a channels_last (NHWC) float32 map, in two passes
 * forward and two backward. Built on first use by cnnarena/models/fused_block.py (cc -O3 -march=native
 * -fopenmp) and called through ctypes; OpenMP resolves to the libgomp PyTorch already loaded, so these loops
 * share PyTorch's threads. The innermost loops run over channels, which are contiguous in NHWC. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

/* Per-channel sum and sum of squares over all N*H*W pixels (double: 200k+ terms), then the batch
 * statistics and the affine map z = a*y + b that BatchNorm applies. */
static void batch_stats(const float *restrict y, int64_t pixels, int64_t C, int threads, float eps,
                        const float *restrict gamma, const float *restrict beta,
                        float *restrict mean, float *restrict var, float *restrict invstd,
                        float *restrict a, float *restrict b) {
    double *part = calloc((size_t)threads * 2 * C, sizeof(double));
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        double *s = part + (int64_t)t * 2 * C, *q = s + C;
        float *rs = malloc(sizeof(float) * 2 * C), *rq = rs + C;  /* float sums over a few pixels, then double */
        int64_t lo = pixels * t / nt, hi = pixels * (t + 1) / nt;
        for (int64_t p0 = lo; p0 < hi; p0 += 32) {
            int64_t p1 = p0 + 32 < hi ? p0 + 32 : hi;
            memset(rs, 0, sizeof(float) * 2 * C);
            for (int64_t p = p0; p < p1; p++) {
                const float *row = y + p * C;
                #pragma omp simd
                for (int64_t c = 0; c < C; c++) { float v = row[c]; rs[c] += v; rq[c] += v * v; }
            }
            for (int64_t c = 0; c < C; c++) { s[c] += rs[c]; q[c] += rq[c]; }
        }
        free(rs);
    }
    for (int64_t c = 0; c < C; c++) {
        double s = 0, q = 0;
        for (int t = 0; t < threads; t++) { s += part[(int64_t)t * 2 * C + c]; q += part[(int64_t)t * 2 * C + C + c]; }
        double m = s / pixels, v = q / pixels - m * m;
        if (v < 0) v = 0;
        mean[c] = (float)m; var[c] = (float)v;
        invstd[c] = (float)(1.0 / sqrt(v + eps));
        a[c] = gamma[c] * invstd[c];
        b[c] = beta[c] - mean[c] * a[c];
    }
    free(part);
}

/* From the per-thread sums of dz and dz*(y - mean): dbeta, dgamma, and dy's terms a, c0, c1 in
 * dy = a*dz + c0 - c1*(y - mean), with M pixels per channel. */
static void gradient_terms(const double *restrict part, int threads, int64_t C, double M,
                           const float *restrict gamma, const float *restrict invstd,
                           float *restrict dgamma, float *restrict dbeta,
                           float *restrict a, float *restrict c0, float *restrict c1) {
    for (int64_t c = 0; c < C; c++) {
        double sd = 0, sx = 0;
        for (int t = 0; t < threads; t++) { sd += part[(int64_t)t * 2 * C + c]; sx += part[(int64_t)t * 2 * C + C + c]; }
        dbeta[c] = (float)sd;
        dgamma[c] = (float)(sx * invstd[c]);
        a[c] = gamma[c] * invstd[c];
        c0[c] = (float)(-a[c] * sd / M);
        c1[c] = (float)(a[c] * invstd[c] * (sx * invstd[c]) / M);
    }
}

/* out[n,i,j,c] = relu(max of z over the 2x2 window); which[...] = the window position chosen (0-3, the first
 * of equal values, as max_pool2d) | 4 when the ReLU passed it. */
void bpr_forward(const float *restrict y, int64_t N, int64_t H, int64_t W, int64_t C, int threads, float eps,
                 const float *restrict gamma, const float *restrict beta,
                 float *restrict out, uint8_t *restrict which,
                 float *restrict mean, float *restrict var, float *restrict invstd) {
    float *a = malloc(sizeof(float) * C), *b = malloc(sizeof(float) * C);
    batch_stats(y, N * H * W, C, threads, eps, gamma, beta, mean, var, invstd, a, b);
    const int64_t h = H / 2, w = W / 2;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < N * h; r++) {
        int64_t n = r / h, i = r % h;
        const float *top = y + ((n * H + 2 * i) * W) * C, *bot = top + W * C;
        for (int64_t j = 0; j < w; j++) {
            const float *p0 = top + 2 * j * C, *p1 = p0 + C, *p2 = bot + 2 * j * C, *p3 = p2 + C;
            float *o = out + (r * w + j) * C;
            uint8_t *k = which + (r * w + j) * C;
            #pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                float z0 = a[c] * p0[c] + b[c], z1 = a[c] * p1[c] + b[c];
                float z2 = a[c] * p2[c] + b[c], z3 = a[c] * p3[c] + b[c];
                float m = z0; uint8_t s = 0;
                if (z1 > m || isnan(z1)) { m = z1; s = 1; }
                if (z2 > m || isnan(z2)) { m = z2; s = 2; }
                if (z3 > m || isnan(z3)) { m = z3; s = 3; }
                int pass = m > 0.0f;
                o[c] = (pass || m != m) ? m : 0.0f;  /* ReLU keeps a NaN, as torch.relu does */
                k[c] = s | (uint8_t)(pass << 2);
            }
        }
    }
    free(a); free(b);
}

/* dy for the whole map, dgamma and dbeta, from the gradient of the pooled output. */
void bpr_backward(const float *restrict dout, const float *restrict y, const uint8_t *restrict which,
                  int64_t N, int64_t H, int64_t W, int64_t C, int threads,
                  const float *restrict gamma, const float *restrict mean, const float *restrict invstd,
                  float *restrict dy, float *restrict dgamma, float *restrict dbeta) {
    const int64_t h = H / 2, w = W / 2, rows = N * h;
    double *part = calloc((size_t)threads * 2 * C, sizeof(double));
    /* pass 1: the gradient reaches one pixel per window (dz there = dout if the ReLU passed it): its sums */
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        double *sd = part + (int64_t)t * 2 * C, *sx = sd + C;
        float *rd = malloc(sizeof(float) * 2 * C), *rx = rd + C;  /* float sums over a row, then double */
        int64_t lo = rows * t / nt, hi = rows * (t + 1) / nt;
        for (int64_t r = lo; r < hi; r++) {
            int64_t n = r / h, i = r % h;
            const float *top = y + ((n * H + 2 * i) * W) * C, *bot = top + W * C;
            memset(rd, 0, sizeof(float) * 2 * C);
            for (int64_t j = 0; j < w; j++) {
                const float *g = dout + (r * w + j) * C;
                const uint8_t *k = which + (r * w + j) * C;
                const float *p0 = top + 2 * j * C, *p1 = p0 + C, *p2 = bot + 2 * j * C, *p3 = p2 + C;
                #pragma omp simd
                for (int64_t c = 0; c < C; c++) {
                    int s = k[c];
                    float v0 = p0[c], v1 = p1[c], v2 = p2[c], v3 = p3[c], gc = g[c];
                    float v = (s & 3) == 0 ? v0 : (s & 3) == 1 ? v1 : (s & 3) == 2 ? v2 : v3;
                    float d = (s & 4) ? gc : 0.0f;
                    rd[c] += d;
                    rx[c] += d * (v - mean[c]);
                }
            }
            for (int64_t c = 0; c < C; c++) { sd[c] += rd[c]; sx[c] += rx[c]; }
        }
        free(rd);
    }
    float *a = malloc(sizeof(float) * C), *c0 = malloc(sizeof(float) * C), *c1 = malloc(sizeof(float) * C);
    gradient_terms(part, threads, C, (double)(N * H * W), gamma, invstd, dgamma, dbeta, a, c0, c1);
    free(part);
    /* pass 2: dy = a*dz + c0 - c1*(y - mean), dz nonzero only at each window's chosen pixel */
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < N * H; row++) {
        int64_t n = row / H, yy = row % H, i = yy / 2;
        int in_pool = i < h, dyr = (int)(yy & 1);
        const float *src = y + row * W * C;
        float *dst = dy + row * W * C;
        for (int64_t x = 0; x < W; x++) {
            const float *v = src + x * C;
            float *d = dst + x * C;
            int64_t j = x / 2;
            if (in_pool && j < w) {
                const float *g = dout + ((n * h + i) * w + j) * C;
                const uint8_t *k = which + ((n * h + i) * w + j) * C;
                const uint8_t me = (uint8_t)(4 | (dyr * 2 + (int)(x & 1)));  /* chosen here, passed by the ReLU */
                #pragma omp simd
                for (int64_t c = 0; c < C; c++) {
                    float hit = (float)(k[c] == me);
                    d[c] = c0[c] - c1[c] * (v[c] - mean[c]) + hit * a[c] * g[c];
                }
            } else {
                #pragma omp simd
                for (int64_t c = 0; c < C; c++) d[c] = c0[c] - c1[c] * (v[c] - mean[c]);
            }
        }
    }
    free(a); free(c0); free(c1);
}

/* The same without the pool: out = relu(a*y + b) over the whole map (which[...] = 4 when the ReLU passed it). */
void br_forward(const float *restrict y, int64_t N, int64_t H, int64_t W, int64_t C, int threads, float eps,
                const float *restrict gamma, const float *restrict beta,
                float *restrict out, uint8_t *restrict which,
                float *restrict mean, float *restrict var, float *restrict invstd) {
    float *a = malloc(sizeof(float) * C), *b = malloc(sizeof(float) * C);
    batch_stats(y, N * H * W, C, threads, eps, gamma, beta, mean, var, invstd, a, b);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t p = 0; p < N * H * W; p++) {
        const float *v = y + p * C;
        float *o = out + p * C;
        uint8_t *k = which + p * C;
        #pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            float z = a[c] * v[c] + b[c];
            int pass = z > 0.0f;
            o[c] = (pass || z != z) ? z : 0.0f;
            k[c] = (uint8_t)(pass << 2);
        }
    }
    free(a); free(b);
}

void br_backward(const float *restrict dout, const float *restrict y, const uint8_t *restrict which,
                 int64_t N, int64_t H, int64_t W, int64_t C, int threads,
                 const float *restrict gamma, const float *restrict mean, const float *restrict invstd,
                 float *restrict dy, float *restrict dgamma, float *restrict dbeta) {
    const int64_t pixels = N * H * W;
    double *part = calloc((size_t)threads * 2 * C, sizeof(double));
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        double *sd = part + (int64_t)t * 2 * C, *sx = sd + C;
        float *rd = malloc(sizeof(float) * 2 * C), *rx = rd + C;
        int64_t lo = pixels * t / nt, hi = pixels * (t + 1) / nt;
        for (int64_t p0 = lo; p0 < hi; p0 += 32) {
            int64_t p1 = p0 + 32 < hi ? p0 + 32 : hi;
            memset(rd, 0, sizeof(float) * 2 * C);
            for (int64_t p = p0; p < p1; p++) {
                const float *g = dout + p * C, *v = y + p * C;
                const uint8_t *k = which + p * C;
                #pragma omp simd
                for (int64_t c = 0; c < C; c++) {
                    float d = (k[c] & 4) ? g[c] : 0.0f;
                    rd[c] += d;
                    rx[c] += d * (v[c] - mean[c]);
                }
            }
            for (int64_t c = 0; c < C; c++) { sd[c] += rd[c]; sx[c] += rx[c]; }
        }
        free(rd);
    }
    float *a = malloc(sizeof(float) * C), *c0 = malloc(sizeof(float) * C), *c1 = malloc(sizeof(float) * C);
    gradient_terms(part, threads, C, (double)pixels, gamma, invstd, dgamma, dbeta, a, c0, c1);
    free(part);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t p = 0; p < pixels; p++) {
        const float *g = dout + p * C, *v = y + p * C;
        const uint8_t *k = which + p * C;
        float *d = dy + p * C;
        #pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            float hit = (float)(k[c] == 4);
            d[c] = c0[c] - c1[c] * (v[c] - mean[c]) + hit * a[c] * g[c];
        }
    }
    free(a); free(c0); free(c1);
}
