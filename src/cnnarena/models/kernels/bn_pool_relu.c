/* Training-mode BatchNorm -> 2x2/2 max-pool -> ReLU over a channels_last (NHWC) float32 map, in two passes
 * forward and two backward. Built on first use by cnnarena/models/fused_block.py (cc -O3 -march=native
 * -fopenmp) and called through ctypes, only from its torch.library ops, which check every tensor (device,
 * dtype, layout, shapes) before a pointer reaches this file; OpenMP resolves to the libgomp PyTorch already
 * loaded, so these loops share PyTorch's threads. The innermost loops run over channels, which are contiguous
 * in NHWC. Every entry point returns BPR_OK or BPR_NO_MEMORY (then it has freed what it allocated and its
 * outputs are unspecified), or BPR_BAD_SIZES for sizes below 1. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

enum { BPR_OK = 0, BPR_NO_MEMORY = 1, BPR_BAD_SIZES = 2 };

/* The sizes every entry point takes (fused_block._Dims mirrors it): the input map's N, H, W, C, the OpenMP
 * threads to use (at least 1), and BatchNorm's eps (read by the forward kernels only). */
typedef struct {
    int64_t n, h, w, c;
    int32_t threads;
    float eps;
} bpr_dims;

/* The tensors of a forward call, NHWC: y (N,H,W,C) in; gamma, beta (C) BatchNorm's weight and bias; out
 * (N,H',W',C) and which (N,H',W',C) out, H' = H/2 with the pool, H without; mean, var, invstd (C) out. */
typedef struct {
    const float *y, *gamma, *beta;
    float *out;
    uint8_t *which;
    float *mean, *var, *invstd;
} bpr_forward_io;

/* The tensors of a backward call: dout (N,H',W',C), y, which, gamma, mean, invstd as forward had them, in;
 * dy (N,H,W,C), dgamma, dbeta (C) out. */
typedef struct {
    const float *dout, *y;
    const uint8_t *which;
    const float *gamma, *mean, *invstd;
    float *dy, *dgamma, *dbeta;
} bpr_backward_io;

/* The structs' sizes, so that the Python side can check its mirrors of them when it loads the library. */
size_t bpr_struct_size(int which) {
    return which == 0 ? sizeof(bpr_dims) : which == 1 ? sizeof(bpr_forward_io) : sizeof(bpr_backward_io);
}

/* What one call allocates: per-thread sums (2*C doubles each, the totals; 2*C floats each, sums over a few
 * pixels, every thread's on cache lines of its own) and `coefs`*C per-channel float coefficients. */
typedef struct {
    double *part;
    float *rows;
    int64_t stride;  /* floats per thread in rows: 2*C rounded up to a 64-byte line */
    float *coef;
} workspace;

static void workspace_free(workspace *ws) {
    free(ws->part); free(ws->rows); free(ws->coef);
}

static int workspace_alloc(workspace *ws, const bpr_dims *dims, int coefs) {
    /* the Python side checks the sizes; this is a last guard against a zero-byte "allocation" */
    if (dims->n < 1 || dims->h < 1 || dims->w < 1 || dims->c < 1 || dims->threads < 1) return BPR_BAD_SIZES;
    const int threads = dims->threads;
    const int64_t C = dims->c;
    ws->stride = (2 * C + 15) / 16 * 16;
    ws->part = calloc((size_t)threads * 2 * C, sizeof(double));
    ws->rows = aligned_alloc(64, (size_t)threads * ws->stride * sizeof(float));  /* a multiple of 64 bytes */
    ws->coef = malloc(sizeof(float) * coefs * C);
    if (ws->part != NULL && ws->rows != NULL && ws->coef != NULL) return BPR_OK;
    workspace_free(ws);  /* free(NULL) is a no-op */
    return BPR_NO_MEMORY;
}

/* Per-channel sum and sum of squares over all N*H*W pixels (double: 200k+ terms), then the batch
 * statistics and the affine map z = a*y + b that BatchNorm applies. */
