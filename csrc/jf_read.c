/*
 * jf_read.c - read quantized DCT coefficients out of a JPEG with libjpeg-turbo.
 *
 * Entropy decoding only (jpeg_read_coefficients): no IDCT, no upsampling, no
 * colour conversion.  libjpeg's errors longjmp back here with a formatted
 * message; its warnings are collected into jf_status; nothing is printed.
 * No Python in this file: the binding (_jpegfreq.c) releases the GIL around it.
 */
#include "jf_core.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <jerror.h>

const char *const jf_color_space_names[] = {"unknown", "GRAY", "YCbCr", "RGB", "CMYK", "YCCK"};

void jf_status_init(jf_status *st)
{
    st->kind = JF_OK;
    st->msg[0] = '\0';
    st->nwarnings = 0;
    st->nstored = 0;
    st->cut_scan = st->cut_row = st->total_rows = st->read_lo = st->read_hi = 0;
    st->scan_byte = st->data_len = 0;
}

int jf_strict_check(jf_status *st)
{
    char first[JF_MSG_LEN];
    if (st->nwarnings == 0)
        return 0;
    memcpy(first, st->warnings[0], JF_MSG_LEN);
    first[100] = '\0';
    st->kind = JF_ERR_JPEG;
    snprintf(st->msg, JF_MSG_LEN, "strict mode: %s", first);
    return -1;
}

static void set_error(jf_status *st, int kind, const char *msg)
{
    st->kind = kind;
    snprintf(st->msg, JF_MSG_LEN, "%s", msg);
}

/* ======================================================================== */
/* Error manager: format, classify, longjmp; never print                    */
/* ======================================================================== */

static void jf_error_exit(j_common_ptr cinfo)
{
    struct jf_error_mgr *err = (struct jf_error_mgr *)cinfo->err;
    jf_status *st = err->status;
    char buf[JMSG_LENGTH_MAX];
    int code = err->pub.msg_code;

    (*cinfo->err->format_message)(cinfo, buf);
    st->kind = JF_ERR_JPEG;
    if (code == JERR_BAD_PRECISION) {
        st->kind = JF_ERR_UNSUPPORTED;
        snprintf(st->msg, JF_MSG_LEN,
                 "%d-bit JPEG is not supported (this libjpeg-turbo build reads 8-bit "
                 "samples only): %s", err->pub.msg_parm.i[0], buf);
    } else if (code == JERR_SOF_UNSUPPORTED) {
        int sof = err->pub.msg_parm.i[0];
        st->kind = JF_ERR_UNSUPPORTED;
        if (sof == 0xc3 || sof == 0xc7 || sof == 0xcb || sof == 0xcf)
            snprintf(st->msg, JF_MSG_LEN,
                     "lossless JPEG (SOF%d) is not supported: it has no DCT coefficients",
                     sof - 0xc0);
        else
            snprintf(st->msg, JF_MSG_LEN, "unsupported JPEG process: %s", buf);
    } else if (code == JERR_IMAGE_TOO_BIG) {
        /* libjpeg refuses a side over JPEG_MAX_DIMENSION while reading the
         * header, before jf_open's pixel limit runs: the same kind of refusal */
        st->kind = JF_ERR_LIMIT;
        snprintf(st->msg, JF_MSG_LEN,
                 "image of %ux%u = %lld pixels exceeds libjpeg's maximum dimension of %d "
                 "pixels per side (a possible decompression bomb)",
                 ((j_decompress_ptr)cinfo)->image_width, ((j_decompress_ptr)cinfo)->image_height,
                 (long long)((j_decompress_ptr)cinfo)->image_width *
                     ((j_decompress_ptr)cinfo)->image_height,
                 err->pub.msg_parm.i[0]);
    } else if (code == JERR_OUT_OF_MEMORY) {
        st->kind = JF_ERR_MEMORY;
        snprintf(st->msg, JF_MSG_LEN, "%s", buf);
    } else {
        snprintf(st->msg, JF_MSG_LEN, "%s", buf);
    }
    longjmp(err->jmp, 1);
}

