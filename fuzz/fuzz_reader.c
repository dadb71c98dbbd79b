/*
 * fuzz_reader.c - libFuzzer target for the plain-C core (no Python).
 *
 * Feeds the input bytes through the entry points of csrc/jf_core.h that the
 * binding calls: EXIF orientation, the header (with a 1-megapixel limit so
 * the fuzzer cannot ask for gigabytes), the routing decision, the progressive
 * cut-off search, entropy decode, int16 and dequantized copies, the pixel
 * decode of the spatial path, and jf_cube itself, the binding's own cube
 * entry point (planning, early stop, band cut-off and operator in one call),
 * for three requests per input:
 *   - the eval geometry (EXIF orientation, early stop, scale and offset);
 *   - the whole image into one 8x8 block under orientation 6 (a transposed,
 *     flipped request and the widest band the operator builds), read to the end;
 *   - one request decoded from the input's last REQ_BYTES bytes (see
 *     fuzzed_request): libjpeg stops at EOI, so bytes after it steer the
 *     request without changing the image, and the fuzzer explores both.
 * Every output buffer is a separate malloc so AddressSanitizer sees any
 * overrun; cube outputs start as NaN and must be finite wherever jf_cube
 * reports success (no element left unwritten).  The routing decision must
 * agree with jf_cube's JF_ERR_NEEDS_SPATIAL, and a request jf_cube_check
 * refuses must never reach the decoder.
 *
 * Build and run: fuzz/run.sh (clang -fsanitize=fuzzer,address,undefined).
 */
#include "jf_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* 1 megapixel: big enough for strong downscales (a 1000x1000 image to 8x8 reads
 * every block into one output block), small enough for ~1000 runs/s. */
#ifndef FUZZ_MAX_PIXELS
#define FUZZ_MAX_PIXELS (1000LL * 1000)
#endif

#define REQ_BYTES 16

/* ======================================================================== */
/* Channel sets                                                             */
/* ======================================================================== */

/* A channel set spanning a few rows and columns of each component (24S-like)
 * so the operator builds several u and v bands: u = 0 keeps all four v (the
 * AVX2 build's 4x8 transpose out of pass 2), u = 7 the widest band. */
static const int y_freqs[] = {0, 1, 2, 3, 8, 9, 17, 24, 56};
static const int c_freqs[] = {0, 1, 8, 9};
#define NY ((int)(sizeof(y_freqs) / sizeof(*y_freqs)))
#define NC ((int)(sizeof(c_freqs) / sizeof(*c_freqs)))

typedef struct {
    int n;
    int comp[JF_MAX_CHANNELS + 8];
    int k[JF_MAX_CHANNELS + 8];
    float scale[JF_MAX_CHANNELS + 8];
    float offset[JF_MAX_CHANNELS + 8];
} channels;

static void add(channels *ch, int c, int k)
{
    ch->comp[ch->n] = c;
    ch->k[ch->n] = k;
    ch->scale[ch->n] = 1.0f / (1.0f + (float)ch->n);
    ch->offset[ch->n] = 0.5f * (float)ch->n - 3.0f;
    ch->n++;
}

static void set_24s(channels *ch)
{
    int i, c;
    ch->n = 0;
    for (i = 0; i < NY; i++)
        add(ch, 0, y_freqs[i]);
    for (c = 1; c < 3; c++)
        for (i = 0; i < NC; i++)
            add(ch, c, c_freqs[i]);
}

/* sel 0: the 24S-like set; 1: all 192; 2: one channel; 3: chroma only (all of
 * it on a grayscale file is neutral fill); 4: up to 64 channels, repeats and
 * any order allowed; 5: more than 64 of one component (must be refused). */
static void set_from(channels *ch, int sel, int p)
{
    int i, n;
    ch->n = 0;
    switch (sel) {
    case 0:
        set_24s(ch);
        break;
    case 1:
        for (i = 0; i < JF_MAX_CHANNELS; i++)
            add(ch, i / 64, i % 64);
        break;
    case 2:
        add(ch, p % 3, (p / 3) % 64);
        break;
    case 3:
        add(ch, 1, p % 64);
        add(ch, 2, (p * 7) % 64);
        add(ch, 1, 0);
        break;
    case 4:
        n = 1 + p % 64;
        for (i = 0; i < n; i++)
            add(ch, (p + i * 5) % 3, (p * 13 + i * 29) % 64);
        break;
    default:
        for (i = 0; i < 65; i++)
            add(ch, 0, (p + i) % 64);
        break;
    }
}

