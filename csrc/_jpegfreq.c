/*
 * _jpegfreq.c - CPython binding of the jpegfreq C core.
 *
 * Parses arguments, holds the input buffer, releases the GIL around all
 * libjpeg work, allocates numpy outputs and turns jf_status into exceptions.
 * All JPEG logic lives in jf_read.c, jf_resample.c and jf_cube.c (the cube's
 * planning and routing).  The Python layer (jpegfreq/reader.py) adds the
 * source's name to error messages.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <stdlib.h>
#include <string.h>

#include "jf_core.h"

#include <math.h>

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

/* Header parsing of bytes already in memory up to this size keeps the GIL: it
 * stops at the first scan (microseconds), and every release is a point where a
 * thread that wants the GIL back waits for another's Python (a loader's threads
 * lose more to those waits than the parse costs). */
#define JF_GIL_BYTES (1u << 20)

/* The common start of every read: parse src, read a path's bytes and parse the
 * header (jf_open), the I/O and libjpeg work without the GIL.  Returns the open
 * decoder (free it after jf_close), or NULL with an exception set and nothing
 * left to release. */
static jf_decoder *open_input(PyObject *src, long long max_pixels, jf_input *in, jf_status *st)
{
    jf_decoder *d;
    PyThreadState *ts;     /* the GIL released: a file to read, or a large buffer */
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
    ts = in->path != NULL || in->len > JF_GIL_BYTES ? PyEval_SaveThread() : NULL;
    rc = input_load(in, st);
    if (rc == 0)
        rc = jf_open(d, in->data, in->len, max_pixels, st);
    if (ts)
        PyEval_RestoreThread(ts);
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

/* Where the data ran out, for jpegfreq.reader's decoded share: (cut_scan,
 * cut_row, total_rows, read_lo, read_hi, scan_byte, data_len), see jf_status. */
static PyObject *extent_tuple(const jf_status *st)
{
    return Py_BuildValue("(iiiiiLL)", st->cut_scan, st->cut_row, st->total_rows, st->read_lo,
                         st->read_hi, st->scan_byte, st->data_len);
}

static PyObject *header_dict(const jf_header *h)
{
    PyObject *comps = PyList_New(h->num_components), *d, *reason;
    char why[JF_MSG_LEN];
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
    /* None: the compressed path takes the file; else why it needs the spatial path */
    if (jf_route(h, why, sizeof(why)) != 0) {
        reason = PyUnicode_FromString(why);
        if (!reason) {
            Py_DECREF(comps);
            return NULL;
        }
    } else {
        reason = Py_None;
        Py_INCREF(reason);
    }
    d = Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:s,s:O,s:i,s:O,s:O,s:O,s:i,s:i,s:i,s:i,s:N,s:N}",
        "width", h->width, "height", h->height, "num_components", h->num_components,
        "precision", h->precision, "color_space", jf_color_space_names[h->color_space],
        "adobe", h->saw_adobe ? Py_True : Py_False, "adobe_transform", h->adobe_transform,
        "jfif", h->saw_jfif ? Py_True : Py_False,
        "progressive", h->progressive ? Py_True : Py_False,
        "arithmetic", h->arithmetic ? Py_True : Py_False,
        "restart_interval", h->restart_interval, "orientation", h->orientation,
        "max_h_samp", h->max_h, "max_v_samp", h->max_v, "components", comps,
        "spatial_reason", reason);
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
/* read_files(paths, max_pixels): several files and their headers at once   */
/* ======================================================================== */

#define JF_MAX_FILES 1024

typedef struct {
    PyObject *name;     /* the path as bytes (the file system's encoding) */
    int fd;
    long long offset;   /* a byte range (offset, size) of the file; whole: -1 */
    long long want;
    size_t size;
    PyObject *data;     /* bytes of size, filled without the GIL */
    int read_ok;        /* data holds the whole file */
    int has_header;
    jf_header hdr;
    jf_status st;       /* the file's failure: reading it, or its header */
} jf_file_job;

