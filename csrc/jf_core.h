/*
 * jf_core.h - the plain-C core of jpegfreq (no Python in it).
 *
 * Three parts share this header:
 *   jf_read.c      reads a JPEG's quantized DCT coefficients with libjpeg-turbo
 *                  (entropy decoding only), with errors and warnings captured
 *                  into a jf_status instead of stderr or exit().
 *   jf_resample.c  the coefficient-domain operator (docs/design.md): 1-D resampling
 *                  weights, chroma upsampling, the banded per-image matrices A
 *                  and B, and out = A Q B^T for the kept frequencies only.
 *   jf_cube.c      the whole cube from bytes and a request (jf_cube): routing,
 *                  planning from the header, early stop, the operator.  The
 *                  binding and the fuzzer both call it.
 *
 * Every function fills caller-owned buffers and returns 0 on success or -1
 * with a message in jf_status.msg.
 */
#ifndef JF_CORE_H
#define JF_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <setjmp.h>
#include <jpeglib.h>

#define JF_MSG_LEN 200
#define JF_MAX_WARN 8          /* distinct warning texts kept; all are counted */
#define JF_MAX_COMPONENTS 4
#define JF_MAX_SCANS 1000      /* more scans than any sane progressive file */

/* Colour spaces as reported to Python (index into jf_color_space_names). */
enum { JF_CS_UNKNOWN = 0, JF_CS_GRAY, JF_CS_YCBCR, JF_CS_RGB, JF_CS_CMYK, JF_CS_YCCK };
extern const char *const jf_color_space_names[];

/* Error categories: lets the binding pick an exception without parsing text.
 * JF_ERR_NEEDS_SPATIAL is not a failure of the file: the compressed path cannot
 * take it (jf_route says why in msg) and the caller decodes pixels instead. */
enum { JF_OK = 0, JF_ERR_JPEG = 1, JF_ERR_LIMIT = 2, JF_ERR_UNSUPPORTED = 3,
       JF_ERR_MEMORY = 4, JF_ERR_IO = 5, JF_ERR_ARG = 6, JF_ERR_NEEDS_SPATIAL = 7 };

#define JF_MAX_OUT (1 << 16)      /* output pixels per axis */
#define JF_MAX_COORD 1e7          /* |box coordinate| in source pixels */
#define JF_MAX_CHANNELS 192       /* channels of one cube (3 components x 64) */
#define JF_STR_(x) #x
#define JF_STR(x) JF_STR_(x)

typedef struct {
    int kind;                               /* JF_ERR_* of the failure, JF_OK if none */
    char msg[JF_MSG_LEN];                   /* failure reason */
    int nwarnings;                          /* every warning libjpeg emitted */
    int nstored;                            /* distinct texts kept below */
    char warnings[JF_MAX_WARN][JF_MSG_LEN];
    /* Where the entropy-coded data ran out (the file ended inside a scan):
     * cut_scan is the scan (1, 2, ...) in which the decoder first needed data
     * past the end of the file, cut_row the iMCU rows of that scan decoded
     * before it (the row being decoded then counts as not decoded); cut_scan
     * 0: the data did not run out inside a scan.  total_rows: the image's iMCU
     * rows; read_lo..read_hi: the iMCU rows the caller reads (jf_cube: those
     * of the cube; a whole-image read: 0..total_rows).  scan_byte: where the
     * first scan's data starts; data_len: the input's length. */
    int cut_scan, cut_row, total_rows, read_lo, read_hi;
    long long scan_byte, data_len;
} jf_status;

typedef struct {
    int id;                 /* component identifier from SOF */
    int h_samp, v_samp;     /* sampling factors */
    int width, height;      /* samples in this component (downsampled size) */
    int width_in_blocks, height_in_blocks;
    int quant_tbl_no;
} jf_comp_info;