static void jf_emit_message(j_common_ptr cinfo, int msg_level)
{
    struct jf_error_mgr *err = (struct jf_error_mgr *)cinfo->err;
    jf_status *st = err->status;
    char buf[JMSG_LENGTH_MAX];
    int i;

    if (msg_level >= 0)
        return; /* trace messages: ignored */
    if (err->cut_scan && err->cut_scan == ((j_decompress_ptr)cinfo)->input_scan_number)
        return; /* about the rows of a scan cut short on purpose: not used */
    if (cinfo->is_decompressor && st->cut_scan == 0) {
        /* The data ran out inside a scan: the Huffman decoder needed bits past
         * the end of the file (the fake EOI), or the arithmetic decoder asked
         * for a byte there (it reads byte by byte; hitting a marker is legal
         * for it and not reported).  A real marker inside the data is
         * corruption, reported by its warning text only. */
        j_decompress_ptr di = (j_decompress_ptr)cinfo;
        jf_decoder *dec = (jf_decoder *)cinfo; /* cinfo is its first member */
        int code = err->pub.msg_code;
        if (dec->src.data_ended && di->input_scan_number >= 1 &&
            di->input_iMCU_row < di->total_iMCU_rows &&
            (code == JWRN_HIT_MARKER || (di->arith_code && code == JWRN_JPEG_EOF))) {
            st->cut_scan = di->input_scan_number;
            st->cut_row = (int)di->input_iMCU_row;
        }
    }
    err->pub.num_warnings++;
    st->nwarnings++;
    if (st->nstored >= JF_MAX_WARN)
        return;
    (*cinfo->err->format_message)(cinfo, buf);
    for (i = 0; i < st->nstored; i++)
        if (strncmp(st->warnings[i], buf, JF_MSG_LEN - 1) == 0)
            return;
    snprintf(st->warnings[st->nstored++], JF_MSG_LEN, "%s", buf);
}

static void jf_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* never reaches stderr */
}

static const JOCTET jf_eoi[2] = {0xFF, JPEG_EOI};

/* End the current scan's entropy-coded data early: the decoder then runs out
 * of data, leaves the scan's remaining blocks as they are and warns (dropped,
 * see jf_emit_message).  The only scan of a sequential file: end the input
 * there (a silent EOI).  Otherwise: continue at the marker that follows the
 * scan's data (the first 0xFF not followed by 0x00, 0xFF or RSTn: where the
 * entropy decoder itself would stop), so later scans are read; when no such
 * marker follows, or the decoder has already met it, nothing is skipped
 * (returns 0). */
static int src_skip_scan(jf_decoder *dec, int last_scan)
{
    struct jf_source_mgr *src = &dec->src;
    const JOCTET *p = src->pub.next_input_byte, *end = p + src->pub.bytes_in_buffer;
    if (dec->cinfo.unread_marker != 0)
        return 0; /* the decoder already read up to the next marker: nothing left */
    if (last_scan) {
        src->pub.bytes_in_buffer = 0;
        src->eof_reached = 1;
        return 1;
    }
    if (p == jf_eoi)
        return 0; /* already at the inserted EOI */
    while (end - p >= 2) {
        const JOCTET *q = (const JOCTET *)memchr(p, 0xFF, (size_t)(end - p - 1));
        if (q == NULL)
            break;
        if (q[1] != 0x00 && q[1] != 0xFF && (q[1] < 0xD0 || q[1] > 0xD7)) {
            src->pub.next_input_byte = q;
            src->pub.bytes_in_buffer = (size_t)(end - q);
            return 1;
        }
        p = q + 1;
    }
    return 0;
}

/* libjpeg's progress monitor: bounds the work a hostile progressive file can
 * cause (thousands of tiny scans), and ends scans early (stop_imcu). */
static void jf_progress(j_common_ptr cinfo)
{
    struct jf_error_mgr *err = (struct jf_error_mgr *)cinfo->err;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    jf_decoder *dec = (jf_decoder *)cinfo; /* cinfo is its first member */
    if (!cinfo->is_decompressor)
        return;
    if (d->input_scan_number > err->max_scans) {
        err->status->kind = JF_ERR_LIMIT;
        snprintf(err->status->msg, JF_MSG_LEN,
                 "more than %d scans: refusing a progressive file built to exhaust the decoder",
                 err->max_scans);
        longjmp(err->jmp, 1);
    }
    /* Called before each iMCU row of a scan: once the rows the caller needs
     * are in, skip the rest of this scan's entropy-coded data. */
    if (dec->stop_imcu > 0 && (int)d->input_iMCU_row >= dec->stop_imcu &&
        d->input_iMCU_row < d->total_iMCU_rows && err->cut_scan != d->input_scan_number &&
        src_skip_scan(dec, !d->progressive_mode && d->comps_in_scan == d->num_components))
        err->cut_scan = d->input_scan_number;
}