static void attach(jf_cube_request *r, const channels *ch, int with_scale)
{
    r->nch = ch->n;
    r->comp = ch->comp;
    r->k = ch->k;
    r->scale = with_scale ? ch->scale : NULL;
    r->offset = with_scale ? ch->offset : NULL;
}

/* ======================================================================== */
/* Requests                                                                 */
/* ======================================================================== */

static int s16(const uint8_t *p)
{
    return (int)(int16_t)(uint16_t)(p[0] | p[1] << 8);
}

static int u16(const uint8_t *p)
{
    return p[0] | p[1] << 8;
}

/* The request the input's last REQ_BYTES bytes t[] describe (h: its header,
 * for boxes relative to the displayed image):
 *   t0      orientation (t0 % 11) - 1: -1 (EXIF) .. 8, and 9 (invalid)
 *   t1      bit 0 flip, 1 band_cutoff, 2 no early stop, 3 strict, 4 box (else
 *           eval resize), 5 box relative to the image (else pixels), 6 scale
 *           and offset, 7 raw output sizes (may be invalid)
 *   t2, t3  out_h, out_w: 8 * (1 + t % 16), or t - 8 raw
 *   t4..5   resize 1 + u16 % 512 (eval); with bit 7, u16 - 8 raw
 *   t6..13  box: x0, y0 (signed), width, height (unsigned), quarter pixels or
 *           1/4096 of the displayed size
 *   t14     channel set (set_from: t14 % 6), t15 its parameter
 * Without a box, bit 5 of t1 asks for photometric ops from t6..t11 instead:
 * brightness t6 / 64, contrast t7 / 64, saturation t8 / 64, hue (t9 - 128) / 256,
 * grayscale t10 & 1, and t11 == 255 makes the contrast NaN (refused). */
static void fuzzed_request(const uint8_t *t, const jf_header *h, jf_cube_request *r,
                           channels *ch)
{
    int raw = (t[1] >> 7) & 1, o;
    memset(r, 0, sizeof(*r));
    o = t[0] % 11 - 1;
    r->orientation = o;
    r->flip = t[1] & 1;
    r->band_cutoff = (t[1] >> 1) & 1;
    r->early_stop = !((t[1] >> 2) & 1);
    r->strict = (t[1] >> 3) & 1;
    r->has_box = (t[1] >> 4) & 1;
    r->out_h = raw ? (int)t[2] - 8 : 8 * (1 + t[2] % 16);
    r->out_w = raw ? (int)t[3] - 8 : 8 * (1 + t[3] % 16);
    r->resize = raw ? u16(t + 4) - 8 : 1 + u16(t + 4) % 512;
    r->max_pixels = FUZZ_MAX_PIXELS;
    if (r->has_box) {
        if ((t[1] >> 5) & 1) {
            /* displayed size: EXIF 5..8 (and -1 when the file says so) transpose */
            int eo = o < 0 ? h->orientation : o;
            double dw = eo >= 5 ? h->height : h->width, dh = eo >= 5 ? h->width : h->height;
            r->box[0] = dw * s16(t + 6) / 4096.0;
            r->box[1] = dh * s16(t + 8) / 4096.0;
            r->box[2] = r->box[0] + dw * u16(t + 10) / 4096.0;
            r->box[3] = r->box[1] + dh * u16(t + 12) / 4096.0;
        } else {
            r->box[0] = s16(t + 6) / 4.0;
            r->box[1] = s16(t + 8) / 4.0;
            r->box[2] = r->box[0] + u16(t + 10) / 4.0;
            r->box[3] = r->box[1] + u16(t + 12) / 4.0;
        }
    }
    if (!r->has_box && ((t[1] >> 5) & 1)) {
        r->has_photo = 1;
        r->photo[0] = t[6] / 64.0;
        r->photo[1] = t[11] == 255 ? NAN : t[7] / 64.0;
        r->photo[2] = t[8] / 64.0;
        r->photo[3] = (t[9] - 128) / 256.0;
        r->photo[4] = t[10] & 1;
    }
    set_from(ch, t[14] % 6, t[15]);
    attach(r, ch, (t[1] >> 6) & 1);
}

/* Run one request through jf_cube into a fresh NaN-filled buffer of exactly
 * the size it asks for, and check what comes back. */
/* Where the data ran out, as a successful read reports it: rows within the image,
 * the rows read within the image, a scan only when rows were cut. */