typedef struct {
    int width, height;
    int num_components;
    int precision;
    int color_space;        /* JF_CS_* as libjpeg guessed it (JFIF/Adobe/ids) */
    int saw_adobe, adobe_transform;
    int saw_jfif;
    int progressive, arithmetic;
    int restart_interval;   /* in MCUs, 0 = none */
    int orientation;        /* EXIF orientation 1..8; 1 when absent or invalid */
    int max_h, max_v;
    jf_comp_info comp[JF_MAX_COMPONENTS];
} jf_header;

/* libjpeg error manager that longjmps back with a formatted message. */
struct jf_error_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    jf_status *status;
    int max_scans;
    int cut_scan;           /* scan (1, 2, ...) cut short on purpose (stop_imcu); 0 none */
};

struct jf_source_mgr {
    struct jpeg_source_mgr pub;
    const uint8_t *data;
    size_t len;
    int eof_reached;
    int data_ended;         /* the real end of the input was met (not a deliberate stop) */
};

typedef struct {
    struct jpeg_decompress_struct cinfo;
    struct jf_error_mgr err;
    struct jf_source_mgr src;
    struct jpeg_progress_mgr progress;
    jvirt_barray_ptr *coefs;    /* after jf_read_all */
    int created;
    /* > 0: every scan is entropy-decoded down to this iMCU row only: the rest
     * of its data is skipped, later rows are left zero (or partial) and
     * warnings about them are dropped.  Set by the caller before jf_read_all
     * (see jf_rows_needed); 0 reads everything. */
    int stop_imcu;
    jf_header hdr;
    /* Quant tables per component (natural order), valid after jf_read_all. */
    uint16_t quant[JF_MAX_COMPONENTS][64];
} jf_decoder;

/* ---- jf_read.c ---------------------------------------------------------- */

void jf_status_init(jf_status *st);

/* Parse the header of buf[0:len]; validates component count, precision and the
 * pixel limit (max_pixels <= 0 disables it) before any coefficient memory exists.
 * On failure the decoder is already closed. */
int jf_open(jf_decoder *d, const uint8_t *buf, size_t len, long long max_pixels,
            jf_status *st);

/* Entropy-decode every scan into libjpeg's coefficient arrays (jpeg_read_coefficients);
 * with d->stop_imcu set, only up to that iMCU row where the file allows it. */
int jf_read_all(jf_decoder *d, jf_status *st);

/* Copy component c's quantized blocks as int16 (height_in_blocks, width_in_blocks, 64). */
int jf_copy_component(jf_decoder *d, int c, int16_t *out, jf_status *st);

/* Dequantized float32 (height_in_blocks, width_in_blocks, nfreq) of the listed
 * natural-order frequencies (0..63) only. */
int jf_dequant_component(jf_decoder *d, int c, const int *freqs, int nfreq,
                         float *out, jf_status *st);

void jf_close(jf_decoder *d);

/* Pixel decode for the spatial path: each component's samples at its own
 * resolution (libjpeg's islow IDCT, no upsampling, no colour conversion) into
 * planes[c] of jf_plane_rows(d, c) rows of jf_plane_stride(d, c) bytes. */
int jf_plane_rows(const jf_decoder *d, int c);
int jf_plane_stride(const jf_decoder *d, int c);
int jf_decode_planes(jf_decoder *d, uint8_t **planes, jf_status *st);

/* strict mode: 0 when st holds no warning, else -1 with st turned into a
 * JF_ERR_JPEG failure "strict mode: <first warning>". */
int jf_strict_check(jf_status *st);

/* Read a whole file into a malloc'd buffer (caller frees). */
int jf_read_file(const char *path, uint8_t **buf, size_t *len, jf_status *st);
/* Its two steps: open a regular file and take its size (*fd_out -1 on failure),
 * then read exactly size bytes of it from offset into buf (the caller closes fd). */
int jf_open_file(const char *path, int *fd_out, size_t *size, jf_status *st);
int jf_read_fd(int fd, long long offset, uint8_t *buf, size_t size, jf_status *st);

