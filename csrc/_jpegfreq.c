/*
 * _jpegfreq.c - CPython binding of the jpegfreq C core.
 *
 * Parses arguments, holds the input buffer, releases the GIL around all
 * libjpeg work, allocates numpy outputs and turns jf_status into exceptions.
 * All JPEG logic lives in jf_read.c and jf_resample.c.  The Python layer
 * (jpegfreq/reader.py) adds the source's name to error messages.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <stdlib.h>
#include <string.h>

#include "jf_core.h"

#include <math.h>

#define JF_MAX_OUT (1 << 16)      /* output pixels per axis */
#define JF_MAX_COORD 1e7          /* |box coordinate| in source pixels */

static int box_ok(const double *b)
{
    int i;
    for (i = 0; i < 4; i++)
        if (!isfinite(b[i]) || fabs(b[i]) > JF_MAX_COORD)
            return 0;
    return b[2] > b[0] && b[3] > b[1];
}

#define STR_(x) #x
#define STR(x) STR_(x)

static PyObject *JfError;       /* _jpegfreq.Error(ValueError): args (kind, message) */

/* ======================================================================== */
/* Input: a path (str) or any bytes-like object                             */
/* ======================================================================== */

typedef struct {
    Py_buffer view;
    int have_view;
    const char *path;   /* UTF-8 path, borrowed from the argument */
    uint8_t *owned;     /* file contents when reading a path */
    const uint8_t *data;
    size_t len;
} jf_input;

static int input_parse(PyObject *src, jf_input *in)
{
    memset(in, 0, sizeof(*in));
    if (PyUnicode_Check(src)) {
        in->path = PyUnicode_AsUTF8(src);
        return in->path ? 0 : -1;
    }
    if (PyObject_GetBuffer(src, &in->view, PyBUF_SIMPLE) != 0) {
        PyErr_Format(PyExc_TypeError,
                     "src must be a path or a contiguous bytes-like object, not %.100s",
                     Py_TYPE(src)->tp_name);
        return -1;
    }
    in->have_view = 1;
    in->data = (const uint8_t *)in->view.buf;
    in->len = (size_t)in->view.len;
    return 0;
}

/* Call without the GIL. */
static int input_load(jf_input *in, jf_status *st)
{
    if (in->path == NULL)
        return 0;
    if (jf_read_file(in->path, &in->owned, &in->len, st) != 0)
        return -1;
    in->data = in->owned;
    return 0;
}

static void input_release(jf_input *in)
{
    if (in->have_view)
        PyBuffer_Release(&in->view);
    free(in->owned);
    in->owned = NULL;
    in->have_view = 0;
}