/* ======================================================================== */
/* Memory source: a fake EOI at the end, with a warning unless asked not to */
/* ======================================================================== */

static void src_init(j_decompress_ptr cinfo) { (void)cinfo; }

static boolean src_fill(j_decompress_ptr cinfo)
{
    struct jf_source_mgr *src = (struct jf_source_mgr *)cinfo->src;
    if (!src->eof_reached) {
        src->data_ended = 1;
        WARNMS(cinfo, JWRN_JPEG_EOF);
    }
    src->eof_reached = 1;
    src->pub.next_input_byte = jf_eoi;
    src->pub.bytes_in_buffer = 2;
    return TRUE;
}

static void src_skip(j_decompress_ptr cinfo, long n)
{
    struct jf_source_mgr *src = (struct jf_source_mgr *)cinfo->src;
    if (n <= 0)
        return;
    while ((size_t)n > src->pub.bytes_in_buffer) {
        n -= (long)src->pub.bytes_in_buffer;
        (void)src_fill(cinfo);
    }
    src->pub.next_input_byte += n;
    src->pub.bytes_in_buffer -= (size_t)n;
}

static void src_term(j_decompress_ptr cinfo) { (void)cinfo; }

/* ======================================================================== */
/* Open, read, copy, close                                                  */
/* ======================================================================== */

static int map_color_space(J_COLOR_SPACE cs)
{
    switch (cs) {
    case JCS_GRAYSCALE: return JF_CS_GRAY;
    case JCS_YCbCr: return JF_CS_YCBCR;
    case JCS_RGB: return JF_CS_RGB;
    case JCS_CMYK: return JF_CS_CMYK;
    case JCS_YCCK: return JF_CS_YCCK;
    default: return JF_CS_UNKNOWN;
    }
}

