/*
 * jf_cube.c - the cube, planned and run in C: bytes + request -> float32 cube.
 *
 * jf_cube() is the one entry point the binding (csrc/_jpegfreq.c) and the
 * fuzzer (fuzz/fuzz_reader.c) both call.  From the bytes it opens the decoder
 * (header only), takes the routing decision (jf_route: can the compressed path
 * take this file at all?), plans the cube from the header (EXIF orientation
 * mapped onto the stored image, per-component axes and kept frequencies,
 * grayscale chroma filled), limits the input for a progressive band cut-off,
 * entropy-decodes only down to the last block row the operator reads (early
 * stop) and runs the coefficient-domain operator of jf_resample.c per
 * component.  No Python in here; all memory but the caller's output is owned
 * and freed here.
 */
#include "jf_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int jf_box_ok(const double b[4])
{
    int i;
    for (i = 0; i < 4; i++)
        if (!isfinite(b[i]) || fabs(b[i]) > JF_MAX_COORD)
            return 0;
    return b[2] > b[0] && b[3] > b[1];
}

/* ======================================================================== */
/* Routing: compressed path or spatial path, from the header alone          */
/* ======================================================================== */

int jf_route(const jf_header *h, char *reason, size_t n)
{
    int cs = h->color_space;

    if (cs != JF_CS_YCBCR && cs != JF_CS_GRAY) {
        if (n)
            snprintf(reason, n, "%s JPEG: colour cannot be mapped linearly to YCbCr",
                     jf_color_space_names[cs]);
        return 1;
    }
    /* Non-integral sampling ratios (e.g. 2x2 luma with 1x3 chroma) are not a
     * route: libjpeg-turbo cannot upsample them to pixels either ("Fractional
     * sampling not implemented yet"), so the spatial path has nothing to offer;
     * cube_plan refuses them as JF_ERR_UNSUPPORTED with a clear reason. */
    if (n)
        reason[0] = '\0';
    return 0;
}

/* ======================================================================== */
/* Request validation                                                       */
/* ======================================================================== */

static int arg_error(jf_status *st, const char *msg)
{
    snprintf(st->msg, JF_MSG_LEN, "%s", msg);
    st->kind = JF_ERR_ARG;
    return -1;
}

int jf_cube_check(const jf_cube_request *r, jf_status *st)
{

    if (r->out_h <= 0 || r->out_w <= 0 || r->out_h % 8 || r->out_w % 8 ||
        r->out_h > JF_MAX_OUT || r->out_w > JF_MAX_OUT) {
        snprintf(st->msg, JF_MSG_LEN,
                 "output size %dx%d must be positive multiples of 8, at most %d", r->out_h,
                 r->out_w, JF_MAX_OUT);
        st->kind = JF_ERR_ARG;
        return -1;
    }
    if (r->has_box) {
        if (!jf_box_ok(r->box))
            return arg_error(st, "box must be finite (x0, y0, x1, y1) with x1 > x0, y1 > y0");
    } else if (r->resize <= 0 || r->resize > JF_MAX_OUT * 4) {
        snprintf(st->msg, JF_MSG_LEN, "give a box or a resize in 1..%d (eval geometry)",
                 JF_MAX_OUT * 4);
        st->kind = JF_ERR_ARG;
        return -1;
    }
    if (r->orientation < -1 || r->orientation > 8)
        return arg_error(st, "orientation must be 0 (as stored), -1 or 1..8");
    if (jf_channels_check(r->nch, r->comp, r->k, st) != 0)
        return -1;
    if (r->has_photo && jf_photo_check(r->photo, st) != 0)
        return -1;
    return 0;
}

/* ======================================================================== */
/* Planning                                                                 */
/* ======================================================================== */

/* Map a box in oriented (displayed) coordinates to the stored image, per EXIF
 * orientation: the displayed image is flips(transpose?(stored)). */
typedef struct {
    int transpose, flip_h, flip_v;
} jf_orient;

static jf_orient orientation_ops(int o)
{
    jf_orient r;
    r.transpose = (o >= 5 && o <= 8);
    r.flip_h = (o == 2 || o == 3 || o == 6 || o == 7);
    r.flip_v = (o == 3 || o == 4 || o == 7 || o == 8);
    return r;
}

/* The operator's inputs for one component of the cube. */
typedef struct {
    jf_axis ah, aw;         /* stored rows / stored columns axes */
    jf_comp_request req;    /* req.n == 0: nothing to compute for it */
    int transpose;
} cube_part;

/* Plan the cube of an open decoder (header read, coefficients not needed):
 * the axes and requests per component.  Grayscale chroma channels are filled
 * here (neutral chroma, exactly 0 before normalization).  box is in displayed
 * coordinates (after orientation) or NULL for the eval box. */