static PyObject *raise_status(const jf_status *st)
{
    PyObject *args;
    if (st->kind == JF_ERR_MEMORY)
        return PyErr_NoMemory();
    args = Py_BuildValue("(is)", st->kind, st->msg);
    if (args) {
        PyErr_SetObject(JfError, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* The common start of every read: parse src, read a path's bytes and parse the
 * header (jf_open), the I/O and libjpeg work without the GIL.  Returns the open
 * decoder (free it after jf_close), or NULL with an exception set and nothing
 * left to release. */
static jf_decoder *open_input(PyObject *src, long long max_pixels, jf_input *in, jf_status *st)
{
    jf_decoder *d;
    int rc;

    if (input_parse(src, in) != 0)
        return NULL;
    d = (jf_decoder *)malloc(sizeof(jf_decoder));
    if (!d) {
        input_release(in);
        PyErr_NoMemory();
        return NULL;
    }
    jf_status_init(st);
    Py_BEGIN_ALLOW_THREADS
    rc = input_load(in, st);
    if (rc == 0)
        rc = jf_open(d, in->data, in->len, max_pixels, st);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        input_release(in);
        free(d);
        raise_status(st);
        return NULL;
    }
    return d;
}

static PyObject *warnings_list(const jf_status *st)
{
    PyObject *l = PyList_New(0);
    int i;
    if (!l)
        return NULL;
    for (i = 0; i < st->nstored; i++) {
        PyObject *s = PyUnicode_FromString(st->warnings[i]);
        if (!s || PyList_Append(l, s) != 0) {
            Py_XDECREF(s);
            Py_DECREF(l);
            return NULL;
        }
        Py_DECREF(s);
    }
    if (st->nwarnings > st->nstored) {
        PyObject *s = PyUnicode_FromFormat("(%d warnings in all)", st->nwarnings);
        if (!s || PyList_Append(l, s) != 0) {
            Py_XDECREF(s);
            Py_DECREF(l);
            return NULL;
        }
        Py_DECREF(s);
    }
    return l;
}

static int strict_check(const jf_status *st, jf_status *out)
{
    if (st->nwarnings == 0)
        return 0;
    char first[JF_MSG_LEN];
    memcpy(first, st->warnings[0], JF_MSG_LEN);
    first[100] = '\0';
    out->kind = JF_ERR_JPEG;
    snprintf(out->msg, JF_MSG_LEN, "strict mode: %s", first);
    return -1;
}

static PyObject *header_dict(const jf_header *h)
{
    PyObject *comps = PyList_New(h->num_components), *d;
    int c;
    if (!comps)
        return NULL;
    for (c = 0; c < h->num_components; c++) {
        const jf_comp_info *ci = &h->comp[c];
        PyObject *cd = Py_BuildValue(
            "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "id", ci->id, "h_samp", ci->h_samp,
            "v_samp", ci->v_samp, "width", ci->width, "height", ci->height,
            "width_in_blocks", ci->width_in_blocks, "height_in_blocks", ci->height_in_blocks,
            "quant_tbl_no", ci->quant_tbl_no);
        if (!cd) {
            Py_DECREF(comps);
            return NULL;
        }
        PyList_SET_ITEM(comps, c, cd);
    }
    d = Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:s,s:O,s:i,s:O,s:O,s:O,s:i,s:i,s:i,s:i,s:N}",
        "width", h->width, "height", h->height, "num_components", h->num_components,
        "precision", h->precision, "color_space", jf_color_space_names[h->color_space],
        "adobe", h->saw_adobe ? Py_True : Py_False, "adobe_transform", h->adobe_transform,
        "jfif", h->saw_jfif ? Py_True : Py_False,
        "progressive", h->progressive ? Py_True : Py_False,
        "arithmetic", h->arithmetic ? Py_True : Py_False,
        "restart_interval", h->restart_interval, "orientation", h->orientation,
        "max_h_samp", h->max_h, "max_v_samp", h->max_v, "components", comps);
    return d;
}

/* ======================================================================== */
/* read_header(src, max_pixels)                                             */
/* ======================================================================== */

static PyObject *py_read_header(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src", "max_pixels", NULL};
    PyObject *src;
    long long max_pixels = 0;
    jf_input in;
    jf_status st;
    jf_decoder *d;
    PyObject *res;

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|L", kwlist, &src, &max_pixels))
        return NULL;
    d = open_input(src, max_pixels, &in, &st);
    if (!d)
        return NULL;
    jf_close(d);
    input_release(&in);
    res = header_dict(&d->hdr);
    free(d);
    return res;
}

/* ======================================================================== */
/* read_coefficients(src, strict, max_pixels, freqs)                        */
/* ======================================================================== */

