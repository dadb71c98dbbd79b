/*
 * jf_convert.c - a float32 cube to the loader's narrower batch types.
 *
 * float16: round to nearest, ties to even (IEEE 754 binary16, as torch's and
 * numpy's casts), infinities past the largest half, NaN kept NaN.  With F16C
 * on x86 (checked at run time) eight values per instruction, else a scalar
 * conversion by bit arithmetic.
 * int8: clipped to [-127, 127], then rounded to nearest, ties to even (as
 * numpy's rint), NaN to 0: a quantised cube whose step was folded into its
 * normalisation beforehand.  SSE2 (every x86-64) sixteen values at a time.
 *
 * Both run without the GIL (the binding calls them inside cube()'s one
 * release), on a cube that has just been written and is still in cache.
 */
#include <stdint.h>
#include <string.h>

#include "jf_core.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define JF_HAVE_F16C_PATH 1
#endif

static uint16_t half_of(float f)
{
    uint32_t x, ax, sign;
    memcpy(&x, &f, sizeof(x));
    sign = (x >> 16) & 0x8000u;
    ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);          /* NaN */
    if (ax >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00u);          /* rounds past 65504: infinity */
    if (ax < 0x38800000u) {
        /* below the smallest normal half (2^-14): in [0.5, 1) a float's last
         * mantissa bit is 2^-24, the subnormal half's step, so adding 0.5 rounds
         * to it (ties to even, the FPU's mode) */
        float a, b = 0.5f;
        uint32_t ab, bb;
        memcpy(&a, &ax, sizeof(a));
        a += b;
        memcpy(&ab, &a, sizeof(ab));
        memcpy(&bb, &b, sizeof(bb));
        return (uint16_t)(sign | (ab - bb));
    }
    /* normal: re-bias the exponent (127 -> 15) and round the 13 dropped bits,
     * ties to even (add half a step less one, plus the kept lowest bit) */
    ax += ((uint32_t)(15 - 127) << 23) + 0xfffu + ((ax >> 13) & 1u);
    return (uint16_t)(sign | (ax >> 13));
}

#ifdef JF_HAVE_F16C_PATH
__attribute__((target("avx,f16c")))
static void to_half_f16c(const float *x, uint16_t *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = half_of(x[i]);
}
#endif

void jf_to_half(const float *x, uint16_t *y, size_t n)
{
    size_t i;
#ifdef JF_HAVE_F16C_PATH
    if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx")) {
        to_half_f16c(x, y, n);
        return;
    }
#endif
    for (i = 0; i < n; i++)
        y[i] = half_of(x[i]);
}

void jf_to_int8(const float *x, int8_t *y, size_t n)
{
    /* 1.5 * 2^23: adding and taking it away rounds a float of magnitude under
     * 2^22 to an integer, ties to even, in the FPU's default mode (no -ffast-math
     * in this build) */
    const float magic = 12582912.0f;
    size_t i = 0;
#if defined(__SSE2__)
    /* sixteen at a time: NaN to 0 (masked by x == x), clip, convert in the
     * rounding mode (to nearest, ties to even), pack with saturation */
    const __m128 lo = _mm_set1_ps(-127.0f), hi = _mm_set1_ps(127.0f);
    for (; i + 16 <= n; i += 16) {
        __m128i q[4];
        int j;
        for (j = 0; j < 4; j++) {
            __m128 v = _mm_loadu_ps(x + i + 4 * j);
            v = _mm_and_ps(v, _mm_cmpord_ps(v, v));
            q[j] = _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(v, lo), hi));
        }
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm_packs_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3])));
    }
#endif
    for (; i < n; i++) {
        float v = x[i];
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        v = v == v ? v : 0.0f;
        y[i] = (int8_t)(int)((v + magic) - magic);
    }
}
