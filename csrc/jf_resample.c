/*
 * jf_resample.c - the coefficient-domain operator (docs/design.md).
 *
 * For one component with dequantized coefficient plane Q (rows 8*block + u),
 *     out = (D F_h R_h U_h Din^T) Q (D F_w R_w U_w Din^T)^T = A Q B^T
 * where U upsamples subsampled chroma (libjpeg's fancy triangle weights),
 * R crops and resizes (antialiased bilinear, PIL/torchvision weights), F flips,
 * Din^T is the block IDCT and D the output block DCT.  A and B are banded:
 * each output block reads a few input blocks.  Only rows for kept output
 * frequencies are built.  The product runs in two passes: horizontal (B) over
 * every input block once, skipping all-zero block rows, into an intermediate
 * laid out for the vertical pass (A), whose inner loop is a contiguous AXPY.
 *
 * The 1-D weights here are the only implementation: the spatial path gets
 * them through jf_axis_matrix.
 */
#include "jf_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

/* The channel list the operator takes (per component at most 64, its
 * jf_comp_request's size), checked for every caller: jf_cube_check and
 * jf_photo_fold. */
int jf_channels_check(int nch, const int *comp, const int *k, jf_status *st)
{
    int i, per_comp[3] = {0, 0, 0};

    if (nch < 1 || nch > JF_MAX_CHANNELS || !comp || !k) {
        snprintf(st->msg, JF_MSG_LEN, "%s", nch < 1 || nch > JF_MAX_CHANNELS ?
                 "1 to " JF_STR(JF_MAX_CHANNELS) " channels expected" : "comp and k are required");
        st->kind = JF_ERR_ARG;
        return -1;
    }
    for (i = 0; i < nch; i++) {
        int c = comp[i], f = k[i];
        if (c < 0 || c > 2 || f < 0 || f > 63) {
            snprintf(st->msg, JF_MSG_LEN,
                     "channel %d: component %d / frequency %d out of range", i, c, f);
            st->kind = JF_ERR_ARG;
            return -1;
        }
        /* a component's request holds at most 64 channels (jf_comp_request) */
        if (++per_comp[c] > 64) {
            snprintf(st->msg, JF_MSG_LEN, "more than 64 channels of component %d", c);
            st->kind = JF_ERR_ARG;
            return -1;
        }
    }
    return 0;
}

#if defined(__GNUC__)
typedef float jf_v8 __attribute__((vector_size(32)));
#endif

/* ======================================================================== */
/* 8-point orthonormal DCT-II basis: C[u][x]                                 */
/* ======================================================================== */

static float dct8[8][8];
static int dct8_ready = 0;

static void dct8_init(void)
{
    /* idempotent: concurrent first calls write identical values */
    int u, x;
    if (dct8_ready)
        return;
    for (u = 0; u < 8; u++)
        for (x = 0; x < 8; x++) {
            double a = (u == 0) ? sqrt(1.0 / 8.0) : sqrt(2.0 / 8.0);
            dct8[u][x] = (float)(a * cos((2 * x + 1) * u * M_PI / 16.0));
        }
    dct8_ready = 1;
}

/* ======================================================================== */
/* 1-D weights                                                              */
/* ======================================================================== */