static void check_extent(const jf_status *st, size_t size)
{
    if (st->cut_scan < 0 || st->cut_row < 0 || st->cut_row > st->total_rows ||
        st->read_lo < 0 || st->read_lo > st->read_hi || st->read_hi > st->total_rows ||
        (st->cut_scan == 0 && st->cut_row != 0) || st->data_len != (long long)size ||
        st->scan_byte < 0 || st->scan_byte > st->data_len)
        abort(); /* an extent that does not describe this input */
}

static void run_cube(const uint8_t *data, size_t size, const jf_cube_request *r, int route)
{
    jf_status st;
    size_t n = 1, i;
    float *out;
    int ok, rc;

    jf_status_init(&st);
    ok = jf_cube_check(r, &st) == 0;
    if (ok)
        n = (size_t)r->nch * (r->out_h / 8) * (r->out_w / 8);
    out = (float *)malloc(sizeof(float) * n);
    if (!out)
        return;
    for (i = 0; i < n; i++)
        out[i] = NAN;
    rc = jf_cube(data, size, r, out, &st);
    if (!ok && (rc == 0 || st.kind != JF_ERR_ARG))
        abort(); /* a request its own check refuses must fail as such */
    if (rc == 0) {
        if (route != 0)
            abort(); /* the compressed path ran on a file routed to the spatial one */
        check_extent(&st, size);
        for (i = 0; i < n; i++)
            if (!isfinite(out[i]))
                abort(); /* an element left unwritten, or a non-finite value */
    } else if (ok && (st.kind == JF_ERR_NEEDS_SPATIAL) != (route == 1)) {
        abort(); /* jf_cube and jf_route disagree about the path */
    } else if (st.msg[0] == '\0') {
        abort(); /* every failure says why */
    }
    free(out);
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
    static const uint8_t zeros[REQ_BYTES];
    jf_decoder *d = (jf_decoder *)malloc(sizeof(jf_decoder));
    uint8_t need[JF_MAX_COMPONENTS][64];
    char reason[JF_MSG_LEN];
    channels ch24, chf;
    jf_cube_request r;
    jf_header h;
    jf_status st;
    size_t cut;
    int k, route;

    if (!d)
        return 0;
    (void)jf_exif_orientation(data, size);

    /* 1. header, route, progressive cut-off search, full read and copies */
    jf_status_init(&st);
    if (jf_open(d, data, size, FUZZ_MAX_PIXELS, &st) != 0) {
        free(d);
        /* jf_cube must fail the same way on it (and say why) */
        set_24s(&ch24);
        memset(&r, 0, sizeof(r));
        r.out_h = r.out_w = 64;
        r.resize = 73;
        r.max_pixels = FUZZ_MAX_PIXELS;
        attach(&r, &ch24, 0);
        run_cube(data, size, &r, -1);
        return 0;
    }
    h = d->hdr;
    route = jf_route(&h, reason, sizeof(reason));
    if ((route != 0) != (reason[0] != '\0'))
        abort(); /* a reason exactly when the spatial path is needed */
    memset(need, 0, sizeof(need));
    for (k = 0; k < 64; k++)
        need[0][k] = need[1][k] = need[2][k] = (k >> 3) <= 1 && (k & 7) <= 1;
    cut = jf_progressive_cutoff(data, size, &h, need);
    if (cut > size)
        abort(); /* the cut-off must lie inside the input */
    if (jf_read_all(d, &st) == 0) {
        read_everything(d);
        check_extent(&st, size);
    }
    jf_close(d);
    free(d);

    /* 2. jf_cube: the eval geometry as the loader asks for it */
    set_24s(&ch24);
    memset(&r, 0, sizeof(r));
    r.out_h = r.out_w = 64;
    r.resize = 73;          /* 448/512 of a 64 crop, scaled down */
    r.orientation = -1;
    r.early_stop = 1;
    r.max_pixels = FUZZ_MAX_PIXELS;
    attach(&r, &ch24, 1);
    run_cube(data, size, &r, route);

    /* 3. the whole displayed image into one block, transposed and flipped */
    r.out_h = r.out_w = 8;
    r.orientation = 6;
    r.early_stop = 0;
    r.has_box = 1;
    r.box[0] = r.box[1] = 0.0;
    r.box[2] = h.height;    /* displayed width under orientation 6 */
    r.box[3] = h.width;
    r.flip = 1;
    attach(&r, &ch24, 0);
    run_cube(data, size, &r, route);

    /* 4. the request the input's tail describes */
    fuzzed_request(size >= REQ_BYTES ? data + size - REQ_BYTES : zeros, &h, &r, &chf);
    run_cube(data, size, &r, route);

    /* 5. the spatial path's pixel decode */
    decode_pixels(data, size);
    return 0;
}
