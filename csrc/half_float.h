/* float16 / bfloat16 <-> float32 conversions, written so the compiler can vectorise the
 * reduction loops that use them. Without _Float16, float16 follows F. Giesen's public-domain method (exact
 * widening; narrowing rounds to nearest even, handles subnormals, inf and NaN). */
#ifndef RINGTRAIN_HALF_FLOAT_H
#define RINGTRAIN_HALF_FLOAT_H
#include <stdint.h>
#include <string.h>

typedef union { uint32_t u; float f; } rt_f32_bits;

#if defined(__FLT16_MANT_DIG__) && (defined(__x86_64__) || defined(__aarch64__))
/* The compiler's _Float16: in the x86-64-v3 clone of the kernels (see reduce_kernels.c) these
 * become F16C vcvtph2ps/vcvtps2ph and vectorise; elsewhere libgcc converts, still exactly. */
static inline float rt_f16_to_f32(uint16_t h) {
    _Float16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

static inline uint16_t rt_f32_to_f16(float value) {
    _Float16 v = (_Float16)value;
    uint16_t h;
    memcpy(&h, &v, sizeof h);
    return h;
}
#else
static inline float rt_f16_to_f32(uint16_t h) {
    const rt_f32_bits magic = {(254u - 15u) << 23};
    const rt_f32_bits was_inf_nan = {(127u + 16u) << 23};
    rt_f32_bits o;
    o.u = (uint32_t)(h & 0x7fffu) << 13;  /* exponent and mantissa into place */
    o.f *= magic.f;                        /* rebias the exponent, renormalise subnormals */
    if (o.f >= was_inf_nan.f) o.u |= 255u << 23;
    o.u |= (uint32_t)(h & 0x8000u) << 16;
    return o.f;
}

static inline uint16_t rt_f32_to_f16(float value) {
    const uint32_t f32_inf = 255u << 23;
    const uint32_t f16_overflow = (127u + 16u) << 23;
    const rt_f32_bits denorm_magic = {((127u - 15u) + (23u - 10u) + 1u) << 23};
    rt_f32_bits f;
    f.f = value;
    uint32_t sign = f.u & 0x80000000u;
    uint16_t o;
    f.u ^= sign;
    if (f.u >= f16_overflow) {
        o = (f.u > f32_inf) ? 0x7e00 : 0x7c00;  /* NaN stays NaN, everything else saturates to inf */
    } else if (f.u < (113u << 23)) {
        /* result is subnormal: let the FPU's round-to-nearest-even do the shifting */
        f.f += denorm_magic.f;
        o = (uint16_t)(f.u - denorm_magic.u);
    } else {
        uint32_t mantissa_odd = (f.u >> 13) & 1u;
        f.u += ((uint32_t)(15 - 127) << 23) + 0xfffu; /* rebias and round half up ... */
        f.u += mantissa_odd;                         /* ... then make ties go to even */
        o = (uint16_t)(f.u >> 13);
    }
    return (uint16_t)(o | (sign >> 16));
}
#endif

static inline float rt_bf16_to_f32(uint16_t h) {
    rt_f32_bits o;
    o.u = (uint32_t)h << 16;
    return o.f;
}

static inline uint16_t rt_f32_to_bf16(float value) {
    rt_f32_bits f;
    f.f = value;
    if ((f.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((f.u >> 16) | 0x0040u); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((f.u >> 16) & 1u);  /* round to nearest, ties to even */
    return (uint16_t)((f.u + rounding) >> 16);
}

#endif