int jf_open(jf_decoder *d, const uint8_t *buf, size_t len, long long max_pixels,
            jf_status *st)
{
    struct jpeg_decompress_struct *cinfo = &d->cinfo;
    jf_header *h = &d->hdr;
    int c, ret;

    memset(d, 0, sizeof(*d));
    if (len < 4 || buf[0] != 0xFF || buf[1] != 0xD8) {
        if (len == 0)
            set_error(st, JF_ERR_JPEG, "empty input: no JPEG data");
        else if (len >= 2 && buf[0] == 0xFF && buf[1] == 0xD8)
            snprintf(st->msg, JF_MSG_LEN, "truncated JPEG: nothing after the start marker "
                     "(%zu bytes)", len), st->kind = JF_ERR_JPEG;
        else if (len >= 8 && memcmp(buf, "\x89PNG\r\n\x1a\n", 8) == 0)
            set_error(st, JF_ERR_JPEG, "not a JPEG file: this is PNG data");
        else if (len >= 2)
            snprintf(st->msg, JF_MSG_LEN, "not a JPEG file: starts with 0x%02x 0x%02x",
                     buf[0], buf[1]), st->kind = JF_ERR_JPEG;
        else
            set_error(st, JF_ERR_JPEG, "not a JPEG file: too short");
        return -1;
    }

    cinfo->err = jpeg_std_error(&d->err.pub);
    d->err.pub.error_exit = jf_error_exit;
    d->err.pub.emit_message = jf_emit_message;
    d->err.pub.output_message = jf_output_message;
    d->err.status = st;
    d->err.max_scans = JF_MAX_SCANS;
    if (setjmp(d->err.jmp)) {
        jf_close(d);
        return -1;
    }
    jpeg_create_decompress(cinfo);
    d->created = 1;

    d->src.data = buf;
    d->src.len = len;
    d->src.pub.init_source = src_init;
    d->src.pub.fill_input_buffer = src_fill;
    d->src.pub.skip_input_data = src_skip;
    d->src.pub.resync_to_restart = jpeg_resync_to_restart;
    d->src.pub.term_source = src_term;
    d->src.pub.next_input_byte = buf;
    d->src.pub.bytes_in_buffer = len;
    cinfo->src = &d->src.pub;
    d->progress.progress_monitor = jf_progress;
    cinfo->progress = &d->progress;

    ret = jpeg_read_header(cinfo, FALSE);
    st->data_len = (long long)len;
    st->scan_byte = (d->src.pub.next_input_byte >= buf && d->src.pub.next_input_byte <= buf + len)
                        ? (long long)(d->src.pub.next_input_byte - buf) : (long long)len;
    if (ret != JPEG_HEADER_OK) {
        set_error(st, JF_ERR_JPEG, "no image in this JPEG stream (tables only)");
        jf_close(d);
        return -1;
    }
    if (cinfo->data_precision != 8) {
        snprintf(st->msg, JF_MSG_LEN,
                 "%d-bit JPEG is not supported (this libjpeg-turbo build reads 8-bit samples only)",
                 cinfo->data_precision);
        st->kind = JF_ERR_UNSUPPORTED;
        jf_close(d);
        return -1;
    }
    if (cinfo->num_components != 1 && cinfo->num_components != 3 && cinfo->num_components != 4) {
        snprintf(st->msg, JF_MSG_LEN, "unsupported number of components: %d (1, 3 or 4 expected)",
                 cinfo->num_components);
        st->kind = JF_ERR_UNSUPPORTED;
        jf_close(d);
        return -1;
    }
    if (max_pixels > 0 && (long long)cinfo->image_width * cinfo->image_height > max_pixels) {
        snprintf(st->msg, JF_MSG_LEN,
                 "image of %ux%u = %lld pixels exceeds the pixel limit of %lld "
                 "(a possible decompression bomb; raise max_pixels to allow it)",
                 cinfo->image_width, cinfo->image_height,
                 (long long)cinfo->image_width * cinfo->image_height, max_pixels);
        st->kind = JF_ERR_LIMIT;
        jf_close(d);
        return -1;
    }

    h->width = (int)cinfo->image_width;
    h->height = (int)cinfo->image_height;
    h->num_components = cinfo->num_components;
    h->precision = cinfo->data_precision;
    h->color_space = map_color_space(cinfo->jpeg_color_space);
    h->saw_adobe = cinfo->saw_Adobe_marker;
    h->adobe_transform = cinfo->saw_Adobe_marker ? cinfo->Adobe_transform : -1;
    h->saw_jfif = cinfo->saw_JFIF_marker;
    h->progressive = cinfo->progressive_mode;
    h->arithmetic = cinfo->arith_code;
    h->restart_interval = (int)cinfo->restart_interval;
    h->max_h = cinfo->max_h_samp_factor;
    h->max_v = cinfo->max_v_samp_factor;
    h->orientation = jf_exif_orientation(buf, len);
    for (c = 0; c < cinfo->num_components; c++) {
        jpeg_component_info *ci = &cinfo->comp_info[c];
        jf_comp_info *o = &h->comp[c];
        o->id = ci->component_id;
        o->h_samp = ci->h_samp_factor;
        o->v_samp = ci->v_samp_factor;
        o->width = (int)ci->downsampled_width;
        o->height = (int)ci->downsampled_height;
        o->width_in_blocks = (int)ci->width_in_blocks;
        o->height_in_blocks = (int)ci->height_in_blocks;
        o->quant_tbl_no = ci->quant_tbl_no;
    }
    return 0;
}

int jf_read_all(jf_decoder *d, jf_status *st)
{
    struct jpeg_decompress_struct *cinfo = &d->cinfo;
    int c, k;

    (void)st;
    if (setjmp(d->err.jmp))
        return -1;
    d->err.status->total_rows = (int)cinfo->total_iMCU_rows;
    d->err.status->read_lo = 0;
    d->err.status->read_hi = (int)cinfo->total_iMCU_rows;
    d->coefs = jpeg_read_coefficients(cinfo);
    for (c = 0; c < cinfo->num_components; c++) {
        JQUANT_TBL *q = cinfo->comp_info[c].quant_table;
        if (q == NULL) {
            int no = cinfo->comp_info[c].quant_tbl_no;
            q = (no >= 0 && no < NUM_QUANT_TBLS) ? cinfo->quant_tbl_ptrs[no] : NULL;
        }
        if (q == NULL) {
            snprintf(d->err.status->msg, JF_MSG_LEN,
                     "component %d has no quantization table", c);
            d->err.status->kind = JF_ERR_JPEG;
            return -1;
        }
        for (k = 0; k < 64; k++)
            d->quant[c][k] = q->quantval[k];
    }
    return 0;
}