/* A float32 cube to float16 (round to nearest even) or to int8 (clipped to
 * +-127, round to nearest even, NaN 0); jf_convert.c. */
void jf_to_half(const float *x, uint16_t *y, size_t n);
void jf_to_int8(const float *x, int8_t *y, size_t n);

/* EXIF orientation (1..8) from the APP1 segments before SOS; 1 if none. */
int jf_exif_orientation(const uint8_t *buf, size_t len);

/* Byte offset just past the last scan needed so that, for every component c,
 * every natural frequency k with need[c][k] != 0 is complete (all successive-
 * approximation bits present); returns len if the whole file is needed or the
 * file is sequential.  Used to stop progressive decoding early. */
size_t jf_progressive_cutoff(const uint8_t *buf, size_t len, const jf_header *h,
                             const uint8_t need[JF_MAX_COMPONENTS][64]);

/* ---- jf_resample.c ------------------------------------------------------ */

/* Antialiased bilinear (triangle) resampling weights, PIL/torchvision style:
 * output pixel i of out_size samples [in0, in1) of an input axis of in_size
 * pixels.  Fills bounds[2*i] = first input index, bounds[2*i+1] = count and
 * weights[i*ksize + j]; returns ksize (the row stride) or -1. Call with
 * weights == NULL to get ksize only. */
int jf_resize_weights(int in_size, int out_size, double in0, double in1,
                      int *bounds, double *weights);

/* The geometry of one axis of one component: which output pixels come from
 * which component samples.  All numbers are plain, so both paths share them. */
typedef struct {
    int image_size;     /* full-resolution pixels along this axis */
    int comp_size;      /* component samples along this axis (downsampled) */
    int factor;         /* max_samp / samp: 1, 2, 4 (chroma upsampling ratio) */
    double box0, box1;  /* crop box in full-resolution pixels */
    int out_size;       /* output pixels (multiple of 8) */
    int flip;           /* reverse the output axis */
} jf_axis;

/* Dense pixel-domain operator M (out_size x comp_size) = F R U for one axis:
 * rows of output pixels, columns of component samples.  Used by the spatial
 * path and by the float reference in the tests. */
int jf_axis_matrix(const jf_axis *ax, double *M);

/* out (ah->out_size x aw->out_size) = M_h X M_w^T for a float plane X of
 * ah->comp_size rows and aw->comp_size columns (row stride in_stride): the
 * spatial path's resampling, with exactly the weights of jf_axis_matrix. */
int jf_resample_plane(const float *in, int in_stride, const jf_axis *ah, const jf_axis *aw,
                      float *out);

/* 8x8 block DCT (JPEG's orthonormal DCT-II) of a float plane h x w (multiples
 * of 8) for rows us[0:nu] and columns vs[0:nv] of frequencies only:
 * out[nu][nv][h/8][w/8]. */
void jf_block_dct(const float *plane, int h, int w, const int *us, int nu, const int *vs, int nv,
                  float *out);

/* One banded coefficient-domain operator (A or B): for output block ob and kept
 * output frequency f (index into the kept list), the weights on input
 * coefficient (ib, k) are w[((ob*nf + f)*nb + (ib - start[ob]))*8 + k]. */
typedef struct {
    int nob;            /* output blocks */
    int nf;             /* kept output frequencies along this axis */
    int nb;             /* band width in input blocks (max over ob) */
    int *start;         /* [nob] first input block of the band */
    int *lo, *hi;       /* [nob] input blocks with non-zero weights: [lo, hi] */
    float *w;           /* [nob][nf][nb][8] */
    int refs;           /* shared references (see jf_band_acquire) */
    /* Derived for the horizontal pass when the band is used as B (built with
     * the band, cached with it): output blocks [oc_lo[ib], oc_hi[ib]) read
     * input block ib; W_ib = W + woff[ib] is (8 x wlen[ib]) with entry
     * [k][(oc - oc_lo) * nvp + f]; used input blocks are [cmin, cmax). */
    int nvp, L, cmin, cmax;
    int *oc_lo, *oc_hi, *wlen;
    size_t *woff;
    float *W;
} jf_band;