static void batch_stats(const float *restrict y, int64_t pixels, int64_t C, int threads, float eps,
                        const float *restrict gamma, const float *restrict beta,
                        float *restrict mean, float *restrict var, float *restrict invstd,
                        const workspace *ws, float *restrict a, float *restrict b) {
    double *part = ws->part;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        double *s = part + (int64_t)t * 2 * C, *q = s + C;
        float *rs = ws->rows + t * ws->stride, *rq = rs + C;  /* float sums over a few pixels, then double */
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
int bpr_forward(const bpr_dims *dims, const bpr_forward_io *io) {
    const float *restrict y = io->y, *restrict gamma = io->gamma, *restrict beta = io->beta;
    float *restrict out = io->out, *restrict mean = io->mean, *restrict var = io->var, *restrict invstd = io->invstd;
    uint8_t *restrict which = io->which;
    const int64_t N = dims->n, H = dims->h, W = dims->w, C = dims->c;
    const int threads = dims->threads;
    workspace ws;
    int status = workspace_alloc(&ws, dims, 2);
    if (status != BPR_OK) return status;
    float *a = ws.coef, *b = a + C;
    batch_stats(y, N * H * W, C, threads, dims->eps, gamma, beta, mean, var, invstd, &ws, a, b);
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
    workspace_free(&ws);
    return BPR_OK;
}

/* dy for the whole map, dgamma and dbeta, from the gradient of the pooled output. */
int bpr_backward(const bpr_dims *dims, const bpr_backward_io *io) {
    const float *restrict dout = io->dout, *restrict y = io->y, *restrict gamma = io->gamma;
    const float *restrict mean = io->mean, *restrict invstd = io->invstd;
    const uint8_t *restrict which = io->which;
    float *restrict dy = io->dy, *restrict dgamma = io->dgamma, *restrict dbeta = io->dbeta;
    const int64_t N = dims->n, H = dims->h, W = dims->w, C = dims->c;
    const int threads = dims->threads;
    const int64_t h = H / 2, w = W / 2, rows = N * h;
    workspace ws;
    int status = workspace_alloc(&ws, dims, 3);
    if (status != BPR_OK) return status;
    double *part = ws.part;
    /* pass 1: the gradient reaches one pixel per window (dz there = dout if the ReLU passed it): its sums */
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        double *sd = part + (int64_t)t * 2 * C, *sx = sd + C;
        float *rd = ws.rows + t * ws.stride, *rx = rd + C;  /* float sums over a row, then double */
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
    }
    float *a = ws.coef, *c0 = a + C, *c1 = c0 + C;
    gradient_terms(part, threads, C, (double)(N * H * W), gamma, invstd, dgamma, dbeta, a, c0, c1);
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
    workspace_free(&ws);
    return BPR_OK;
}

/* The same without the pool: out = relu(a*y + b) over the whole map (which[...] = 4 when the ReLU passed it). */
int br_forward(const bpr_dims *dims, const bpr_forward_io *io) {
    const float *restrict y = io->y, *restrict gamma = io->gamma, *restrict beta = io->beta;
    float *restrict out = io->out, *restrict mean = io->mean, *restrict var = io->var, *restrict invstd = io->invstd;
    uint8_t *restrict which = io->which;
    const int64_t N = dims->n, H = dims->h, W = dims->w, C = dims->c;
    const int threads = dims->threads;
    workspace ws;
    int status = workspace_alloc(&ws, dims, 2);
    if (status != BPR_OK) return status;
    float *a = ws.coef, *b = a + C;
    batch_stats(y, N * H * W, C, threads, dims->eps, gamma, beta, mean, var, invstd, &ws, a, b);
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
    workspace_free(&ws);
    return BPR_OK;
}

int br_backward(const bpr_dims *dims, const bpr_backward_io *io) {
    const float *restrict dout = io->dout, *restrict y = io->y, *restrict gamma = io->gamma;
    const float *restrict mean = io->mean, *restrict invstd = io->invstd;
    const uint8_t *restrict which = io->which;
    float *restrict dy = io->dy, *restrict dgamma = io->dgamma, *restrict dbeta = io->dbeta;
    const int64_t N = dims->n, H = dims->h, W = dims->w, C = dims->c;
    const int threads = dims->threads;
    const int64_t pixels = N * H * W;
    workspace ws;
    int status = workspace_alloc(&ws, dims, 3);
    if (status != BPR_OK) return status;
    double *part = ws.part;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        double *sd = part + (int64_t)t * 2 * C, *sx = sd + C;
        float *rd = ws.rows + t * ws.stride, *rx = rd + C;
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
    }
    float *a = ws.coef, *c0 = a + C, *c1 = c0 + C;
    gradient_terms(part, threads, C, (double)pixels, gamma, invstd, dgamma, dbeta, a, c0, c1);
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
    workspace_free(&ws);
    return BPR_OK;
}