int jf_copy_component(jf_decoder *d, int c, int16_t *out, jf_status *st)
{
    j_decompress_ptr cinfo = &d->cinfo;
    const jf_comp_info *ci = &d->hdr.comp[c];
    size_t rowlen = (size_t)ci->width_in_blocks * 64;
    int r;

    (void)st;
    if (setjmp(d->err.jmp))
        return -1;
    for (r = 0; r < ci->height_in_blocks; r++) {
        JBLOCKARRAY rows = (*cinfo->mem->access_virt_barray)(
            (j_common_ptr)cinfo, d->coefs[c], (JDIMENSION)r, 1, FALSE);
        memcpy(out + (size_t)r * rowlen, rows[0], rowlen * sizeof(int16_t));
    }
    return 0;
}

int jf_dequant_component(jf_decoder *d, int c, const int *freqs, int nfreq,
                         float *out, jf_status *st)
{
    j_decompress_ptr cinfo = &d->cinfo;
    const jf_comp_info *ci = &d->hdr.comp[c];
    float q[64];
    int r, b, i;

    (void)st;
    for (i = 0; i < nfreq; i++)
        q[i] = (float)d->quant[c][freqs[i]];
    if (setjmp(d->err.jmp))
        return -1;
    for (r = 0; r < ci->height_in_blocks; r++) {
        JBLOCKARRAY rows = (*cinfo->mem->access_virt_barray)(
            (j_common_ptr)cinfo, d->coefs[c], (JDIMENSION)r, 1, FALSE);
        float *o = out + (size_t)r * ci->width_in_blocks * nfreq;
        for (b = 0; b < ci->width_in_blocks; b++) {
            const JCOEF *blk = rows[0][b];
            for (i = 0; i < nfreq; i++)
                *o++ = (float)blk[freqs[i]] * q[i];
        }
    }
    return 0;
}

int jf_plane_rows(const jf_decoder *d, int c)
{
    const struct jpeg_decompress_struct *cinfo = &d->cinfo;
    int imcu = (int)((cinfo->image_height + cinfo->max_v_samp_factor * 8 - 1) /
                     (cinfo->max_v_samp_factor * 8));
    return imcu * cinfo->comp_info[c].v_samp_factor * 8;
}

int jf_plane_stride(const jf_decoder *d, int c)
{
    const jpeg_component_info *ci = &d->cinfo.comp_info[c];
    int mcus = (int)((ci->width_in_blocks + ci->h_samp_factor - 1) / ci->h_samp_factor);
    return mcus * ci->h_samp_factor * 8;
}

int jf_decode_planes(jf_decoder *d, uint8_t **planes, jf_status *st)
{
    struct jpeg_decompress_struct *cinfo = &d->cinfo;
    JSAMPROW rowptrs[JF_MAX_COMPONENTS][4 * 8];
    JSAMPARRAY arrs[JF_MAX_COMPONENTS];
    int c, per_call;

    (void)st;
    if (setjmp(d->err.jmp))
        return -1;
    cinfo->raw_data_out = TRUE;
    cinfo->out_color_space = cinfo->jpeg_color_space;
    cinfo->dct_method = JDCT_ISLOW;
    cinfo->do_fancy_upsampling = FALSE;
    d->err.status->total_rows = (int)cinfo->total_iMCU_rows;
    d->err.status->read_lo = 0;
    d->err.status->read_hi = (int)cinfo->total_iMCU_rows;
    jpeg_start_decompress(cinfo);
    per_call = cinfo->max_v_samp_factor * 8;
    for (c = 0; c < cinfo->num_components; c++)
        arrs[c] = rowptrs[c];
    while (cinfo->output_scanline < cinfo->output_height) {
        int call = (int)(cinfo->output_scanline / per_call);
        for (c = 0; c < cinfo->num_components; c++) {
            int nr = cinfo->comp_info[c].v_samp_factor * 8, i;
            int stride = jf_plane_stride(d, c), rows = jf_plane_rows(d, c);
            for (i = 0; i < nr; i++) {
                int r = call * nr + i;
                if (r >= rows)
                    r = rows - 1;
                rowptrs[c][i] = planes[c] + (size_t)r * stride;
            }
        }
        if (jpeg_read_raw_data(cinfo, arrs, (JDIMENSION)per_call) == 0)
            break;
    }
    jpeg_abort_decompress(cinfo);
    return 0;
}

