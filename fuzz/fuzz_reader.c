/*
 * fuzz_reader.c - libFuzzer target for the plain-C core (no Python).
 *
 * Feeds the input bytes through every entry point of csrc/jf_core.h the way
 * the binding does: EXIF orientation, header (with a 1-megapixel limit so
 * the fuzzer cannot ask for gigabytes), entropy decode, int16 copy,
 * dequantized copy of a few frequencies, the progressive cut-off and a
 * cut-off read, a read that stops below the eval crop, the coefficient-domain cube (eval geometry, a flipped request
 * and a transposed one as EXIF orientations 5..8 make it, a box overhanging
 * the image, the whole image into one block), and the pixel decode of the
 * spatial path.  Every output buffer
 * is a separate malloc so AddressSanitizer sees any overrun.
 *
 * Build and run: fuzz/run.sh (clang -fsanitize=fuzzer,address,undefined).
 */
#include "jf_core.h"

#include <stdlib.h>
#include <string.h>

/* 1 megapixel: big enough for strong downscales (a 1000x1000 image to 8x8 reads
 * every block into one output block), small enough for ~1000 runs/s. */
#ifndef FUZZ_MAX_PIXELS
#define FUZZ_MAX_PIXELS (1000LL * 1000)
#endif

/* ======================================================================== */
/* Geometry and channel requests                                            */
/* ======================================================================== */

/* A channel set spanning a few rows and columns of each component (24S-like)
 * so the operator builds several u and v bands: u = 0 keeps all four v (the
 * AVX2 build's 4x8 transpose out of pass 2), u = 7 the widest band. */
static const int y_freqs[] = {0, 1, 2, 3, 8, 9, 17, 24, 56};
static const int c_freqs[] = {0, 1, 8, 9};
#define NY ((int)(sizeof(y_freqs) / sizeof(*y_freqs)))
#define NC ((int)(sizeof(c_freqs) / sizeof(*c_freqs)))

static void make_request(jf_comp_request *req, int c, int transpose, int *next_channel)
{
    const int *ks = c == 0 ? y_freqs : c_freqs;
    int n = c == 0 ? NY : NC;
    int i;
    req->n = n;
    for (i = 0; i < n; i++) {
        int k = ks[i];
        req->k[i] = transpose ? ((k & 7) << 3 | k >> 3) : k;
        req->channel[i] = (*next_channel)++;
        req->scale[i] = 1.0f;
        req->offset[i] = 0.0f;
    }
}

static int total_channels(int ncomp)
{
    int nc = ncomp < 3 ? ncomp : 3;
    return NY + (nc - 1) * NC;
}

/* Component c's stored rows / columns axes for a box in stored coordinates;
 * transpose swaps them exactly as orientations 5..8 do. */
static void comp_axes(const jf_header *h, int c, const double box[4], int out_h, int out_w,
                      int flip, int transpose, jf_axis *ah, jf_axis *aw)
{
    const jf_comp_info *ci = &h->comp[c];
    ah->image_size = h->height;
    ah->comp_size = ci->height;
    ah->factor = h->max_v / ci->v_samp;
    aw->image_size = h->width;
    aw->comp_size = ci->width;
    aw->factor = h->max_h / ci->h_samp;
    if (!transpose) {
        ah->box0 = box[1]; ah->box1 = box[3]; ah->out_size = out_h; ah->flip = 0;
        aw->box0 = box[0]; aw->box1 = box[2]; aw->out_size = out_w; aw->flip = flip;
    } else {
        /* displayed = transposed stored: displayed rows are stored columns */
        ah->box0 = box[0]; ah->box1 = box[2]; ah->out_size = out_w; ah->flip = flip;
        aw->box0 = box[1]; aw->box1 = box[3]; aw->out_size = out_h; aw->flip = 1;
    }
}

/* The binding's cube_compute, minus orientation bookkeeping: box in stored
 * coordinates; transpose swaps the axes exactly as orientations 5..8 do. */
static void run_cube(jf_decoder *d, const double box[4], int out_h, int out_w, int flip,
                     int transpose)
{
    const jf_header *h = &d->hdr;
    int c, next = 0, nch = total_channels(h->num_components);
    float *cube;
    jf_status st;

    if (h->color_space != JF_CS_YCBCR && h->color_space != JF_CS_GRAY)
        return; /* the binding sends these to the spatial path */
    cube = (float *)malloc(sizeof(float) * (size_t)nch * (out_h / 8) * (out_w / 8));
    if (!cube)
        return;
    for (c = 0; c < h->num_components && c < 3; c++) {
        const jf_comp_info *ci = &h->comp[c];
        jf_comp_request req;
        jf_axis ah, aw;
        if (h->max_h % ci->h_samp != 0 || h->max_v % ci->v_samp != 0)
            break; /* the binding refuses non-integral sampling ratios */
        make_request(&req, c, transpose, &next);
        comp_axes(h, c, box, out_h, out_w, flip, transpose, &ah, &aw);
        jf_status_init(&st);
        if (!transpose) {
            if (jf_component_cube(d, c, &ah, &aw, &req, cube, out_h / 8, out_w / 8, 0, &st) != 0)
                break;
        } else if (jf_component_cube(d, c, &ah, &aw, &req, cube, out_w / 8, out_h / 8, 1, &st) != 0)
            break;
    }
    free(cube);
}