static PyObject *py_read_coefficients(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src", "strict", "max_pixels", "freqs", NULL};
    PyObject *src, *freqs_obj = Py_None, *arrays[JF_MAX_COMPONENTS] = {0}, *quants[JF_MAX_COMPONENTS] = {0};
    PyObject *res = NULL, *hdr = NULL, *warn = NULL, *comps = NULL;
    int strict = 0, rc, c, nfreq = 0, freqs[64];
    long long max_pixels = 0;
    jf_input in;
    jf_status st;
    jf_decoder *d;

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pLO", kwlist, &src, &strict, &max_pixels,
                                     &freqs_obj))
        return NULL;
    if (freqs_obj != Py_None) {
        PyObject *seq = PySequence_Fast(freqs_obj, "freqs must be a sequence of ints 0..63");
        Py_ssize_t i, n;
        if (!seq)
            return NULL;
        n = PySequence_Fast_GET_SIZE(seq);
        if (n < 1 || n > 64) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "freqs must hold 1 to 64 frequencies");
            return NULL;
        }
        for (i = 0; i < n; i++) {
            long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
            if (v == -1 && PyErr_Occurred()) {
                Py_DECREF(seq);
                return NULL;
            }
            if (v < 0 || v > 63) {
                Py_DECREF(seq);
                PyErr_Format(PyExc_ValueError, "frequency %ld out of range 0..63", v);
                return NULL;
            }
            freqs[i] = (int)v;
        }
        nfreq = (int)n;
        Py_DECREF(seq);
    }
    d = open_input(src, max_pixels, &in, &st);
    if (!d)
        return NULL;
    /* outputs exist before any coefficient memory does */
    for (c = 0; c < d->hdr.num_components; c++) {
        const jf_comp_info *ci = &d->hdr.comp[c];
        npy_intp qdims[1] = {64};
        if (nfreq == 0) {
            npy_intp dims[3] = {ci->height_in_blocks, ci->width_in_blocks, 64};
            arrays[c] = PyArray_SimpleNew(3, dims, NPY_INT16);
        } else {
            npy_intp dims[3] = {ci->height_in_blocks, ci->width_in_blocks, nfreq};
            arrays[c] = PyArray_SimpleNew(3, dims, NPY_FLOAT32);
        }
        quants[c] = PyArray_SimpleNew(1, qdims, NPY_UINT16);
        if (!arrays[c] || !quants[c])
            goto fail_open;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = jf_read_all(d, &st);
    for (c = 0; rc == 0 && c < d->hdr.num_components; c++) {
        if (nfreq == 0)
            rc = jf_copy_component(d, c, (int16_t *)PyArray_DATA((PyArrayObject *)arrays[c]), &st);
        else
            rc = jf_dequant_component(d, c, freqs, nfreq,
                                      (float *)PyArray_DATA((PyArrayObject *)arrays[c]), &st);
        memcpy(PyArray_DATA((PyArrayObject *)quants[c]), d->quant[c], 64 * sizeof(uint16_t));
    }
    jf_close(d);
    if (rc == 0 && strict)
        rc = strict_check(&st, &st);
    Py_END_ALLOW_THREADS
    input_release(&in);
    if (rc != 0) {
        raise_status(&st);
        goto fail;
    }
    hdr = header_dict(&d->hdr);
    warn = warnings_list(&st);
    comps = PyList_New(d->hdr.num_components);
    if (!hdr || !warn || !comps)
        goto fail;
    for (c = 0; c < d->hdr.num_components; c++) {
        PyObject *t = Py_BuildValue("(OO)", arrays[c], quants[c]);
        if (!t)
            goto fail;
        PyList_SET_ITEM(comps, c, t);
    }
    res = Py_BuildValue("(NNN)", hdr, comps, warn);
    hdr = comps = warn = NULL;
fail:
    for (c = 0; c < JF_MAX_COMPONENTS; c++) {
        Py_XDECREF(arrays[c]);
        Py_XDECREF(quants[c]);
    }
    Py_XDECREF(hdr);
    Py_XDECREF(warn);
    Py_XDECREF(comps);
    free(d);
    return res;
fail_open:
    Py_BEGIN_ALLOW_THREADS
    jf_close(d);
    Py_END_ALLOW_THREADS
    input_release(&in);
    goto fail;
}

/* ======================================================================== */
/* decode_planes(src, strict, max_pixels): component planes for the spatial path */
/* ======================================================================== */

static PyObject *py_decode_planes(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src", "strict", "max_pixels", NULL};
    PyObject *src, *arrays[JF_MAX_COMPONENTS] = {0}, *res = NULL, *hdr = NULL, *warn = NULL, *lst = NULL;
    uint8_t *ptrs[JF_MAX_COMPONENTS];
    int strict = 0, rc, c;
    long long max_pixels = 0;
    jf_input in;
    jf_status st;
    jf_decoder *d;

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pL", kwlist, &src, &strict, &max_pixels))
        return NULL;
    d = open_input(src, max_pixels, &in, &st);
    if (!d)
        return NULL;
    for (c = 0; c < d->hdr.num_components; c++) {
        npy_intp dims[2] = {jf_plane_rows(d, c), jf_plane_stride(d, c)};
        arrays[c] = PyArray_ZEROS(2, dims, NPY_UINT8, 0);
        if (!arrays[c]) {
            Py_BEGIN_ALLOW_THREADS
            jf_close(d);
            Py_END_ALLOW_THREADS
            input_release(&in);
            goto fail;
        }
        ptrs[c] = (uint8_t *)PyArray_DATA((PyArrayObject *)arrays[c]);
    }
    Py_BEGIN_ALLOW_THREADS
    rc = jf_decode_planes(d, ptrs, &st);
    jf_close(d);
    if (rc == 0 && strict)
        rc = strict_check(&st, &st);
    Py_END_ALLOW_THREADS
    input_release(&in);
    if (rc != 0) {
        raise_status(&st);
        goto fail;
    }
    hdr = header_dict(&d->hdr);
    warn = warnings_list(&st);
    lst = PyList_New(d->hdr.num_components);
    if (!hdr || !warn || !lst)
        goto fail;
    for (c = 0; c < d->hdr.num_components; c++) {
        Py_INCREF(arrays[c]);
        PyList_SET_ITEM(lst, c, arrays[c]);
    }
    res = Py_BuildValue("(NNN)", hdr, lst, warn);
    hdr = lst = warn = NULL;
fail:
    for (c = 0; c < JF_MAX_COMPONENTS; c++)
        Py_XDECREF(arrays[c]);
    Py_XDECREF(hdr);
    Py_XDECREF(warn);
    Py_XDECREF(lst);
    free(d);
    return res;
}