/* Each path's bytes (or a byte range's: a shard's member) and header for a
 * loader's worker: the opens, reads and header parses of all of them in two
 * GIL-free passes (open + size, then read + parse, the bytes objects made
 * between them), where read_header on each path would release and take back
 * the GIL several times per file.
 * Returns [(data or None, header dict or None, (kind, message) or None)]:
 * (None, None, err) when the file could not be read, (data, None, err) when
 * its header could not be parsed (the caller decides: a damaged JPEG, or some
 * other image format), (data, header, None) otherwise. */
static PyObject *py_read_files(PyObject *self, PyObject *args)
{
    PyObject *paths_o, *seq, *res = NULL;
    long long max_pixels = 0;
    Py_ssize_t n, i;
    jf_file_job *jobs;
    jf_decoder *d;

    (void)self;
    if (!PyArg_ParseTuple(args, "O|L", &paths_o, &max_pixels))
        return NULL;
    seq = PySequence_Fast(paths_o, "paths must be a list of paths");
    if (!seq)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > JF_MAX_FILES) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "at most %d paths at once, not %zd",
                            JF_MAX_FILES, n);
    }
    jobs = (jf_file_job *)calloc((size_t)(n > 0 ? n : 1), sizeof(jf_file_job));
    d = (jf_decoder *)malloc(sizeof(jf_decoder));
    if (!jobs || !d) {
        free(jobs);
        free(d);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (i = 0; i < n; i++) {   /* all of them first: the clean-up reads every fd */
        jobs[i].fd = -1;
        jobs[i].offset = -1;
        jf_status_init(&jobs[i].st);
    }
    for (i = 0; i < n; i++) {
        /* a path: str (any name os.listdir returns), bytes or os.PathLike; or a byte range
         * of one, (path, offset, size) */
        PyObject *p = PySequence_Fast_GET_ITEM(seq, i);
        if (PyTuple_Check(p)) {
            PyObject *path;
            if (!PyArg_ParseTuple(p, "OLL;a byte range is (path, offset, size)", &path,
                                  &jobs[i].offset, &jobs[i].want))
                goto done;
            if (jobs[i].offset < 0 || jobs[i].want < 0 ||
                jobs[i].want > PY_SSIZE_T_MAX - jobs[i].offset) {
                PyErr_SetString(PyExc_ValueError, "a byte range's offset and size are "
                                                  "non-negative");
                goto done;
            }
            p = path;
        }
        if (!PyUnicode_FSConverter(p, &jobs[i].name))
            goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n; i++) {
        jf_file_job *j = &jobs[i];
        if (jf_open_file(PyBytes_AS_STRING(j->name), &j->fd, &j->size, &j->st) != 0 ||
            j->offset < 0)
            continue;
        if ((unsigned long long)(j->offset + j->want) > (unsigned long long)j->size) {
            snprintf(j->st.msg, JF_MSG_LEN, "cut short: bytes %lld..%lld asked for, the "
                     "file holds %zu", j->offset, j->offset + j->want, j->size);
            j->st.kind = JF_ERR_IO;
            close(j->fd);
            j->fd = -1;
            continue;
        }
        j->size = (size_t)j->want;
    }
    Py_END_ALLOW_THREADS
    for (i = 0; i < n; i++)
        if (jobs[i].fd >= 0 && !(jobs[i].data = PyBytes_FromStringAndSize(NULL,
                                                                          (Py_ssize_t)jobs[i].size)))
            goto done;
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n; i++) {
        jf_file_job *j = &jobs[i];
        if (j->fd < 0)
            continue;
        if (jf_read_fd(j->fd, j->offset < 0 ? 0 : j->offset,
                       (uint8_t *)PyBytes_AS_STRING(j->data), j->size, &j->st) == 0) {
            j->read_ok = 1;
            if (jf_open(d, (const uint8_t *)PyBytes_AS_STRING(j->data), j->size, max_pixels,
                        &j->st) == 0) {
                j->hdr = d->hdr;
                j->has_header = 1;
                jf_close(d);
            }
        }
        close(j->fd);
        j->fd = -1;
    }
    Py_END_ALLOW_THREADS
    res = PyList_New(n);
    for (i = 0; res && i < n; i++) {
        jf_file_job *j = &jobs[i];
        PyObject *item;
        if (j->has_header)
            item = Py_BuildValue("(ONO)", j->data, header_dict(&j->hdr), Py_None);
        else if (j->read_ok)
            item = Py_BuildValue("(OO(is))", j->data, Py_None, j->st.kind, j->st.msg);
        else
            item = Py_BuildValue("(OO(is))", Py_None, Py_None, j->st.kind, j->st.msg);
        if (!item) {
            Py_CLEAR(res);
            break;
        }
        PyList_SET_ITEM(res, i, item);
    }