static int cube_plan(const jf_header *h, const int *comp_of, const int *ks, const float *scale,
                     const float *offset, int nch, float *out, int out_h, int out_w,
                     const double *box_in, int resize, int flip, int orientation,
                     cube_part part[3], jf_status *st)
{
    jf_orient o = orientation_ops(orientation);
    int disp_w = o.transpose ? h->height : h->width;
    int disp_h = o.transpose ? h->width : h->height;
    double box[4], bx0, bx1, by0, by1;
    int fh, fv, c, i;

    if (box_in == NULL)
        jf_eval_box(disp_w, disp_h, resize, out_h, out_w, box);
    else
        memcpy(box, box_in, sizeof(box));
    /* undo the displayed flips: mirror the box, flip the output instead */
    bx0 = box[0]; bx1 = box[2]; by0 = box[1]; by1 = box[3];
    fh = flip;
    fv = 0;
    if (o.flip_h) {
        bx0 = disp_w - box[2];
        bx1 = disp_w - box[0];
        fh = !fh;
    }
    if (o.flip_v) {
        by0 = disp_h - box[3];
        by1 = disp_h - box[1];
        fv = 1;
    }
    for (c = 0; c < 3; c++) {
        jf_comp_request *req = &part[c].req;
        jf_axis *ah = &part[c].ah, *aw = &part[c].aw;
        req->n = 0;
        part[c].transpose = o.transpose;
        for (i = 0; i < nch; i++) {
            if (comp_of[i] != c)
                continue;
            if (c >= h->num_components) {
                float v = offset ? offset[i] : 0.0f;
                size_t e, n = (size_t)(out_h / 8) * (out_w / 8);
                float *p = out + (size_t)i * n;
                for (e = 0; e < n; e++)
                    p[e] = v;
                continue;
            }
            req->k[req->n] = o.transpose ? ((ks[i] & 7) << 3 | ks[i] >> 3) : ks[i];
            req->channel[req->n] = i;
            req->scale[req->n] = scale ? scale[i] : 1.0f;
            req->offset[req->n] = offset ? offset[i] : 0.0f;
            req->n++;
        }
        if (req->n == 0)
            continue;
        {
            const jf_comp_info *ci = &h->comp[c];
            int fx = h->max_h / ci->h_samp, fy = h->max_v / ci->v_samp;
            /* no route for these (see jf_route): no decoder here upsamples them */
            if (h->max_h % ci->h_samp != 0 || h->max_v % ci->v_samp != 0) {
                snprintf(st->msg, JF_MSG_LEN,
                         "non-integral chroma sampling ratio (%dx%d in %dx%d) is not supported",
                         ci->h_samp, ci->v_samp, h->max_h, h->max_v);
                st->kind = JF_ERR_UNSUPPORTED;
                return -1;
            }
            /* stored rows axis: displayed rows, or displayed columns when transposed */
            ah->image_size = h->height;
            ah->comp_size = ci->height;
            ah->factor = fy;
            aw->image_size = h->width;
            aw->comp_size = ci->width;
            aw->factor = fx;
            if (!o.transpose) {
                ah->box0 = by0; ah->box1 = by1; ah->out_size = out_h; ah->flip = fv;
                aw->box0 = bx0; aw->box1 = bx1; aw->out_size = out_w; aw->flip = fh;
            } else {
                ah->box0 = bx0; ah->box1 = bx1; ah->out_size = out_w; ah->flip = fh;
                aw->box0 = by0; aw->box1 = by1; aw->out_size = out_h; aw->flip = fv;
            }
        }
    }
    return 0;
}

/* The iMCU rows [*lo, return value) holding every row the planned cube reads
 * (component block rows are v_samp per iMCU row); 0 (and *lo 0) if none. */
static int cube_rows(jf_decoder *d, const cube_part part[3], int *lo, jf_status *st)
{
    int c, stop = 0, first = -1;
    for (c = 0; c < 3 && c < d->hdr.num_components; c++) {
        int rows, v = d->hdr.comp[c].v_samp, r, f;
        if (part[c].req.n == 0)
            continue;
        rows = jf_rows_span(d, c, &part[c].ah, &part[c].req, &f, st);
        if (rows < 0)
            return -1;
        if (rows == 0)
            continue;
        r = (rows + v - 1) / v;
        if (r > stop)
            stop = r;
        if (first < 0 || f / v < first)
            first = f / v;
    }
    *lo = first < 0 ? 0 : first;
    return stop;
}