/* ======================================================================== */
/* entropy_decode(src): the floor, jpeg_read_coefficients and nothing else  */
/* ======================================================================== */

static PyObject *py_entropy_decode(PyObject *self, PyObject *args)
{
    PyObject *src;
    jf_input in;
    jf_status st;
    jf_decoder *d;
    int rc;

    (void)self;
    if (!PyArg_ParseTuple(args, "O", &src))
        return NULL;
    d = open_input(src, 0, &in, &st);
    if (!d)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = jf_read_all(d, &st);
    jf_close(d);
    Py_END_ALLOW_THREADS
    input_release(&in);
    free(d);
    if (rc != 0)
        return raise_status(&st);
    Py_RETURN_NONE;
}

/* ======================================================================== */
/* cube(...): bytes -> coefficient-domain resampled cube                    */
/* ======================================================================== */

static int parse_i32(PyObject *o, Py_buffer *v, Py_ssize_t n, const char *what)
{
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0)
        return -1;
    if (v->itemsize != 4 || (v->format && strcmp(v->format, "i") != 0 && strcmp(v->format, "=i") != 0
                             && strcmp(v->format, "<i") != 0) || v->len / 4 != n) {
        PyBuffer_Release(v);
        PyErr_Format(PyExc_ValueError, "%s must be %zd int32 values", what, n);
        return -1;
    }
    return 0;
}

/* A buffer of native float32 items. */
static int is_f32(const Py_buffer *v)
{
    return v->itemsize == 4 && (!v->format || strcmp(v->format, "f") == 0 ||
                                strcmp(v->format, "=f") == 0 || strcmp(v->format, "<f") == 0);
}

static int parse_f32(PyObject *o, Py_buffer *v, Py_ssize_t n, const char *what)
{
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0)
        return -1;
    if (!is_f32(v) || v->len / 4 != n) {
        PyBuffer_Release(v);
        PyErr_Format(PyExc_ValueError, "%s must be %zd float32 values", what, n);
        return -1;
    }
    return 0;
}

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

/* The iMCU row after which each scan holds every row the planned
 * cube reads (component block rows are v_samp per iMCU row); 0 if unknown. */