int jf_band_build(const jf_axis *ax, int in_blocks, const int *freqs, int nf,
                  jf_band *band, jf_status *st);
void jf_band_free(jf_band *band);

/* A band for this axis and these frequencies, from a small thread-safe LRU
 * cache (eval geometry repeats for every image of a size) or freshly built.
 * Release with jf_band_release. */
jf_band *jf_band_acquire(const jf_axis *ax, int in_blocks, const int *freqs, int nf,
                         jf_status *st);
void jf_band_release(jf_band *band);

/* Per component request: kept (u, v) pairs and where each goes in the cube. */
typedef struct {
    int n;                  /* kept channels of this component */
    int k[64];              /* natural frequency 8u+v of each */
    int channel[64];        /* output channel index in the cube */
    float scale[64];        /* out = value * scale + offset (normalization) */
    float offset[64];
} jf_comp_request;

/* 1 + the last block row of component c (stored rows axis ax_h) that
 * jf_component_cube reads with a non-zero weight for this request; 0 when none,
 * -1 on error.  Lets the caller stop entropy decoding below the crop. */
int jf_rows_needed(jf_decoder *d, int c, const jf_axis *ax_h, const jf_comp_request *req,
                   jf_status *st);

/* The same, with the first block row read (with a non-zero weight) in *first
 * (0 when no row is read). */
int jf_rows_span(jf_decoder *d, int c, const jf_axis *ax_h, const jf_comp_request *req,
                 int *first, jf_status *st);

/* out = A Q B^T for one component of a decoder whose coefficients are read;
 * writes channels of the float32 cube [C][out_h/8][out_w/8]. */
/* transpose != 0: the caller passed the axes of the stored (untransposed)
 * image and swapped (u, v) in req->k; the result is written transposed, so
 * the cube is [C][out_wb][out_hb] in that case. */
int jf_component_cube(jf_decoder *d, int c, const jf_axis *ax_h, const jf_axis *ax_w,
                      const jf_comp_request *req, float *cube, int out_hb, int out_wb,
                      int transpose, jf_status *st);

/* Eval geometry: resize the short side to `resize` (torchvision Resize: the
 * long side is truncated), centre-crop crop_h x crop_w (torchvision CenterCrop
 * rounding); box = x0, y0, x1, y1 in source pixels. */
void jf_eval_box(int width, int height, int resize, int crop_h, int crop_w, double box[4]);

/* Limit the decoder's input to buf[0:cutoff] with a silent EOI after it. */
void jf_limit_input(jf_decoder *d, size_t cutoff);

/* ---- jf_cube.c ---------------------------------------------------------- */

/* Which path a file takes, from its header alone: 0 when the coefficient-domain
 * cube is the route (YCbCr or grayscale); 1 when the file needs the spatial
 * path (decode pixels, resize, block DCT), with the reason in reason[0:n]
 * ("CMYK JPEG: colour cannot be mapped linearly to YCbCr"; also RGB, YCCK and
 * unknown colour spaces).  reason is "" when 0 is returned.  Non-integral
 * sampling ratios are no route (libjpeg-turbo cannot upsample them to pixels
 * either): jf_cube refuses them as JF_ERR_UNSUPPORTED. */
int jf_route(const jf_header *h, char *reason, size_t n);

/* 1 when box (x0, y0, x1, y1) is finite, within JF_MAX_COORD and not empty. */
int jf_box_ok(const double b[4]);