static double triangle(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

int jf_resize_weights(int in_size, int out_size, double in0, double in1,
                      int *bounds, double *weights)
{
    double scale, filterscale, support, ss;
    int ksize, i, j;

    if (in_size <= 0 || out_size <= 0 || !(in1 > in0))
        return -1;
    scale = (in1 - in0) / out_size;
    filterscale = scale < 1.0 ? 1.0 : scale;
    support = 1.0 * filterscale; /* triangle support is 1 */
    ksize = (int)ceil(support) * 2 + 1;
    if (weights == NULL)
        return ksize;
    ss = 1.0 / filterscale;
    for (i = 0; i < out_size; i++) {
        double center = in0 + (i + 0.5) * scale, ww = 0.0;
        int xmin = (int)floor(center - support + 0.5), xmax = (int)floor(center + support + 0.5);
        double *k = weights + (size_t)i * ksize;
        if (xmin < 0)
            xmin = 0;
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        if (xmax < 0)
            xmax = 0;
        if (xmax > ksize)
            xmax = ksize;
        for (j = 0; j < xmax; j++) {
            double w = triangle((j + xmin - center + 0.5) * ss);
            k[j] = w;
            ww += w;
        }
        for (j = 0; j < xmax; j++)
            if (ww != 0.0)
                k[j] /= ww;
        for (; j < ksize; j++)
            k[j] = 0.0;
        bounds[2 * i] = xmin;
        bounds[2 * i + 1] = xmax;
    }
    return ksize;
}

/* Upsampling U: full-resolution pixel p reads component samples s0 and s0+1
 * (clamped) with weights w0 and 1-w0; the triangle centred on the sample grid
 * that libjpeg's fancy upsampling uses (3/4, 1/4 for a factor of 2). */
static void upsample_tap(const jf_axis *ax, int p, int *s0, int *s1, double *w0)
{
    double pos = (p + 0.5) / ax->factor - 0.5;
    int i = (int)floor(pos);
    double t = pos - i;
    int a = i, b = i + 1;
    if (a < 0) a = 0;
    if (b < 0) b = 0;
    if (a > ax->comp_size - 1) a = ax->comp_size - 1;
    if (b > ax->comp_size - 1) b = ax->comp_size - 1;
    *s0 = a;
    *s1 = b;
    *w0 = 1.0 - t;
}

/* Row y (output pixel, flip applied) of M = F R U, accumulated into
 * row[s - s_base] for component samples s. */
typedef struct {
    int ksize;
    int *bounds;
    double *weights;
} jf_resize;

static int resize_init(const jf_axis *ax, jf_resize *r)
{
    r->ksize = jf_resize_weights(ax->image_size, ax->out_size, ax->box0, ax->box1, NULL, NULL);
    if (r->ksize < 0)
        return -1;
    r->bounds = (int *)malloc(sizeof(int) * 2 * ax->out_size);
    r->weights = (double *)malloc(sizeof(double) * (size_t)r->ksize * ax->out_size);
    if (!r->bounds || !r->weights) {
        free(r->bounds);
        free(r->weights);
        return -1;
    }
    jf_resize_weights(ax->image_size, ax->out_size, ax->box0, ax->box1, r->bounds, r->weights);
    return 0;
}

static void resize_free(jf_resize *r)
{
    free(r->bounds);
    free(r->weights);
}

/* Sample range [lo, hi] touched by output pixel y. */
static void row_range(const jf_axis *ax, const jf_resize *r, int y, int *lo, int *hi)
{
    int src = ax->flip ? ax->out_size - 1 - y : y;
    int p0 = r->bounds[2 * src], n = r->bounds[2 * src + 1], a, b;
    double w;
    if (n == 0) {
        *lo = 0;
        *hi = -1;
        return;
    }
    upsample_tap(ax, p0, &a, &b, &w);
    *lo = a < b ? a : b;
    upsample_tap(ax, p0 + n - 1, &a, &b, &w);
    *hi = a > b ? a : b;
}

static void row_accumulate(const jf_axis *ax, const jf_resize *r, int y, double scale,
                           double *row, int s_base)
{
    int src = ax->flip ? ax->out_size - 1 - y : y;
    int p0 = r->bounds[2 * src], n = r->bounds[2 * src + 1], j;
    const double *k = r->weights + (size_t)src * r->ksize;
    for (j = 0; j < n; j++) {
        int a, b;
        double w0, w = k[j] * scale;
        upsample_tap(ax, p0 + j, &a, &b, &w0);
        row[a - s_base] += w * w0;
        row[b - s_base] += w * (1.0 - w0);
    }
}

/* upsample_tap for every full-resolution pixel [pmin, pmax) the resize reads,
 * once per axis (the band build visits each pixel several times). */
typedef struct {
    int pmin;
    int *a, *b;
    double *w0;
} jf_taps;

static int taps_init(const jf_axis *ax, const jf_resize *r, jf_taps *tp)
{
    int i, p, pmin = 1 << 30, pmax = 0;
    for (i = 0; i < ax->out_size; i++) {
        int p0 = r->bounds[2 * i], n = r->bounds[2 * i + 1];
        if (n <= 0)
            continue;
        if (p0 < pmin) pmin = p0;
        if (p0 + n > pmax) pmax = p0 + n;
    }
    if (pmax <= pmin)
        pmin = pmax = 0;
    tp->pmin = pmin;
    tp->a = (int *)malloc(sizeof(int) * 2 * (size_t)(pmax - pmin + 1));
    tp->w0 = (double *)malloc(sizeof(double) * (size_t)(pmax - pmin + 1));
    if (!tp->a || !tp->w0) {
        free(tp->a);
        free(tp->w0);
        tp->a = NULL;
        tp->w0 = NULL;
        return -1;
    }
    tp->b = tp->a + (pmax - pmin + 1);
    for (p = pmin; p < pmax; p++)
        upsample_tap(ax, p, &tp->a[p - pmin], &tp->b[p - pmin], &tp->w0[p - pmin]);
    return 0;
}

static void taps_free(jf_taps *tp)
{
    free(tp->a);
    free(tp->w0);
}

int jf_axis_matrix(const jf_axis *ax, double *M)
{
    jf_resize r;
    int y;
    if (ax->factor < 1 || ax->comp_size < 1 || resize_init(ax, &r) != 0)
        return -1;
    memset(M, 0, sizeof(double) * (size_t)ax->out_size * ax->comp_size);
    for (y = 0; y < ax->out_size; y++)
        row_accumulate(ax, &r, y, 1.0, M + (size_t)y * ax->comp_size, 0);
    resize_free(&r);
    return 0;
}

/* ======================================================================== */
/* Banded coefficient-domain operator                                       */
/* ======================================================================== */

void jf_band_free(jf_band *band)
{
    free(band->start);
    free(band->w);
    free(band->lo);
    free(band->hi);
    free(band->oc_lo);
    free(band->wlen);
    free(band->woff);
    free(band->W);
    band->start = band->lo = band->hi = band->oc_lo = band->oc_hi = band->wlen = NULL;
    band->woff = NULL;
    band->w = band->W = NULL;
}

int jf_band_build(const jf_axis *ax, int in_blocks, const int *freqs, int nf,
                  jf_band *band, jf_status *st)
{
    jf_resize r;
    jf_taps tp;
    int nob = ax->out_size / 8, ob, t, f, j, k, x, nb = 1;
    int *lo_b = NULL;
    double *arow = NULL;
    double dct8t[8][8]; /* dct8 transposed, as double: [x][k] */

    dct8_init();
    memset(band, 0, sizeof(*band));
    if (ax->out_size % 8 != 0 || ax->out_size <= 0 || ax->factor < 1 || ax->comp_size < 1 ||
        ax->comp_size > 8 * in_blocks) {
        snprintf(st->msg, JF_MSG_LEN, "bad axis geometry (out %d, comp %d, blocks %d)",
                 ax->out_size, ax->comp_size, in_blocks);
        st->kind = JF_ERR_ARG;
        return -1;
    }
    if (resize_init(ax, &r) != 0) {
        snprintf(st->msg, JF_MSG_LEN, "bad crop box [%g, %g) on an axis of %d pixels",
                 ax->box0, ax->box1, ax->image_size);
        st->kind = JF_ERR_ARG;
        return -1;
    }
    if (taps_init(ax, &r, &tp) != 0) {
        resize_free(&r);
        snprintf(st->msg, JF_MSG_LEN, "out of memory building the resampling operator");
        st->kind = JF_ERR_MEMORY;
        return -1;
    }
    for (x = 0; x < 8; x++)
        for (k = 0; k < 8; k++)
            dct8t[x][k] = dct8[k][x];
    lo_b = (int *)malloc(sizeof(int) * nob);
    band->start = (int *)malloc(sizeof(int) * nob);
    if (!lo_b || !band->start)
        goto oom;
    /* pass 1: band of input blocks per output block (row_range, from the taps) */
    for (ob = 0; ob < nob; ob++) {
        int lo = 1 << 30, hi = -1;
        for (t = 0; t < 8; t++) {
            int y = ob * 8 + t, src = ax->flip ? ax->out_size - 1 - y : y;
            int p0 = r.bounds[2 * src] - tp.pmin, n = r.bounds[2 * src + 1], a, b;
            if (n <= 0)
                continue;
            a = tp.a[p0] < tp.b[p0] ? tp.a[p0] : tp.b[p0];
            b = tp.a[p0 + n - 1] > tp.b[p0 + n - 1] ? tp.a[p0 + n - 1] : tp.b[p0 + n - 1];
            if (b >= a) {
                if (a < lo) lo = a;
                if (b > hi) hi = b;
            }
        }
        if (hi < lo) {
            lo = 0;
            hi = 0;
        }
        lo_b[ob] = lo / 8;
        if (hi / 8 - lo / 8 + 1 > nb)
            nb = hi / 8 - lo / 8 + 1;
    }
    if (nb > in_blocks)
        nb = in_blocks;
    for (ob = 0; ob < nob; ob++)
        band->start[ob] = lo_b[ob] + nb > in_blocks ? in_blocks - nb : lo_b[ob];
    band->nob = nob;
    band->nf = nf;
    band->nb = nb;
    band->w = (float *)calloc((size_t)nob * nf * nb * 8, sizeof(float));
    band->lo = (int *)malloc(sizeof(int) * nob);
    band->hi = (int *)malloc(sizeof(int) * nob);
    arow = (double *)malloc(sizeof(double) * nf * nb * 8);
    if (!band->w || !arow || !band->lo || !band->hi)
        goto oom;
    /* pass 2: A[ob, f] over samples (sparse taps of each output pixel), then
     * onto input coefficients for the blocks the taps touched */
    for (ob = 0; ob < nob; ob++) {
        int s_base = band->start[ob] * 8, slo = nb * 8, shi = -1, jlo, jhi;
        memset(arow, 0, sizeof(double) * nf * nb * 8);
        for (t = 0; t < 8; t++) {
            int y = ob * 8 + t, src = ax->flip ? ax->out_size - 1 - y : y;
            int p0 = r.bounds[2 * src], n = r.bounds[2 * src + 1], m;
            const double *kw = r.weights + (size_t)src * r.ksize;
            double ct[8];
            for (f = 0; f < nf; f++)
                ct[f] = dct8[freqs[f]][t];
            for (m = 0; m < n; m++) {
                int pm = p0 + m - tp.pmin, a = tp.a[pm], b = tp.b[pm];
                double w0 = tp.w0[pm], wa, wb;
                wa = kw[m] * w0;
                wb = kw[m] * (1.0 - w0);
                a -= s_base;
                b -= s_base;
                /* the band holds the samples with a non-zero weight only (an
                 * exact edge tap or an un-upsampled axis adds zero weights) */
                if (wa != 0.0) {
                    if (a < slo) slo = a;
                    if (a > shi) shi = a;
                }
                if (wb != 0.0) {
                    if (b < slo) slo = b;
                    if (b > shi) shi = b;
                }
                for (f = 0; f < nf; f++) {
                    double *ar = arow + (size_t)f * nb * 8;
                    ar[a] += ct[f] * wa;
                    ar[b] += ct[f] * wb;
                }
            }
        }
        if (shi < slo) {
            band->lo[ob] = 0;
            band->hi[ob] = -1;
            continue;
        }
        jlo = slo / 8;
        jhi = shi / 8;
        band->lo[ob] = band->start[ob] + jlo;
        band->hi[ob] = band->start[ob] + jhi;
        for (f = 0; f < nf; f++)
            for (j = jlo; j <= jhi; j++) {
                /* onto the input block's coefficients: w[k] = sum_x a[x] C[k][x],
                 * x in order, all k at once (vectorizes) */
                const double *a = arow + ((size_t)f * nb + j) * 8;
                float *w = band->w + (((size_t)ob * nf + f) * nb + j) * 8;
                double sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                int x0 = slo - 8 * j > 0 ? slo - 8 * j : 0, x1 = shi - 8 * j < 7 ? shi - 8 * j : 7;
                for (x = x0; x <= x1; x++) /* samples outside [slo, shi] are 0 */
                    for (k = 0; k < 8; k++)
                        sum[k] += a[x] * dct8t[x][k];
                for (k = 0; k < 8; k++)
                    w[k] = (float)sum[k];
            }
    }
    free(lo_b);
    free(arow);
    taps_free(&tp);
    resize_free(&r);
    return 0;
oom:
    free(lo_b);
    free(arow);
    taps_free(&tp);
    resize_free(&r);
    jf_band_free(band);
    snprintf(st->msg, JF_MSG_LEN, "out of memory building the resampling operator");
    st->kind = JF_ERR_MEMORY;
    return -1;
}

/* The horizontal pass's view of a band (see jf_band): computed once per band. */
static int band_prepare_pass1(jf_band *B, int in_blocks)
{
    int nv = B->nf, nvp = nv <= 2 ? 2 : nv <= 4 ? 4 : 8, ob, ib, k, f;
    B->nvp = nvp;
    B->oc_lo = (int *)malloc(sizeof(int) * 2 * (size_t)in_blocks);
    B->wlen = (int *)malloc(sizeof(int) * ((size_t)in_blocks + 1));
    B->woff = (size_t *)malloc(sizeof(size_t) * ((size_t)in_blocks + 1));
    if (!B->oc_lo || !B->wlen || !B->woff)
        return -1;
    B->oc_hi = B->oc_lo + in_blocks;
    for (ib = 0; ib < in_blocks; ib++) {
        B->oc_lo[ib] = B->nob;
        B->oc_hi[ib] = 0;
    }
    for (ob = 0; ob < B->nob; ob++)
        for (ib = B->lo[ob]; ib <= B->hi[ob]; ib++) {
            if (ob < B->oc_lo[ib]) B->oc_lo[ib] = ob;
            if (ob + 1 > B->oc_hi[ib]) B->oc_hi[ib] = ob + 1;
        }
    B->L = 8;
    B->cmin = in_blocks;
    B->cmax = 0;
    B->woff[0] = 0;
    for (ib = 0; ib < in_blocks; ib++) {
        int used = B->oc_hi[ib] > B->oc_lo[ib];
        int len = used ? ((B->oc_hi[ib] - B->oc_lo[ib]) * nvp + 7) & ~7 : 0;
        B->wlen[ib] = len;
        B->woff[ib + 1] = B->woff[ib] + (size_t)8 * len;
        if (len > B->L)
            B->L = len;
        if (used) {
            if (ib < B->cmin) B->cmin = ib;
            B->cmax = ib + 1;
        }
    }
    B->W = (float *)calloc(B->woff[in_blocks] + 1, sizeof(float));
    if (!B->W)
        return -1;
    for (ib = 0; ib < in_blocks; ib++) {
        int oc;
        for (oc = B->oc_lo[ib]; oc < B->oc_hi[ib]; oc++) {
            int jj = ib - B->start[oc];
            if (jj < 0 || jj >= B->nb)
                continue;
            for (k = 0; k < 8; k++)
                for (f = 0; f < nv; f++)
                    B->W[B->woff[ib] + (size_t)k * B->wlen[ib] + (oc - B->oc_lo[ib]) * nvp + f] =
                        B->w[(((size_t)oc * nv + f) * B->nb + jj) * 8 + k];
        }
    }
    return 0;
}

/* ======================================================================== */
/* Band cache: eval geometry repeats for every image of the same size       */
/* ======================================================================== */

/* A built band is immutable; the cache hands out shared references. */
typedef struct {
    int image_size, comp_size, factor, out_size, flip, in_blocks, nf;
    int freqs[8];
    double box0, box1;
} jf_band_key;

typedef struct {
    jf_band_key key;
    jf_band *band;      /* NULL: empty slot */
    uint64_t last_use;
} jf_cache_slot;

#define JF_CACHE_SLOTS 96
static jf_cache_slot jf_cache[JF_CACHE_SLOTS];
static uint64_t jf_cache_clock;
static pthread_mutex_t jf_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static void make_key(jf_band_key *k, const jf_axis *ax, int in_blocks, const int *freqs, int nf)
{
    int i;
    memset(k, 0, sizeof(*k)); /* padding too: keys are compared with memcmp */
    k->image_size = ax->image_size;
    k->comp_size = ax->comp_size;
    k->factor = ax->factor;
    k->out_size = ax->out_size;
    k->flip = ax->flip;
    k->in_blocks = in_blocks;
    k->nf = nf;
    for (i = 0; i < nf && i < 8; i++)
        k->freqs[i] = freqs[i];
    k->box0 = ax->box0;
    k->box1 = ax->box1;
}

/* Same axis (everything but the frequencies) and src holds every frequency
 * of want: the rows of a band for want are rows of src. */
static int key_covers(const jf_band_key *src, const jf_band_key *want)
{
    int i, j;
    if (src->image_size != want->image_size || src->comp_size != want->comp_size ||
        src->factor != want->factor || src->out_size != want->out_size ||
        src->flip != want->flip || src->in_blocks != want->in_blocks ||
        src->box0 != want->box0 || src->box1 != want->box1 || src->nf < want->nf)
        return 0;
    for (i = 0; i < want->nf; i++) {
        for (j = 0; j < src->nf && src->freqs[j] != want->freqs[i]; j++) {}
        if (j == src->nf)
            return 0;
    }
    return 1;
}

/* A band for the frequencies of `want` taken from src (key_covers): the band
 * extents do not depend on the frequencies and each frequency's weights are
 * computed on their own, so this equals jf_band_build bit for bit. */
static int band_derive(const jf_band *src, const jf_band_key *skey, const jf_band_key *want,
                       jf_band *b)
{
    int ob, f, j, nob = src->nob, nb = src->nb, nf = want->nf;
    memset(b, 0, sizeof(*b));
    b->nob = nob;
    b->nf = nf;
    b->nb = nb;
    b->start = (int *)malloc(sizeof(int) * nob);
    b->lo = (int *)malloc(sizeof(int) * nob);
    b->hi = (int *)malloc(sizeof(int) * nob);
    b->w = (float *)malloc(sizeof(float) * (size_t)nob * nf * nb * 8);
    if (!b->start || !b->lo || !b->hi || !b->w) {
        jf_band_free(b);
        return -1;
    }
    memcpy(b->start, src->start, sizeof(int) * nob);
    memcpy(b->lo, src->lo, sizeof(int) * nob);
    memcpy(b->hi, src->hi, sizeof(int) * nob);
    for (f = 0; f < nf; f++) {
        for (j = 0; skey->freqs[j] != want->freqs[f]; j++) {}
        for (ob = 0; ob < nob; ob++)
            memcpy(b->w + ((size_t)ob * nf + f) * nb * 8,
                   src->w + ((size_t)ob * src->nf + j) * nb * 8, sizeof(float) * nb * 8);
    }
    return 0;
}

void jf_band_release(jf_band *b)
{
    int last;
    if (b == NULL)
        return;
    pthread_mutex_lock(&jf_cache_lock);
    last = (--b->refs == 0);
    pthread_mutex_unlock(&jf_cache_lock);
    if (last) {
        jf_band_free(b);
        free(b);
    }
}

jf_band *jf_band_acquire(const jf_axis *ax, int in_blocks, const int *freqs, int nf,
                         jf_status *st)
{
    jf_band_key key, skey;
    jf_band *b, *old, *src;
    int i, victim = 0, last, derived;

    if (nf > 8) {
        snprintf(st->msg, JF_MSG_LEN, "at most 8 frequencies per axis");
        st->kind = JF_ERR_ARG;
        return NULL;
    }
    make_key(&key, ax, in_blocks, freqs, nf);
    pthread_mutex_lock(&jf_cache_lock);
    for (i = 0; i < JF_CACHE_SLOTS; i++)
            if (jf_cache[i].band && memcmp(&jf_cache[i].key, &key, sizeof(key)) == 0) {
                b = jf_cache[i].band;
                b->refs++;
                jf_cache[i].last_use = ++jf_cache_clock;
                pthread_mutex_unlock(&jf_cache_lock);
                return b;
            }
    /* not cached: a cached band of the same axis with more frequencies (luma's,
     * when a 4:4:4 file's chroma keeps fewer) already holds its rows */
    src = NULL;
    for (i = 0; i < JF_CACHE_SLOTS; i++)
        if (jf_cache[i].band && key_covers(&jf_cache[i].key, &key)) {
            src = jf_cache[i].band;
            src->refs++;
            skey = jf_cache[i].key;
            break;
        }
    pthread_mutex_unlock(&jf_cache_lock);

    b = (jf_band *)calloc(1, sizeof(jf_band));
    if (!b) {
        jf_band_release(src);
        snprintf(st->msg, JF_MSG_LEN, "out of memory building the resampling operator");
        st->kind = JF_ERR_MEMORY;
        return NULL;
    }
    if (src) {
        derived = band_derive(src, &skey, &key, b);
        jf_band_release(src);
        if (derived != 0) {
            free(b);
            snprintf(st->msg, JF_MSG_LEN, "out of memory building the resampling operator");
            st->kind = JF_ERR_MEMORY;
            return NULL;
        }
    } else if (jf_band_build(ax, in_blocks, freqs, nf, b, st) != 0) {
        free(b);
        return NULL;
    }
    if (band_prepare_pass1(b, in_blocks) != 0) {
        jf_band_free(b);
        free(b);
        snprintf(st->msg, JF_MSG_LEN, "out of memory building the resampling operator");
        st->kind = JF_ERR_MEMORY;
        return NULL;
    }
    b->refs = 2; /* the caller's and the cache's */
    pthread_mutex_lock(&jf_cache_lock);
    for (i = 0; i < JF_CACHE_SLOTS; i++) {
        if (!jf_cache[i].band) {
            victim = i;
            break;
        }
        if (jf_cache[i].last_use < jf_cache[victim].last_use)
            victim = i;
    }
    old = jf_cache[victim].band;
    jf_cache[victim].key = key;
    jf_cache[victim].band = b;
    jf_cache[victim].last_use = ++jf_cache_clock;
    last = old && --old->refs == 0;
    pthread_mutex_unlock(&jf_cache_lock);
    if (last) {
        jf_band_free(old);
        free(old);
    }
    return b;
}

/* ======================================================================== */
/* Scratch buffers: per thread, kept between calls                          */
/* ======================================================================== */

/* The operator's intermediate buffers are a few hundred KB: fresh malloc/free
 * each image would mmap, fault in and unmap them every time. */
#define JF_SCRATCH_SLOTS 10
typedef struct {
    void *p[JF_SCRATCH_SLOTS];
    size_t cap[JF_SCRATCH_SLOTS];
} jf_scratch_set;

static pthread_key_t jf_scratch_key;
static pthread_once_t jf_scratch_once = PTHREAD_ONCE_INIT;

static void jf_scratch_free(void *v)
{
    jf_scratch_set *s = (jf_scratch_set *)v;
    int i;
    for (i = 0; i < JF_SCRATCH_SLOTS; i++)
        free(s->p[i]);
    free(s);
}

static void jf_scratch_init(void) { pthread_key_create(&jf_scratch_key, jf_scratch_free); }

/* A thread-local buffer of at least `bytes` for role `slot`; contents undefined. */
static void *jf_scratch(int slot, size_t bytes)
{
    jf_scratch_set *s;
    pthread_once(&jf_scratch_once, jf_scratch_init);
    s = (jf_scratch_set *)pthread_getspecific(jf_scratch_key);
    if (s == NULL) {
        s = (jf_scratch_set *)calloc(1, sizeof(*s));
        if (s == NULL || pthread_setspecific(jf_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (bytes == 0)
        bytes = 1;
    if (s->cap[slot] < bytes) {
        void *p = realloc(s->p[slot], bytes + bytes / 4);
        if (p == NULL)
            return NULL;
        s->p[slot] = p;
        s->cap[slot] = bytes + bytes / 4;
    }
    return s->p[slot];
}

/* The distinct kept u and v of a request, in order of first appearance (the
 * band cache keys on this order), and each channel's index into them. */
static void kept_uv(const jf_comp_request *req, int U[8], int *nu, int V[8], int *nv,
                    int ui[64], int vi[64])
{
    int i, f;
    *nu = *nv = 0;
    for (i = 0; i < req->n; i++) {
        int u = req->k[i] >> 3, v = req->k[i] & 7;
        for (f = 0; f < *nu && U[f] != u; f++) {}
        if (f == *nu) U[(*nu)++] = u;
        ui[i] = f;
        for (f = 0; f < *nv && V[f] != v; f++) {}
        if (f == *nv) V[(*nv)++] = v;
        vi[i] = f;
    }
}

/* ======================================================================== */
/* out = A Q B^T: the kernels, compiled twice (AVX2+FMA and generic)        */
/* ======================================================================== */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define JF_IMPL(name) name##_avx2
#include "jf_cube_impl.h"
#undef JF_IMPL
#pragma GCC pop_options
#define JF_HAVE_AVX2_BUILD 1
#endif

#define JF_IMPL(name) name##_generic
#include "jf_cube_impl.h"
#undef JF_IMPL

int jf_component_cube(jf_decoder *d, int c, const jf_axis *ax_h, const jf_axis *ax_w,
                      const jf_comp_request *req, float *cube, int out_hb, int out_wb,
                      int transpose, jf_status *st)
{
#ifdef JF_HAVE_AVX2_BUILD
    static int avx2 = -1;
    if (avx2 < 0) {
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (avx2)
        return component_cube_avx2(d, c, ax_h, ax_w, req, cube, out_hb, out_wb, transpose, st);
#endif
    return component_cube_generic(d, c, ax_h, ax_w, req, cube, out_hb, out_wb, transpose, st);
}

int jf_rows_span(jf_decoder *d, int c, const jf_axis *ax_h, const jf_comp_request *req,
                 int *first, jf_status *st)
{
    /* the kept u as jf_component_cube lists them: the same cached band A */
    int U[8], V[8], ui[64], vi[64], nu, nv, ob, last = -1, lo = -1;
    jf_band *A;
    if (first)
        *first = 0;
    kept_uv(req, U, &nu, V, &nv, ui, vi);
    if (nu == 0)
        return 0;
    A = jf_band_acquire(ax_h, d->hdr.comp[c].height_in_blocks, U, nu, st);
    if (!A)
        return -1;
    for (ob = 0; ob < A->nob; ob++)
        if (A->hi[ob] >= A->lo[ob]) {
            if (A->hi[ob] > last)
                last = A->hi[ob];
            if (lo < 0 || A->lo[ob] < lo)
                lo = A->lo[ob];
        }
    jf_band_release(A);
    if (first && lo > 0)
        *first = lo;
    return last + 1;
}

int jf_rows_needed(jf_decoder *d, int c, const jf_axis *ax_h, const jf_comp_request *req,
                   jf_status *st)
{
    return jf_rows_span(d, c, ax_h, req, NULL, st);
}

void jf_eval_box(int width, int height, int resize, int crop_h, int crop_w, double box[4])
{
    /* resized size: short side = resize, long side truncated (torchvision Resize) */
    int rw, rh, top, left;
    double sx, sy;
    if (width <= height) {
        rw = resize;
        rh = (int)((double)resize * height / width);
    } else {
        rh = resize;
        rw = (int)((double)resize * width / height);
    }
    sx = (double)width / rw;
    sy = (double)height / rh;
    /* Python's round(): halves to even, as torchvision's CenterCrop */
    top = (int)nearbyint((rh - crop_h) / 2.0);
    left = (int)nearbyint((rw - crop_w) / 2.0);
    box[0] = left * sx;
    box[1] = top * sy;
    box[2] = (left + crop_w) * sx;
    box[3] = (top + crop_h) * sy;
}

/* ======================================================================== */
/* Block DCT of a pixel plane for the spatial path                          */
/* ======================================================================== */

void jf_block_dct(const float *plane, int h, int w, const int *us, int nu, const int *vs, int nv,
                  float *out)
{
    /* out[iu][iv][bi][bj] = sum_xy C[u][x] P[8bi+x][8bj+y] C[v][y] */
    int bi, bj, iu, iv, x, y;
    size_t nb = (size_t)(h / 8) * (w / 8);
    dct8_init();
    for (bi = 0; bi < h / 8; bi++)
        for (bj = 0; bj < w / 8; bj++) {
            float t[8][8]; /* t[iu][y] = sum_x C[u][x] P[x][y] */
            const float *p = plane + (size_t)bi * 8 * w + (size_t)bj * 8;
            for (iu = 0; iu < nu; iu++) {
                for (y = 0; y < 8; y++)
                    t[iu][y] = 0.0f;
                for (x = 0; x < 8; x++) {
                    float c = dct8[us[iu]][x];
                    for (y = 0; y < 8; y++)
                        t[iu][y] += c * p[(size_t)x * w + y];
                }
            }
            for (iu = 0; iu < nu; iu++)
                for (iv = 0; iv < nv; iv++) {
                    float acc = 0.0f;
                    for (y = 0; y < 8; y++)
                        acc += t[iu][y] * dct8[vs[iv]][y];
                    out[((size_t)iu * nv + iv) * nb + (size_t)bi * (w / 8) + bj] = acc;
                }
        }
}

/* ======================================================================== */
/* Pixel-domain resampling with the same weights (the spatial path)         */
/* ======================================================================== */

/* Taps of one axis: output pixel i reads samples [start[i], start[i] + nt). */
static int axis_taps(const jf_axis *ax, int **start, int *nt, float **w)
{
    jf_resize r;
    int y, n = 1, j;
    double *row;
    if (resize_init(ax, &r) != 0)
        return -1;
    for (y = 0; y < ax->out_size; y++) {
        int lo, hi;
        row_range(ax, &r, y, &lo, &hi);
        if (hi - lo + 1 > n)
            n = hi - lo + 1;
    }
    if (n > ax->comp_size)
        n = ax->comp_size;
    *nt = n;
    *start = (int *)malloc(sizeof(int) * ax->out_size);
    *w = (float *)malloc(sizeof(float) * (size_t)n * ax->out_size);
    row = (double *)malloc(sizeof(double) * (size_t)n);
    if (!*start || !*w || !row) {
        free(*start);
        free(*w);
        free(row);
        resize_free(&r);
        return -1;
    }
    for (y = 0; y < ax->out_size; y++) {
        int lo, hi;
        row_range(ax, &r, y, &lo, &hi);
        if (hi < lo)
            lo = 0;
        if (lo + n > ax->comp_size)
            lo = ax->comp_size - n;
        memset(row, 0, sizeof(double) * n);
        row_accumulate(ax, &r, y, 1.0, row, lo);
        (*start)[y] = lo;
        for (j = 0; j < n; j++)
            (*w)[(size_t)y * n + j] = (float)row[j];
    }
    free(row);
    resize_free(&r);
    return 0;
}

int jf_resample_plane(const float *in, int in_stride, const jf_axis *ah, const jf_axis *aw,
                      float *out)
{
    int *sh = NULL, *sw = NULL, nh, nw, y, x, j, rmin, rmax;
    float *wh = NULL, *ww = NULL, *tmp = NULL;
    int ret = -1;

    if (axis_taps(ah, &sh, &nh, &wh) != 0)
        return -1;
    if (axis_taps(aw, &sw, &nw, &ww) != 0)
        goto done;
    rmin = ah->comp_size;
    rmax = 0;
    for (y = 0; y < ah->out_size; y++) {
        if (sh[y] < rmin) rmin = sh[y];
        if (sh[y] + nh > rmax) rmax = sh[y] + nh;
    }
    tmp = (float *)malloc(sizeof(float) * (size_t)(rmax - rmin) * aw->out_size);
    if (!tmp)
        goto done;
    /* horizontal: used rows only */
    for (y = rmin; y < rmax; y++) {
        const float *src = in + (size_t)y * in_stride;
        float *t = tmp + (size_t)(y - rmin) * aw->out_size;
        for (x = 0; x < aw->out_size; x++) {
            const float *wx = ww + (size_t)x * nw, *s = src + sw[x];
            float acc = 0.0f;
            for (j = 0; j < nw; j++)
                acc += wx[j] * s[j];
            t[x] = acc;
        }
    }
    /* vertical: contiguous rows */
    for (y = 0; y < ah->out_size; y++) {
        float *o = out + (size_t)y * aw->out_size;
        const float *wy = wh + (size_t)y * nh;
        memset(o, 0, sizeof(float) * aw->out_size);
        for (j = 0; j < nh; j++) {
            const float *t = tmp + (size_t)(sh[y] + j - rmin) * aw->out_size;
            float wj = wy[j];
            if (wj == 0.0f)
                continue;
            for (x = 0; x < aw->out_size; x++)
                o[x] += wj * t[x];
        }
    }
    ret = 0;
done:
    free(sh);
    free(sw);
    free(wh);
    free(ww);
    free(tmp);
    return ret;
}