done:
    for (i = 0; i < n; i++) {
        if (jobs[i].fd >= 0)
            close(jobs[i].fd);
        Py_XDECREF(jobs[i].data);
        Py_XDECREF(jobs[i].name);
    }
    free(jobs);
    free(d);
    Py_DECREF(seq);
    return res;
}

/* ======================================================================== */
/* read_coefficients(src, strict, max_pixels, freqs)                        */
/* ======================================================================== */

static PyObject *py_read_coefficients(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src", "strict", "max_pixels", "freqs", "extent", NULL};
    PyObject *src, *freqs_obj = Py_None, *arrays[JF_MAX_COMPONENTS] = {0}, *quants[JF_MAX_COMPONENTS] = {0};
    PyObject *res = NULL, *hdr = NULL, *warn = NULL, *comps = NULL;
    int strict = 0, rc, c, nfreq = 0, freqs[64], want_extent = 0;
    long long max_pixels = 0;
    jf_input in;
    jf_status st;
    jf_decoder *d;

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pLOp", kwlist, &src, &strict, &max_pixels,
                                     &freqs_obj, &want_extent))
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
        rc = jf_strict_check(&st);
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
    if (want_extent)
        res = Py_BuildValue("(NNNN)", hdr, comps, warn, extent_tuple(&st));
    else
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
    static char *kwlist[] = {"src", "strict", "max_pixels", "extent", NULL};
    PyObject *src, *arrays[JF_MAX_COMPONENTS] = {0}, *res = NULL, *hdr = NULL, *warn = NULL, *lst = NULL;
    uint8_t *ptrs[JF_MAX_COMPONENTS];
    int strict = 0, rc, c, want_extent = 0;
    long long max_pixels = 0;
    jf_input in;
    jf_status st;
    jf_decoder *d;

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pLp", kwlist, &src, &strict, &max_pixels,
                                     &want_extent))
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
        rc = jf_strict_check(&st);
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
    if (want_extent)
        res = Py_BuildValue("(NNNN)", hdr, lst, warn, extent_tuple(&st));
    else
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

/* out's item type: 'f' float32, 'e' float16, 'b' int8; 0 for any other. */
static int out_kind_of(const Py_buffer *v)
{
    const char *f = v->format ? v->format : "B";
    if (*f == '=' || *f == '<' || *f == '@')
        f++;
    if (v->itemsize == 4 && strcmp(f, "f") == 0)
        return 'f';
    if (v->itemsize == 2 && strcmp(f, "e") == 0)
        return 'e';
    if (v->itemsize == 1 && strcmp(f, "b") == 0)
        return 'b';
    return 0;
}

/* A float32 cube for a float16 or int8 out to be converted from: one buffer per
 * thread, kept for its next call (a loader's worker makes thousands) and freed
 * when the thread ends. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ok;

typedef struct {
    float *p;
    size_t cap;
} jf_scratch;

static void scratch_free(void *v)
{
    jf_scratch *s = (jf_scratch *)v;
    free(s->p);
    free(s);
}

static void scratch_init(void)
{
    scratch_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

static float *scratch_floats(size_t n)
{
    jf_scratch *s;
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_ok)
        return NULL;
    s = (jf_scratch *)pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = (jf_scratch *)calloc(1, sizeof(*s))))
            return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap < n) {
        float *p = (float *)realloc(s->p, n * sizeof(float));
        if (!p)
            return NULL;
        s->p = p;
        s->cap = n;
    }
    return s->p;
}

/* photometric=(brightness, contrast, saturation, hue, grayscale): five numbers. */
static int parse_photo(PyObject *o, double p[JF_PHOTO_N])
{
    if (!PyTuple_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "photometric must be a tuple (brightness, contrast, "
                                         "saturation, hue, grayscale)");
        return -1;
    }
    if (!PyArg_ParseTuple(o, "ddddd;photometric must be (brightness, contrast, saturation, "
                             "hue, grayscale)", &p[0], &p[1], &p[2], &p[3], &p[4]))
        return -1;
    return 0;
}