static int cube_stop_row(jf_decoder *d, const cube_part part[3], jf_status *st)
{
    int c, stop = 0;
    for (c = 0; c < 3 && c < d->hdr.num_components; c++) {
        int rows, v = d->hdr.comp[c].v_samp, r;
        if (part[c].req.n == 0)
            continue;
        rows = jf_rows_needed(d, c, &part[c].ah, &part[c].req, st);
        if (rows < 0)
            return -1;
        r = (rows + v - 1) / v;
        if (r > stop)
            stop = r;
    }
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

static PyObject *py_cube(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src", "comp", "k", "out_h", "out_w", "scale", "offset", "box",
                             "resize", "flip", "orientation", "max_pixels", "strict",
                             "band_cutoff", "early_stop", "out", NULL};
    PyObject *src, *comp_o, *k_o, *scale_o = Py_None, *offset_o = Py_None, *box_o = Py_None;
    PyObject *out = NULL, *out_o = Py_None, *warn;
    Py_buffer comp_v, k_v, scale_v, offset_v, out_v;
    float *outbuf = NULL;
    int have_scale = 0, have_offset = 0, have_out = 0, out_h, out_w, resize = 0, flip = 0;
    int orient = 0;
    int strict = 0, band_cutoff = 0, early_stop = 1, rc, i, nch;
    long long max_pixels = 0;
    double box[4];
    int have_box = 0;
    jf_input in;
    jf_status st;
    jf_decoder *d;
    Py_ssize_t n;

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOii|OOOipiLpppO", kwlist, &src, &comp_o, &k_o,
                                     &out_h, &out_w, &scale_o, &offset_o, &box_o, &resize, &flip,
                                     &orient, &max_pixels, &strict, &band_cutoff, &early_stop,
                                     &out_o))
        return NULL;
    if (out_h <= 0 || out_w <= 0 || out_h % 8 || out_w % 8 || out_h > JF_MAX_OUT ||
        out_w > JF_MAX_OUT) {
        PyErr_Format(PyExc_ValueError,
                     "output size %dx%d must be positive multiples of 8, at most %d", out_h,
                     out_w, JF_MAX_OUT);
        return NULL;
    }
    if (box_o != Py_None) {
        if (!PyArg_ParseTuple(box_o, "dddd", &box[0], &box[1], &box[2], &box[3]))
            return NULL;
        if (!box_ok(box)) {
            PyErr_SetString(PyExc_ValueError,
                            "box must be finite (x0, y0, x1, y1) with x1 > x0, y1 > y0");
            return NULL;
        }
        have_box = 1;
    } else if (resize <= 0 || resize > JF_MAX_OUT * 4) {
        PyErr_Format(PyExc_ValueError, "give a box or a resize in 1..%d (eval geometry)",
                     JF_MAX_OUT * 4);
        return NULL;
    }
    if (orient < -1 || orient > 8) {
        PyErr_SetString(PyExc_ValueError, "orientation must be 0 (as stored), -1 or 1..8");
        return NULL;
    }
    if (PyObject_GetBuffer(comp_o, &comp_v, PyBUF_SIMPLE) != 0)
        return NULL;
    n = comp_v.len / 4;
    PyBuffer_Release(&comp_v);
    if (n < 1 || n > 192) {
        PyErr_SetString(PyExc_ValueError, "1 to 192 channels expected");
        return NULL;
    }
    if (parse_i32(comp_o, &comp_v, n, "comp") != 0)
        return NULL;
    if (parse_i32(k_o, &k_v, n, "k") != 0) {
        PyBuffer_Release(&comp_v);
        return NULL;
    }
    nch = (int)n;
    for (i = 0; i < nch; i++) {
        int c = ((int *)comp_v.buf)[i], k = ((int *)k_v.buf)[i];
        if (c < 0 || c > 2 || k < 0 || k > 63) {
            PyBuffer_Release(&comp_v);
            PyBuffer_Release(&k_v);
            PyErr_Format(PyExc_ValueError, "channel %d: component %d / frequency %d out of range",
                         i, c, k);
            return NULL;
        }
    }
    if (scale_o != Py_None) {
        if (parse_f32(scale_o, &scale_v, n, "scale") != 0)
            goto argfail;
        have_scale = 1;
    }
    if (offset_o != Py_None) {
        if (parse_f32(offset_o, &offset_v, n, "offset") != 0)
            goto argfail;
        have_offset = 1;
    }
    if (out_o != Py_None) {
        /* the caller's buffer (e.g. a row of a batch tensor): written in place */
        if (PyObject_GetBuffer(out_o, &out_v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
            != 0)
            goto argfail;
        have_out = 1;
        if (!is_f32(&out_v) || out_v.len != (Py_ssize_t)nch * (out_h / 8) * (out_w / 8) * 4) {
            PyErr_Format(PyExc_ValueError,
                         "out must be a writable C-contiguous float32 buffer of %d x %d x %d",
                         nch, out_h / 8, out_w / 8);
            goto argfail;
        }
        outbuf = (float *)out_v.buf;
    }
    if (input_parse(src, &in) != 0)
        goto argfail;
    if (have_out) {
        out = out_o;
        Py_INCREF(out);
    } else {
        npy_intp dims[3] = {nch, out_h / 8, out_w / 8};
        out = PyArray_SimpleNew(3, dims, NPY_FLOAT32);
        if (out)
            outbuf = (float *)PyArray_DATA((PyArrayObject *)out);
    }
    d = (jf_decoder *)malloc(sizeof(jf_decoder));
    if (!out || !d) {
        free(d);
        input_release(&in);
        Py_XDECREF(out);
        out = NULL;
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto argfail;
    }
    jf_status_init(&st);
    Py_BEGIN_ALLOW_THREADS
    rc = input_load(&in, &st);
    if (rc == 0)
        rc = jf_open(d, in.data, in.len, max_pixels, &st);
    if (rc == 0) {
        int cs = d->hdr.color_space;
        if (cs != JF_CS_YCBCR && cs != JF_CS_GRAY) {
            snprintf(st.msg, JF_MSG_LEN, "%s JPEG: colour cannot be mapped linearly to YCbCr",
                     jf_color_space_names[cs]);
            st.kind = 7; /* needs the spatial path */
            rc = -1;
        } else if (band_cutoff && d->hdr.progressive) {
            uint8_t need[JF_MAX_COMPONENTS][64];
            int umax[3] = {-1, -1, -1}, vmax[3] = {-1, -1, -1}, c, k;
            memset(need, 0, sizeof(need));
            for (i = 0; i < nch; i++) {
                c = ((int *)comp_v.buf)[i];
                k = ((int *)k_v.buf)[i];
                if ((k >> 3) > umax[c]) umax[c] = k >> 3;
                if ((k & 7) > vmax[c]) vmax[c] = k & 7;
            }
            /* orientation may swap u and v: take the larger of the two per component */
            for (c = 0; c < 3 && c < d->hdr.num_components; c++) {
                int m = umax[c] > vmax[c] ? umax[c] : vmax[c];
                for (k = 0; k < 64; k++)
                    need[c][k] = (m >= 0 && (k >> 3) <= m && (k & 7) <= m);
            }
            jf_limit_input(d, jf_progressive_cutoff(in.data, in.len, &d->hdr, need));
        }
        if (rc != 0)
            jf_close(d);
    }
    if (rc == 0) {
        int o = orient, stop;
        cube_part part[3];
        float *outp = outbuf;
        if (o == 0)
            o = 1;
        else if (o < 0 || o > 8)
            o = d->hdr.orientation;
        rc = cube_plan(&d->hdr, (const int *)comp_v.buf, (const int *)k_v.buf,
                       have_scale ? (const float *)scale_v.buf : NULL,
                       have_offset ? (const float *)offset_v.buf : NULL, nch, outp, out_h, out_w,
                       have_box ? box : NULL, resize, flip, o, part, &st);
        /* entropy-decode only down to the last block row the operator reads */
        if (rc == 0 && early_stop) {
            stop = cube_stop_row(d, part, &st);
            if (stop < 0)
                rc = -1;
            else
                d->stop_imcu = stop;
        }
        if (rc == 0)
            rc = jf_read_all(d, &st);
        if (rc == 0 && strict)
            rc = strict_check(&st, &st);
        if (rc == 0)
            rc = cube_run(d, part, outp, out_h, out_w, &st);
        jf_close(d);
    }
    Py_END_ALLOW_THREADS
    input_release(&in);
    free(d);
    PyBuffer_Release(&comp_v);
    PyBuffer_Release(&k_v);
    if (have_scale)
        PyBuffer_Release(&scale_v);
    if (have_offset)
        PyBuffer_Release(&offset_v);
    if (have_out)
        PyBuffer_Release(&out_v);
    if (rc != 0) {
        Py_DECREF(out);
        return raise_status(&st);
    }
    warn = warnings_list(&st);
    if (!warn) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(NN)", out, warn);
argfail:
    PyBuffer_Release(&comp_v);
    PyBuffer_Release(&k_v);
    if (have_scale)
        PyBuffer_Release(&scale_v);
    if (have_offset)
        PyBuffer_Release(&offset_v);
    if (have_out)
        PyBuffer_Release(&out_v);
    return NULL;
}