void jf_limit_input(jf_decoder *d, size_t cutoff)
{
    size_t used = (size_t)(d->src.pub.next_input_byte - d->src.data);
    if (cutoff >= d->src.len || d->src.pub.next_input_byte < d->src.data || cutoff < used)
        return;
    d->src.pub.bytes_in_buffer = cutoff - used;
    d->src.eof_reached = 1; /* the EOI we insert there is deliberate: no warning */
}

void jf_close(jf_decoder *d)
{
    if (d->created) {
        jpeg_destroy_decompress(&d->cinfo);
        d->created = 0;
    }
}

int jf_open_file(const char *path, int *fd_out, size_t *size, jf_status *st)
{
    /* open/fstat: no stdio buffer, no seeks (fewer syscalls per image) */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;

    *fd_out = -1;
    *size = 0;
    if (fd < 0) {
        snprintf(st->msg, JF_MSG_LEN, "cannot open: %s", strerror(errno));
        st->kind = JF_ERR_IO;
        return -1;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(st->msg, JF_MSG_LEN, "cannot read: %s",
                 fstat(fd, &sb) != 0 ? strerror(errno)
                 : S_ISDIR(sb.st_mode) ? "is a directory"
                                       : "not a regular file");
        st->kind = JF_ERR_IO;
        close(fd);
        return -1;
    }
    *fd_out = fd;
    *size = (size_t)sb.st_size;
    return 0;
}

int jf_read_fd(int fd, long long offset, uint8_t *buf, size_t size, jf_status *st)
{
    size_t got = 0;
    while (got < size) {
        ssize_t r = pread(fd, buf + got, size - got, (off_t)(offset + (long long)got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r < 0)
                snprintf(st->msg, JF_MSG_LEN, "cannot read: %s", strerror(errno));
            else
                set_error(st, JF_ERR_IO, "short read (the file shrank while it was read)");
            st->kind = JF_ERR_IO;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

int jf_read_file(const char *path, uint8_t **buf, size_t *len, jf_status *st)
{
    int fd;
    size_t size;

    *buf = NULL;
    *len = 0;
    if (jf_open_file(path, &fd, &size, st) != 0)
        return -1;
    *buf = (uint8_t *)malloc(size > 0 ? size : 1);
    if (*buf == NULL) {
        set_error(st, JF_ERR_MEMORY, "out of memory reading the file");
        close(fd);
        return -1;
    }
    if (jf_read_fd(fd, 0, *buf, size, st) != 0) {
        close(fd);
        free(*buf);
        *buf = NULL;
        return -1;
    }
    close(fd);
    *len = size;
    return 0;
}

/* ======================================================================== */
/* Marker walking: EXIF orientation and progressive scan cut-off            */
/* ======================================================================== */

static unsigned rd16(const uint8_t *p, int le) { return le ? (p[0] | p[1] << 8) : (p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24)
              : ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3]);
}

static int tiff_orientation(const uint8_t *t, size_t n)
{
    int le;
    uint32_t ifd;
    unsigned count, i;

    if (n < 8)
        return 1;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return 1;
    if (rd16(t + 2, le) != 42)
        return 1;
    ifd = rd32(t + 4, le);
    if ((size_t)ifd + 2 > n)
        return 1;
    count = rd16(t + ifd, le);
    for (i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n)
            break;
        if (rd16(t + e, le) == 0x0112) {
            unsigned type = rd16(t + e + 2, le), v;
            if (type != 3 || rd32(t + e + 4, le) < 1)
                return 1;
            v = rd16(t + e + 8, le);
            return (v >= 1 && v <= 8) ? (int)v : 1;
        }
    }
    return 1;
}

