/*
 * jf_photo.c: photometric ops on the cube, in the coefficient domain.
 *
 * brightness b, contrast f, saturation s, hue h (turns), grayscale, applied in that
 * order to the output image, then the caller's normalisation (x * scale + offset).
 * docs/augment.md derives each op; in short, with a coefficient the orthonormal DCT of
 * level-shifted samples:
 *   Y AC           times b f
 *   Y DC (Y0)      b f Y0 + 8 128 (b - 1) + (1 - f) b mean(Y0)   (the mean over the
 *                  output's Y0 channel: contrast blends with the output's mean grey)
 *   chroma         times b f s (0 under grayscale), then each frequency's (Cb, Cr)
 *                  pair rotated by 2 pi h.
 * Everything per channel is folded into the scale/offset the operator applies while it
 * writes the cube (jf_photo_fold), so brightness, saturation and grayscale cost nothing;
 * what is left (contrast's Y0 mean, the rotation) is one pass over those channels
 * (jf_photo_finish).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "jf_core.h"

/* DC of an 8x8 block of constant level-shifted value c: 8 c; JPEG's level shift 128. */
#define JF_DC_GAIN 8.0
#define JF_LEVEL 128.0

int jf_photo_check(const double p[JF_PHOTO_N], jf_status *st)
{
    static const char *names[3] = {"brightness", "contrast", "saturation"};
    int i;
    for (i = 0; i < JF_PHOTO_N; i++)
        if (!isfinite(p[i])) {
            snprintf(st->msg, JF_MSG_LEN, "photometric value %d must be finite", i);
            st->kind = JF_ERR_ARG;
            return -1;
        }
    for (i = 0; i < 3; i++)
        if (p[i] < 0) {
            snprintf(st->msg, JF_MSG_LEN, "photometric %s must be >= 0, got %g", names[i], p[i]);
            st->kind = JF_ERR_ARG;
            return -1;
        }
    if (p[3] < -0.5 || p[3] > 0.5) {
        snprintf(st->msg, JF_MSG_LEN, "photometric hue must be within [-0.5, 0.5], got %g", p[3]);
        st->kind = JF_ERR_ARG;
        return -1;
    }
    if (p[4] != 0.0 && p[4] != 1.0) {
        snprintf(st->msg, JF_MSG_LEN, "photometric grayscale must be 0 or 1, got %g", p[4]);
        st->kind = JF_ERR_ARG;
        return -1;
    }
    return 0;
}

int jf_photo_fold(const double p[JF_PHOTO_N], int nch, const int *comp, const int *k,
                  const float *scale, const float *offset, float *sc, float *of,
                  jf_photo_post *post, jf_status *st)
{
    double b = p[0], f = p[1], s = p[2], h = p[3];
    int gray = p[4] != 0.0, i, j;
    unsigned char paired[JF_MAX_CHANNELS];
    double gy = b * f, gc = gray ? 0.0 : b * f * s;
    int rotate = h != 0.0 && gc != 0.0;

    if (jf_photo_check(p, st) != 0 || jf_channels_check(nch, comp, k, st) != 0)
        return -1;
    memset(post, 0, sizeof(*post));
    for (i = 0; i < nch; i++) {
        double s0 = scale ? scale[i] : 1.0, o0 = offset ? offset[i] : 0.0;
        if (comp[i] == 0) {
            sc[i] = (float)(s0 * gy);
            of[i] = (float)o0;
            if (k[i] == 0) {
                double shift = JF_DC_GAIN * JF_LEVEL * (b - 1.0);
                if (f != 1.0) {        /* raw Y0: jf_photo_finish needs its mean */
                    int n = post->nydc++;  /* < 64: jf_channels_check */
                    post->ydc[n] = i;
                    post->dc_g[n] = s0 * gy;
                    post->dc_c0[n] = shift * s0 + o0;
                    post->dc_c1[n] = (1.0 - f) * b * s0;
                    sc[i] = 1.0f;
                    of[i] = 0.0f;
                } else
                    of[i] = (float)(shift * s0 + o0);
            }
        } else if (!rotate) {
            sc[i] = (float)(s0 * gc);
            of[i] = (float)o0;
        }
    }
    if (!rotate)
        return 0;
    /* the operator writes z = gc * raw for each chroma channel; the pass rotates the
     * pairs and normalises: out_b = sb (c z_b - s z_r) + ob, out_r = sr (s z_b + c z_r) + or */
    memset(paired, 0, sizeof(paired));
    post->cos_h = cos(2.0 * M_PI * h);
    post->sin_h = sin(2.0 * M_PI * h);
    for (i = 0; i < nch; i++) {
        if (comp[i] == 0)
            continue;
        sc[i] = (float)gc;
        of[i] = 0.0f;
        if (comp[i] != 1)
            continue;
        /* each Cr channel pairs once (a request may repeat a channel) */
        for (j = 0; j < nch && !(comp[j] == 2 && k[j] == k[i] && !paired[j]); j++) {}
        if (j == nch)
            break;      /* no partner (pairs < 64: jf_channels_check) */
        paired[j] = 1;
        post->cb[post->npairs] = i;
        post->cr[post->npairs] = j;
        post->sb[post->npairs] = scale ? scale[i] : 1.0f;
        post->ob[post->npairs] = offset ? offset[i] : 0.0f;
        post->sr[post->npairs] = scale ? scale[j] : 1.0f;
        post->orr[post->npairs] = offset ? offset[j] : 0.0f;
        post->npairs++;
    }
    {
        int ncb = 0, ncr = 0;
        for (j = 0; j < nch; j++) {
            ncb += comp[j] == 1;
            ncr += comp[j] == 2;
        }
        if (i < nch || ncb != post->npairs || ncr != post->npairs) {
            snprintf(st->msg, JF_MSG_LEN,
                     "a hue rotation needs Cb and Cr channels of the same frequencies");
            st->kind = JF_ERR_ARG;
            return -1;
        }
    }
    return 0;
}

void jf_photo_finish(const jf_photo_post *post, float *cube, size_t plane)
{
    size_t e;
    int n;
    for (n = 0; n < post->nydc; n++) {
        float *y = cube + (size_t)post->ydc[n] * plane;
        double sum = 0.0;
        float g = (float)post->dc_g[n], c;
        for (e = 0; e < plane; e++)
            sum += y[e];
        c = (float)(post->dc_c0[n] + post->dc_c1[n] * (plane ? sum / (double)plane : 0.0));
        for (e = 0; e < plane; e++)
            y[e] = y[e] * g + c;
    }
    for (n = 0; n < post->npairs; n++) {
        float *zb = cube + (size_t)post->cb[n] * plane, *zr = cube + (size_t)post->cr[n] * plane;
        float co = (float)post->cos_h, si = (float)post->sin_h;
        float sb = post->sb[n], ob = post->ob[n], sr = post->sr[n], orr = post->orr[n];
        for (e = 0; e < plane; e++) {
            float u = zb[e], v = zr[e];
            zb[e] = sb * (co * u - si * v) + ob;
            zr[e] = sr * (si * u + co * v) + orr;
        }
    }
}