/* cube(): parse the arguments into a jf_cube_request, allocate (or take) the
 * output, run jf_cube without the GIL, raise.  All planning is in jf_cube.c. */
static PyObject *py_cube(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src", "comp", "k", "out_h", "out_w", "scale", "offset", "box",
                             "resize", "flip", "orientation", "max_pixels", "strict",
                             "band_cutoff", "early_stop", "out", "extent", "photometric",
                             NULL};
    PyObject *src, *comp_o, *k_o, *scale_o = Py_None, *offset_o = Py_None, *box_o = Py_None;
    PyObject *photo_o = Py_None;
    PyObject *out = NULL, *out_o = Py_None, *warn;
    Py_buffer comp_v, k_v, scale_v, offset_v, out_v;
    float *outbuf = NULL;
    int have_comp = 0, have_scale = 0, have_offset = 0, have_out = 0, rc, want_extent = 0;
    int out_kind = 'f';
    jf_cube_request req;
    jf_input in;
    jf_status st;
    Py_ssize_t n;

    (void)self;
    memset(&req, 0, sizeof(req));
    req.early_stop = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOii|OOOipiLpppOpO", kwlist, &src, &comp_o,
                                     &k_o, &req.out_h, &req.out_w, &scale_o, &offset_o, &box_o,
                                     &req.resize, &req.flip, &req.orientation, &req.max_pixels,
                                     &req.strict, &req.band_cutoff, &req.early_stop, &out_o,
                                     &want_extent, &photo_o))
        return NULL;
    if (photo_o != Py_None) {
        if (parse_photo(photo_o, req.photo) != 0)
            return NULL;
        req.has_photo = 1;
    }
    if (box_o != Py_None) {
        if (!PyArg_ParseTuple(box_o, "dddd", &req.box[0], &req.box[1], &req.box[2],
                              &req.box[3]))
            return NULL;
        req.has_box = 1;
    }
    if (PyObject_GetBuffer(comp_o, &comp_v, PyBUF_SIMPLE) != 0)
        return NULL;
    n = comp_v.len / 4;
    PyBuffer_Release(&comp_v);
    req.nch = n > JF_MAX_CHANNELS ? JF_MAX_CHANNELS + 1 : (int)n;
    if (req.nch >= 1 && req.nch <= JF_MAX_CHANNELS) {
        if (parse_i32(comp_o, &comp_v, n, "comp") != 0)
            return NULL;
        if (parse_i32(k_o, &k_v, n, "k") != 0) {
            PyBuffer_Release(&comp_v);
            return NULL;
        }
        have_comp = 1;
        req.comp = (const int *)comp_v.buf;
        req.k = (const int *)k_v.buf;
    }
    /* the request's values are checked in C, the same check jf_cube makes */
    jf_status_init(&st);
    if (jf_cube_check(&req, &st) != 0) {
        PyErr_SetString(PyExc_ValueError, st.msg);
        goto argfail;
    }
    if (scale_o != Py_None) {
        if (parse_f32(scale_o, &scale_v, n, "scale") != 0)
            goto argfail;
        have_scale = 1;
        req.scale = (const float *)scale_v.buf;
    }
    if (offset_o != Py_None) {
        if (parse_f32(offset_o, &offset_v, n, "offset") != 0)
            goto argfail;
        have_offset = 1;
        req.offset = (const float *)offset_v.buf;
    }
    if (out_o != Py_None) {
        /* the caller's buffer (e.g. a row of a batch tensor): written in place */
        if (PyObject_GetBuffer(out_o, &out_v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
            != 0)
            goto argfail;
        have_out = 1;
        out_kind = out_kind_of(&out_v);
        if (out_kind == 0 ||
            out_v.len != (Py_ssize_t)req.nch * (req.out_h / 8) * (req.out_w / 8) *
                             out_v.itemsize) {
            PyErr_Format(PyExc_ValueError,
                         "out must be a writable C-contiguous float32, float16 or int8 buffer "
                         "of %d x %d x %d", req.nch, req.out_h / 8, req.out_w / 8);
            goto argfail;
        }
        if (out_kind == 'f') {
            outbuf = (float *)out_v.buf;
        } else if (!(outbuf = scratch_floats((size_t)(out_v.len / out_v.itemsize)))) {
            PyErr_NoMemory();
            goto argfail;
        }
    }
    if (input_parse(src, &in) != 0)
        goto argfail;
    if (have_out) {
        out = out_o;
        Py_INCREF(out);
    } else {
        npy_intp dims[3] = {req.nch, req.out_h / 8, req.out_w / 8};
        out = PyArray_SimpleNew(3, dims, NPY_FLOAT32);
        if (!out) {
            input_release(&in);
            goto argfail;
        }
        outbuf = (float *)PyArray_DATA((PyArrayObject *)out);
    }
    Py_BEGIN_ALLOW_THREADS
    rc = input_load(&in, &st);
    if (rc == 0)
        rc = jf_cube(in.data, in.len, &req, outbuf, &st);
    if (rc == 0 && out_kind == 'e')
        jf_to_half(outbuf, (uint16_t *)out_v.buf, (size_t)(out_v.len / 2));
    else if (rc == 0 && out_kind == 'b')
        jf_to_int8(outbuf, (int8_t *)out_v.buf, (size_t)out_v.len);
    Py_END_ALLOW_THREADS
    input_release(&in);
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
    if (want_extent)
        return Py_BuildValue("(NNN)", out, warn, extent_tuple(&st));
    return Py_BuildValue("(NN)", out, warn);
argfail:
    if (have_comp) {
        PyBuffer_Release(&comp_v);
        PyBuffer_Release(&k_v);
    }
    if (have_scale)
        PyBuffer_Release(&scale_v);
    if (have_offset)
        PyBuffer_Release(&offset_v);
    if (have_out)
        PyBuffer_Release(&out_v);
    return NULL;
}