int jf_exif_orientation(const uint8_t *buf, size_t len)
{
    size_t pos = 2;
    while (pos + 4 <= len) {
        unsigned marker, seglen;
        if (buf[pos] != 0xFF)
            return 1;
        marker = buf[pos + 1];
        if (marker == 0xFF) { pos++; continue; }
        if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { pos += 2; continue; }
        if (marker == 0xDA || marker == 0xD9)
            return 1;
        seglen = rd16(buf + pos + 2, 0);
        if (seglen < 2 || pos + 2 + seglen > len)
            return 1;
        if (marker == 0xE1 && seglen >= 2 + 6 + 8 && memcmp(buf + pos + 4, "Exif\0\0", 6) == 0)
            return tiff_orientation(buf + pos + 10, seglen - 8);
        pos += 2 + seglen;
    }
    return 1;
}

/* zigzag position -> natural (row-major) index */
static const uint8_t jf_natural_order[64] = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,  7,  14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63};

/* End of the entropy-coded data that starts at pos: the next marker that is
 * neither a stuffed 0xFF00 nor a restart marker. */
static size_t skip_entropy(const uint8_t *buf, size_t len, size_t pos)
{
    while (pos + 1 < len) {
        const uint8_t *p = memchr(buf + pos, 0xFF, len - pos - 1);
        uint8_t m;
        if (p == NULL)
            return len;
        pos = (size_t)(p - buf);
        m = buf[pos + 1];
        if (m == 0x00 || (m >= 0xD0 && m <= 0xD7) || m == 0xFF) {
            pos += (m == 0xFF) ? 1 : 2;
            continue;
        }
        return pos;
    }
    return len;
}

size_t jf_progressive_cutoff(const uint8_t *buf, size_t len, const jf_header *h,
                             const uint8_t need[JF_MAX_COMPONENTS][64])
{
    /* done[c][k]: the last successive-approximation bit (Al = 0) has arrived */
    uint8_t done[JF_MAX_COMPONENTS][64];
    size_t pos = 2;
    int c;

    if (!h->progressive)
        return len;
    memset(done, 0, sizeof(done));
    while (pos + 4 <= len) {
        unsigned marker, seglen;
        if (buf[pos] != 0xFF)
            return len;
        marker = buf[pos + 1];
        if (marker == 0xFF) { pos++; continue; }
        if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { pos += 2; continue; }
        if (marker == 0xD9)
            return len;
        seglen = rd16(buf + pos + 2, 0);
        if (seglen < 2 || pos + 2 + seglen > len)
            return len;
        if (marker == 0xDA) {
            const uint8_t *s = buf + pos + 4;
            unsigned ns = seglen > 2 ? s[0] : 0, i, ss, se, al, k; /* s[0] may lie past len */
            int comps[JF_MAX_COMPONENTS], nc = 0, complete = 1, used = 0;
            if (seglen < 6 + 2 * ns || ns > JF_MAX_COMPONENTS)
                return len;
            /* each scan component is the first unused frame component with its
             * id, as libjpeg maps them: duplicate ids must not overrun comps[] */
            for (i = 0; i < ns; i++) {
                int id = s[1 + 2 * i], j;
                for (j = 0; j < h->num_components; j++)
                    if (h->comp[j].id == id && !(used & (1 << j))) {
                        used |= 1 << j;
                        comps[nc++] = j;
                        break;
                    }
            }
            ss = s[1 + 2 * ns];
            se = s[2 + 2 * ns];
            al = s[3 + 2 * ns] & 15;
            if (se > 63)
                se = 63;
            if (al == 0)
                for (i = 0; i < (unsigned)nc; i++)
                    for (k = ss; k <= se; k++)
                        done[comps[i]][jf_natural_order[k]] = 1;
            pos = skip_entropy(buf, len, pos + 2 + seglen);
            for (c = 0; c < h->num_components && complete; c++)
                for (k = 0; k < 64; k++)
                    if (need[c][k] && !done[c][k]) { complete = 0; break; }
            if (complete)
                return pos;
            continue;
        }
        pos += 2 + seglen;
    }
    return len;
}