/* ======================================================================== */
/* Geometry for Python: the same weights the C operator uses                */
/* ======================================================================== */

static PyObject *py_axis_matrix(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"image_size", "comp_size", "factor", "box0", "box1", "out_size",
                             "flip", NULL};
    jf_axis ax;
    PyObject *M;
    npy_intp dims[2];

    (void)self;
    ax.flip = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiiddi|p", kwlist, &ax.image_size, &ax.comp_size,
                                     &ax.factor, &ax.box0, &ax.box1, &ax.out_size, &ax.flip))
        return NULL;
    if (ax.image_size < 1 || ax.comp_size < 1 || ax.factor < 1 || ax.factor > 16 ||
        ax.out_size < 1 || !isfinite(ax.box0) || !isfinite(ax.box1) || !(ax.box1 > ax.box0) ||
        fabs(ax.box0) > JF_MAX_COORD || fabs(ax.box1) > JF_MAX_COORD ||
        ax.out_size > JF_MAX_OUT || ax.comp_size > (1 << 20) ||
        (double)ax.out_size * ax.comp_size > 1e9) {
        PyErr_SetString(PyExc_ValueError, "bad axis geometry");
        return NULL;
    }
    dims[0] = ax.out_size;
    dims[1] = ax.comp_size;
    M = PyArray_SimpleNew(2, dims, NPY_FLOAT64);
    if (!M)
        return NULL;
    if (jf_axis_matrix(&ax, (double *)PyArray_DATA((PyArrayObject *)M)) != 0) {
        Py_DECREF(M);
        return PyErr_NoMemory();
    }
    return M;
}