/* photometric(cube, comp, k, photo, scale=None, offset=None): the ops of jf_photo.c
 * and then x * scale + offset on an unnormalised cube of those channels, in place:
 * what jf_cube does with them while it writes, as a separate step. */
static PyObject *py_photometric(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"cube", "comp", "k", "photometric", "scale", "offset", NULL};
    PyObject *cube_o, *comp_o, *k_o, *photo_o, *scale_o = Py_None, *offset_o = Py_None;
    Py_buffer cube_v, comp_v, k_v, scale_v, offset_v;
    int have_scale = 0, have_offset = 0, i, rc;
    double photo[JF_PHOTO_N];
    float sc[JF_MAX_CHANNELS], of[JF_MAX_CHANNELS];
    jf_photo_post post;
    jf_status st;
    Py_ssize_t n;
    size_t plane;
    PyObject *ret = NULL;

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|OO", kwlist, &cube_o, &comp_o, &k_o,
                                     &photo_o, &scale_o, &offset_o))
        return NULL;
    if (parse_photo(photo_o, photo) != 0)
        return NULL;
    if (PyObject_GetBuffer(comp_o, &comp_v, PyBUF_SIMPLE) != 0)
        return NULL;
    n = comp_v.len / 4;
    PyBuffer_Release(&comp_v);
    if (n < 1 || n > JF_MAX_CHANNELS) {
        PyErr_SetString(PyExc_ValueError, "1 to " JF_STR(JF_MAX_CHANNELS) " channels expected");
        return NULL;
    }
    if (parse_i32(comp_o, &comp_v, n, "comp") != 0)
        return NULL;
    if (parse_i32(k_o, &k_v, n, "k") != 0) {
        PyBuffer_Release(&comp_v);
        return NULL;
    }
    if (PyObject_GetBuffer(cube_o, &cube_v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        != 0)
        goto release_ck;
    if (!is_f32(&cube_v) || cube_v.len % (4 * n) != 0) {
        PyErr_Format(PyExc_ValueError, "cube must be a writable C-contiguous float32 buffer "
                                       "of %zd channels", n);
        goto release_cube;
    }
    if (scale_o != Py_None) {
        if (parse_f32(scale_o, &scale_v, n, "scale") != 0)
            goto release_cube;
        have_scale = 1;
    }
    if (offset_o != Py_None) {
        if (parse_f32(offset_o, &offset_v, n, "offset") != 0)
            goto release_cube;
        have_offset = 1;
    }
    jf_status_init(&st);
    rc = jf_photo_fold(photo, (int)n, (const int *)comp_v.buf, (const int *)k_v.buf,
                       have_scale ? (const float *)scale_v.buf : NULL,
                       have_offset ? (const float *)offset_v.buf : NULL, sc, of, &post, &st);
    if (rc != 0) {
        PyErr_SetString(PyExc_ValueError, st.msg);
        goto release_cube;
    }
    plane = (size_t)cube_v.len / 4 / (size_t)n;
    Py_BEGIN_ALLOW_THREADS
    {
        float *x = (float *)cube_v.buf;
        size_t e;
        for (i = 0; i < n; i++)
            for (e = 0; e < plane; e++)
                x[(size_t)i * plane + e] = x[(size_t)i * plane + e] * sc[i] + of[i];
        jf_photo_finish(&post, x, plane);
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    ret = Py_None;
release_cube:
    PyBuffer_Release(&cube_v);
    if (have_scale)
        PyBuffer_Release(&scale_v);
    if (have_offset)
        PyBuffer_Release(&offset_v);
release_ck:
    PyBuffer_Release(&comp_v);
    PyBuffer_Release(&k_v);
    return ret;
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
        aw.out_size > JF_MAX_OUT || !jf_box_ok(box)) {
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
    {"read_files", py_read_files, METH_VARARGS,
     "read_files(paths, max_pixels=0) -> [(data or None, header or None, (kind, message) or "
     "None)]: the files' bytes (a path, or (path, offset, size) for a byte range of one) and "
     "headers, read and parsed without the GIL"},
    {"read_coefficients", (PyCFunction)(void (*)(void))py_read_coefficients,
     METH_VARARGS | METH_KEYWORDS,
     "read_coefficients(src, strict=False, max_pixels=0, freqs=None, extent=False) -> (header, "
     "[(coefs, quant)], warnings[, extent]); extent: (cut_scan, cut_row, total_rows, read_lo, "
     "read_hi, scan_byte, data_len), where the entropy-coded data ran out (cut_scan 0: it did not)"},
    {"decode_planes", (PyCFunction)(void (*)(void))py_decode_planes, METH_VARARGS | METH_KEYWORDS,
     "decode_planes(src, strict=False, max_pixels=0, extent=False) -> (header, [uint8 planes "
     "(padded)], warnings[, extent])"},
    {"entropy_decode", py_entropy_decode, METH_VARARGS,
     "entropy_decode(src): jpeg_read_coefficients only (the benchmark floor)"},
    {"cube", (PyCFunction)(void (*)(void))py_cube, METH_VARARGS | METH_KEYWORDS,
     "cube(src, comp, k, out_h, out_w, scale=None, offset=None, box=None, resize=0, flip=False, "
     "orientation=0, max_pixels=0, strict=False, band_cutoff=False, early_stop=True, out=None, "
     "extent=False, photometric=None) -> (cube, warnings[, extent]); extent's read_lo..read_hi: the iMCU rows the "
     "cube reads; early_stop: each scan is entropy-decoded only down to the last "
     "block row the cube reads; out: a writable C-contiguous float32 buffer of C x out_h/8 "
     "x out_w/8 written in place (and returned) instead of a new array; photometric: "
     "(brightness, contrast, saturation, hue, grayscale) applied to the output image before "
     "scale/offset, folded into the operator"},
    {"photometric", (PyCFunction)(void (*)(void))py_photometric, METH_VARARGS | METH_KEYWORDS,
     "photometric(cube, comp, k, photometric, scale=None, offset=None) -> None: cube's "
     "photometric ops, then x * scale + offset, in place on an unnormalised float32 cube"},
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
    PyModule_AddStringConstant(m, "libjpeg_version", JF_STR(LIBJPEG_TURBO_VERSION));
    PyModule_AddIntConstant(m, "libjpeg_turbo", 1);
#else
    PyModule_AddStringConstant(m, "libjpeg_version", JF_STR(JPEG_LIB_VERSION));
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
    PyModule_AddIntConstant(m, "ERR_NEEDS_SPATIAL", JF_ERR_NEEDS_SPATIAL);
    return m;
}