/* One cube: which channels, what geometry, how to read. */
typedef struct {
    int nch;                /* output channels, 1..JF_MAX_CHANNELS */
    const int *comp;        /* [nch] component 0..2 of each (1, 2 on gray: neutral chroma) */
    const int *k;           /* [nch] natural frequency 8u + v (0..63) of each */
    const float *scale;     /* [nch] or NULL: out = value * scale + offset */
    const float *offset;    /* [nch] or NULL */
    int out_h, out_w;       /* output pixels, positive multiples of 8 */
    int has_box;            /* 1: box below; 0: eval geometry from resize */
    double box[4];          /* x0, y0, x1, y1 in displayed (oriented) pixels */
    int resize;             /* eval: short side to this, centre crop out_h x out_w */
    int flip;               /* mirror the output horizontally (after orientation) */
    int orientation;        /* 0 = as stored, -1 = from EXIF, 1..8 = this EXIF value */
    long long max_pixels;   /* pixel limit checked on the header; <= 0: none */
    int strict;             /* any libjpeg warning fails (JF_ERR_JPEG) */
    int band_cutoff;        /* progressive: read only the scans of the kept band */
    int early_stop;         /* entropy-decode only down to the last row read */
    int has_photo;          /* 1: the photometric ops of photo[] (jf_photo.c) */
    double photo[5];        /* brightness, contrast, saturation, hue (turns), grayscale 0/1 */
} jf_cube_request;

/* The channels of a request: 1..JF_MAX_CHANNELS of them, components 0..2,
 * frequencies 0..63, at most 64 of one component (jf_resample.c, the operator's
 * limits).  0, or -1 with JF_ERR_ARG. */
int jf_channels_check(int nch, const int *comp, const int *k, jf_status *st);

/* Check a request on its own (no file needed): 0, or -1 with JF_ERR_ARG. */
int jf_cube_check(const jf_cube_request *r, jf_status *st);

/* The cube of buf[0:len] for request r into the caller's float32 output of
 * nch x out_h/8 x out_w/8.  Initializes st; on success returns 0 with
 * libjpeg's warnings in st.  On failure -1 with st->kind: JF_ERR_ARG (bad
 * request), JF_ERR_NEEDS_SPATIAL (jf_route's reason in st->msg; out
 * untouched), or the reader's and operator's errors.  Thread-safe; call
 * without any interpreter lock. */
int jf_cube(const uint8_t *buf, size_t len, const jf_cube_request *r, float *out,
            jf_status *st);

/* ---- jf_photo.c --------------------------------------------------------- */

#define JF_PHOTO_N 5        /* brightness, contrast, saturation, hue, grayscale */

/* What is left after the fold: contrast's Y0 blend and the hue rotation. */
typedef struct {
    int nydc;                       /* Y0 channels left raw (contrast; a request may */
    int ydc[64];                    /* repeat a channel): Y0 = raw * dc_g + dc_c0 +  */
    double dc_g[64], dc_c0[64], dc_c1[64];  /* dc_c1 * mean(raw), each with its own */
    int npairs;                     /* (Cb, Cr) channel pairs rotated by the hue */
    double cos_h, sin_h;
    int cb[64], cr[64];
    float sb[64], ob[64], sr[64], orr[64];  /* the pairs' normalisation */
} jf_photo_post;

/* 0 when the values are valid (finite; factors >= 0; hue in [-0.5, 0.5]; grayscale
 * 0 or 1), else -1 with JF_ERR_ARG. */
int jf_photo_check(const double p[JF_PHOTO_N], jf_status *st);

/* The operator's scale/offset sc[nch], of[nch] for photometric p on top of the
 * caller's normalisation scale/offset (either NULL: 1 / 0), and the pass that is left.
 * The channels must pass jf_channels_check (it is made here too); a hue rotation needs
 * Cb and Cr channels of the same frequencies.  0, or -1 with JF_ERR_ARG. */
int jf_photo_fold(const double p[JF_PHOTO_N], int nch, const int *comp, const int *k,
                  const float *scale, const float *offset, float *sc, float *of,
                  jf_photo_post *post, jf_status *st);

/* The pass on a cube written with jf_photo_fold's scale/offset (channels of plane
 * values each), in place. */
void jf_photo_finish(const jf_photo_post *post, float *cube, size_t plane);

#endif