static PyObject *py_resample_plane(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"plane", "image_h", "image_w", "factor_v", "factor_h", "box",
                             "out_h", "out_w", "flip_h", "flip_v", NULL};
    PyObject *plane_o, *out;
    PyArrayObject *plane;
    jf_axis ah, aw;
    double box[4];
    int rc;
    npy_intp dims[2];

    (void)self;
    ah.flip = aw.flip = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oiiii(dddd)ii|pp", kwlist, &plane_o,
                                     &ah.image_size, &aw.image_size, &ah.factor, &aw.factor,
                                     &box[0], &box[1], &box[2], &box[3], &ah.out_size,
                                     &aw.out_size, &aw.flip, &ah.flip))
        return NULL;
    plane = (PyArrayObject *)PyArray_FROMANY(plane_o, NPY_FLOAT32, 2, 2, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_FORCECAST);
    if (!plane)
        return NULL;
    ah.comp_size = (int)PyArray_DIM(plane, 0);
    aw.comp_size = (int)PyArray_DIM(plane, 1);
    ah.box0 = box[1]; ah.box1 = box[3];
    aw.box0 = box[0]; aw.box1 = box[2];
    if (ah.image_size < 1 || aw.image_size < 1 || ah.factor < 1 || aw.factor < 1 ||
        ah.factor > 16 || aw.factor > 16 || ah.comp_size < 1 || aw.comp_size < 1 ||
        ah.out_size < 1 || aw.out_size < 1 || ah.out_size > JF_MAX_OUT ||
        aw.out_size > JF_MAX_OUT || !box_ok(box)) {
        Py_DECREF(plane);
        PyErr_SetString(PyExc_ValueError, "bad plane geometry");
        return NULL;
    }
    dims[0] = ah.out_size;
    dims[1] = aw.out_size;
    out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) {
        Py_DECREF(plane);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = jf_resample_plane((const float *)PyArray_DATA(plane), aw.comp_size, &ah, &aw,
                           (float *)PyArray_DATA((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
    Py_DECREF(plane);
    if (rc != 0) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    return out;
}

static int freq_list(PyObject *o, int *out, int *n, const char *what)
{
    PyObject *seq = PySequence_Fast(o, what);
    Py_ssize_t i, len;
    if (!seq)
        return -1;
    len = PySequence_Fast_GET_SIZE(seq);
    if (len < 1 || len > 8) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "%s: 1 to 8 frequencies", what);
        return -1;
    }
    for (i = 0; i < len; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v < 0 || v > 7) {
            Py_DECREF(seq);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "%s: frequency %ld out of 0..7", what, v);
            return -1;
        }
        out[i] = (int)v;
    }
    *n = (int)len;
    Py_DECREF(seq);
    return 0;
}