static void run_cubes(jf_decoder *d)
{
    const jf_header *h = &d->hdr;
    double box[4];

    /* eval geometry, 64x64 output from a 73-pixel short side (448/512 scaled down) */
    jf_eval_box(h->width, h->height, 73, 64, 64, box);
    run_cube(d, box, 64, 64, 0, 0);
    /* transposed orientation (EXIF 5..8): displayed size is height x width */
    jf_eval_box(h->height, h->width, 73, 48, 64, box);
    run_cube(d, box, 48, 64, 1, 1);
    /* a train-style box overhanging the image on every side, upscaled, flipped */
    box[0] = -0.25 * h->width;
    box[1] = -3.5;
    box[2] = 1.1 * h->width + 1.0;
    box[3] = h->height + 7.25;
    run_cube(d, box, 32, 40, 1, 0);
    /* the whole image into one 8x8 block: the widest band the operator builds */
    box[0] = 0.0;
    box[1] = 0.0;
    box[2] = h->width;
    box[3] = h->height;
    run_cube(d, box, 8, 8, 0, 0);
}

/* ======================================================================== */
/* Readers                                                                  */
/* ======================================================================== */

static void read_everything(jf_decoder *d)
{
    static const int freqs[] = {0, 1, 8, 9, 63};
    int c;
    jf_status st;

    for (c = 0; c < d->hdr.num_components; c++) {
        const jf_comp_info *ci = &d->hdr.comp[c];
        size_t nblk = (size_t)ci->width_in_blocks * ci->height_in_blocks;
        int16_t *q = (int16_t *)malloc(sizeof(int16_t) * 64 * (nblk ? nblk : 1));
        float *f = (float *)malloc(sizeof(float) * 5 * (nblk ? nblk : 1));
        jf_status_init(&st);
        if (q && jf_copy_component(d, c, q, &st) == 0 && f)
            (void)jf_dequant_component(d, c, freqs, 5, f, &st);
        free(q);
        free(f);
    }
}

static void decode_pixels(const uint8_t *data, size_t size)
{
    jf_decoder *d = (jf_decoder *)malloc(sizeof(jf_decoder));
    uint8_t *planes[JF_MAX_COMPONENTS] = {0};
    jf_status st;
    int c, ok = 1;

    if (!d)
        return;
    jf_status_init(&st);
    if (jf_open(d, data, size, FUZZ_MAX_PIXELS, &st) != 0) {
        free(d);
        return;
    }
    for (c = 0; c < d->hdr.num_components; c++) {
        size_t n = (size_t)jf_plane_rows(d, c) * jf_plane_stride(d, c);
        planes[c] = (uint8_t *)malloc(n ? n : 1);
        if (!planes[c])
            ok = 0;
    }
    if (ok)
        (void)jf_decode_planes(d, planes, &st);
    jf_close(d);
    for (c = 0; c < JF_MAX_COMPONENTS; c++)
        free(planes[c]);
    free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jf_decoder *d = (jf_decoder *)malloc(sizeof(jf_decoder));
    uint8_t need[JF_MAX_COMPONENTS][64];
    jf_status st;
    size_t cut;
    int k;

    if (!d)
        return 0;
    (void)jf_exif_orientation(data, size);

    /* 1. full read: coefficients, dequantized copies, cubes */
    jf_status_init(&st);
    if (jf_open(d, data, size, FUZZ_MAX_PIXELS, &st) != 0) {
        free(d);
        return 0;
    }
    if (jf_read_all(d, &st) == 0) {
        read_everything(d);
        run_cubes(d);
    }
    jf_close(d);

    /* 2. progressive cut-off: the scans holding u, v <= 1 of every component,
     * then a read that stops there (the binding's band_cutoff) */
    memset(need, 0, sizeof(need));
    for (k = 0; k < 64; k++)
        need[0][k] = need[1][k] = need[2][k] = (k >> 3) <= 1 && (k & 7) <= 1;
    jf_status_init(&st);
    if (jf_open(d, data, size, FUZZ_MAX_PIXELS, &st) == 0) {
        cut = jf_progressive_cutoff(data, size, &d->hdr, need);
        if (cut > size)
            abort(); /* the cut-off must lie inside the input */
        if (cut < size) {
            jf_limit_input(d, cut);
            if (jf_read_all(d, &st) == 0)
                run_cubes(d);
        }
        jf_close(d);
    }

    /* 3. the binding's early stop: each scan's entropy decoding ends after the iMCU row
     * holding the last luma block row the eval cube reads; then the cubes
     * (the other geometries also read rows that were never decoded) */
    jf_status_init(&st);
    if (jf_open(d, data, size, FUZZ_MAX_PIXELS, &st) == 0) {
        const jf_header *h = &d->hdr;
        jf_comp_request req;
        jf_axis ah, aw;
        double box[4];
        int next = 0, rows;
        jf_eval_box(h->width, h->height, 73, 64, 64, box);
        make_request(&req, 0, 0, &next);
        comp_axes(h, 0, box, 64, 64, 0, 0, &ah, &aw);
        rows = jf_rows_needed(d, 0, &ah, &req, &st);
        if (rows > 0) {
            d->stop_imcu = (rows + h->comp[0].v_samp - 1) / h->comp[0].v_samp;
            if (jf_read_all(d, &st) == 0)
                run_cubes(d);
        }
        jf_close(d);
    }
    free(d);

    /* 4. the spatial path's pixel decode */
    decode_pixels(data, size);
    return 0;
}