/* Run the planned operator on a decoder whose coefficients are read. */
static int cube_run(jf_decoder *d, const cube_part part[3], float *out, int out_h, int out_w,
                    jf_status *st)
{
    int c;
    for (c = 0; c < 3 && c < d->hdr.num_components; c++) {
        const cube_part *p = &part[c];
        if (p->req.n == 0)
            continue;
        if (!p->transpose) {
            if (jf_component_cube(d, c, &p->ah, &p->aw, &p->req, out, out_h / 8, out_w / 8, 0,
                                  st) != 0)
                return -1;
        } else if (jf_component_cube(d, c, &p->ah, &p->aw, &p->req, out, out_w / 8, out_h / 8,
                                     1, st) != 0)
            return -1;
    }
    return 0;
}

/* Progressive band cut-off: decode only the scans holding frequencies
 * 0..max(u, v) of every requested component (orientation may swap u and v,
 * so the larger of the two counts). */
static void band_cutoff(jf_decoder *d, const uint8_t *buf, size_t len, const jf_cube_request *r)
{
    uint8_t need[JF_MAX_COMPONENTS][64];
    int umax[3] = {-1, -1, -1}, vmax[3] = {-1, -1, -1}, c, k, i;

    memset(need, 0, sizeof(need));
    for (i = 0; i < r->nch; i++) {
        c = r->comp[i];
        k = r->k[i];
        if ((k >> 3) > umax[c]) umax[c] = k >> 3;
        if ((k & 7) > vmax[c]) vmax[c] = k & 7;
    }
    for (c = 0; c < 3 && c < d->hdr.num_components; c++) {
        int m = umax[c] > vmax[c] ? umax[c] : vmax[c];
        for (k = 0; k < 64; k++)
            need[c][k] = (m >= 0 && (k >> 3) <= m && (k & 7) <= m);
    }
    jf_limit_input(d, jf_progressive_cutoff(buf, len, &d->hdr, need));
}

/* ======================================================================== */
/* The entry point                                                          */
/* ======================================================================== */

int jf_cube(const uint8_t *buf, size_t len, const jf_cube_request *r, float *out, jf_status *st)
{
    jf_decoder *d;
    cube_part part[3];
    int rc = 0, o, stop = 0, lo = 0;
    const float *scale = r->scale, *offset = r->offset;
    float sc[JF_MAX_CHANNELS], of[JF_MAX_CHANNELS];
    jf_photo_post post;

    jf_status_init(st);
    if (jf_cube_check(r, st) != 0)
        return -1;
    if (!out || (!buf && len))
        return arg_error(st, "no output or input buffer");
    d = (jf_decoder *)malloc(sizeof(jf_decoder));
    if (!d) {
        st->kind = JF_ERR_MEMORY;
        snprintf(st->msg, JF_MSG_LEN, "out of memory");
        return -1;
    }
    if (jf_open(d, buf, len, r->max_pixels, st) != 0) {
        free(d);                    /* jf_open closed it */
        return -1;
    }
    if (jf_route(&d->hdr, st->msg, JF_MSG_LEN) != 0) {
        st->kind = JF_ERR_NEEDS_SPATIAL;
        jf_close(d);
        free(d);
        return -1;
    }
    if (r->band_cutoff && d->hdr.progressive)
        band_cutoff(d, buf, len, r);
    o = r->orientation;
    if (o == 0)
        o = 1;
    else if (o < 0)
        o = d->hdr.orientation;
    if (r->has_photo) {
        /* photometric ops folded into the operator's scale/offset (jf_photo.c) */
        rc = jf_photo_fold(r->photo, r->nch, r->comp, r->k, r->scale, r->offset, sc, of,
                           &post, st);
        scale = sc;
        offset = of;
    }
    if (rc == 0)
        rc = cube_plan(&d->hdr, r->comp, r->k, scale, offset, r->nch, out, r->out_h,
                       r->out_w, r->has_box ? r->box : NULL, r->resize, r->flip, o, part, st);
    /* the rows the operator reads: entropy-decode only down to the last one
     * (early stop), and tell the caller how many of them had data */
    if (rc == 0) {
        stop = cube_rows(d, part, &lo, st);
        if (stop < 0)
            rc = -1;
        else if (r->early_stop)
            d->stop_imcu = stop;
    }
    if (rc == 0)
        rc = jf_read_all(d, st);
    if (rc == 0) {
        st->read_lo = lo;
        st->read_hi = stop;
    }
    if (rc == 0 && r->strict)
        rc = jf_strict_check(st);
    if (rc == 0)
        rc = cube_run(d, part, out, r->out_h, r->out_w, st);
    if (rc == 0 && r->has_photo)
        jf_photo_finish(&post, out, (size_t)(r->out_h / 8) * (r->out_w / 8));
    jf_close(d);
    free(d);
    return rc;
}