static PyObject *py_block_dct(PyObject *self, PyObject *args)
{
    PyObject *plane_o, *us_o, *vs_o, *out;
    PyArrayObject *plane;
    int us[8], vs[8], nu, nv, h, w;
    npy_intp dims[4];

    (void)self;
    if (!PyArg_ParseTuple(args, "OOO", &plane_o, &us_o, &vs_o))
        return NULL;
    if (freq_list(us_o, us, &nu, "us") != 0 || freq_list(vs_o, vs, &nv, "vs") != 0)
        return NULL;
    plane = (PyArrayObject *)PyArray_FROMANY(plane_o, NPY_FLOAT32, 2, 2, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_FORCECAST);
    if (!plane)
        return NULL;
    h = (int)PyArray_DIM(plane, 0);
    w = (int)PyArray_DIM(plane, 1);
    if (h % 8 || w % 8 || h < 8 || w < 8) {
        Py_DECREF(plane);
        PyErr_SetString(PyExc_ValueError, "plane sides must be positive multiples of 8");
        return NULL;
    }
    dims[0] = nu;
    dims[1] = nv;
    dims[2] = h / 8;
    dims[3] = w / 8;
    out = PyArray_SimpleNew(4, dims, NPY_FLOAT32);
    if (!out) {
        Py_DECREF(plane);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    jf_block_dct((const float *)PyArray_DATA(plane), h, w, us, nu, vs, nv,
                 (float *)PyArray_DATA((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
    Py_DECREF(plane);
    return out;
}

static PyObject *py_eval_box(PyObject *self, PyObject *args)
{
    int w, h, resize, ch, cw;
    double box[4];
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiii", &w, &h, &resize, &ch, &cw))
        return NULL;
    if (w < 1 || h < 1 || resize < 1 || ch < 1 || cw < 1 || resize > JF_MAX_OUT * 4) {
        PyErr_SetString(PyExc_ValueError, "sizes must be positive");
        return NULL;
    }
    jf_eval_box(w, h, resize, ch, cw, box);
    return Py_BuildValue("(dddd)", box[0], box[1], box[2], box[3]);
}

static PyMethodDef methods[] = {
    {"read_header", (PyCFunction)(void (*)(void))py_read_header, METH_VARARGS | METH_KEYWORDS,
     "read_header(src, max_pixels=0) -> dict"},
    {"read_coefficients", (PyCFunction)(void (*)(void))py_read_coefficients,
     METH_VARARGS | METH_KEYWORDS,
     "read_coefficients(src, strict=False, max_pixels=0, freqs=None) -> (header, [(coefs, quant)], warnings)"},
    {"decode_planes", (PyCFunction)(void (*)(void))py_decode_planes, METH_VARARGS | METH_KEYWORDS,
     "decode_planes(src, strict=False, max_pixels=0) -> (header, [uint8 planes (padded)], warnings)"},
    {"entropy_decode", py_entropy_decode, METH_VARARGS,
     "entropy_decode(src): jpeg_read_coefficients only (the benchmark floor)"},
    {"cube", (PyCFunction)(void (*)(void))py_cube, METH_VARARGS | METH_KEYWORDS,
     "cube(src, comp, k, out_h, out_w, scale=None, offset=None, box=None, resize=0, flip=False, "
     "orientation=0, max_pixels=0, strict=False, band_cutoff=False, early_stop=True, out=None) "
     "-> (cube, warnings); early_stop: each scan is entropy-decoded only down to the last "
     "block row the cube reads; out: a writable C-contiguous float32 buffer of C x out_h/8 "
     "x out_w/8 written in place (and returned) instead of a new array"},
    {"axis_matrix", (PyCFunction)(void (*)(void))py_axis_matrix, METH_VARARGS | METH_KEYWORDS,
     "axis_matrix(image_size, comp_size, factor, box0, box1, out_size, flip=False) -> M (out, comp)"},
    {"resample_plane", (PyCFunction)(void (*)(void))py_resample_plane, METH_VARARGS | METH_KEYWORDS,
     "resample_plane(plane, image_h, image_w, factor_v, factor_h, box, out_h, out_w, flip_h=False, "
     "flip_v=False) -> float32 (out_h, out_w)"},
    {"block_dct", py_block_dct, METH_VARARGS,
     "block_dct(plane, us, vs) -> float32 (len(us), len(vs), h/8, w/8): 8x8 block DCT rows/cols"},
    {"eval_box", py_eval_box, METH_VARARGS, "eval_box(w, h, resize, crop_h, crop_w) -> box"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_jpegfreq",
                                       "C core of jpegfreq (see csrc/jf_core.h)", -1, methods};

PyMODINIT_FUNC PyInit__jpegfreq(void)
{
    PyObject *m;
    import_array();
    m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    JfError = PyErr_NewException("jpegfreq._jpegfreq.Error", PyExc_ValueError, NULL);
    if (!JfError || PyModule_AddObject(m, "Error", JfError) != 0)
        return NULL;
    Py_INCREF(JfError);
#ifdef LIBJPEG_TURBO_VERSION
    PyModule_AddStringConstant(m, "libjpeg_version", STR(LIBJPEG_TURBO_VERSION));
    PyModule_AddIntConstant(m, "libjpeg_turbo", 1);
#else
    PyModule_AddStringConstant(m, "libjpeg_version", STR(JPEG_LIB_VERSION));
    PyModule_AddIntConstant(m, "libjpeg_turbo", 0);
#endif
    PyModule_AddIntConstant(m, "jpeg_lib_version", JPEG_LIB_VERSION);
#ifdef D_ARITH_CODING_SUPPORTED
    PyModule_AddIntConstant(m, "arithmetic_decoding", 1);
#else
    PyModule_AddIntConstant(m, "arithmetic_decoding", 0);
#endif
    PyModule_AddIntConstant(m, "ERR_JPEG", JF_ERR_JPEG);
    PyModule_AddIntConstant(m, "ERR_LIMIT", JF_ERR_LIMIT);
    PyModule_AddIntConstant(m, "ERR_UNSUPPORTED", JF_ERR_UNSUPPORTED);
    PyModule_AddIntConstant(m, "ERR_IO", JF_ERR_IO);
    PyModule_AddIntConstant(m, "ERR_NEEDS_SPATIAL", 7);
    return m;
}
