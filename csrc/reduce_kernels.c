/* Element-wise reduction kernels shared by every collective algorithm.
 *
 * Each (dtype, op) pair is a plain loop over restrict-qualified pointers so GCC vectorises it;
 * on x86-64 the entry points are also compiled for x86-64-v3 (AVX2, FMA, F16C) and picked at load
 * time (target_clones),
 * so one wheel runs everywhere and still uses wide vectors where the CPU has them.
 * float16 and bfloat16 are widened to float32 for each operation and rounded once when stored:
 * the wire keeps carrying 16-bit values while every partial result is computed in float32.
 * Integer Sum and Product wrap around like numpy (computed in the unsigned type). */
#include "ringtrain.h"
#include "half_float.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RT_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RT_MULTIVERSION
#endif

size_t rt_dtype_size(rt_dtype dtype) {
    switch (dtype) {
    case RT_FLOAT16: case RT_BFLOAT16: case RT_INT16: return 2;
    case RT_FLOAT32: case RT_INT32: return 4;
    case RT_FLOAT64: case RT_INT64: return 8;
    case RT_INT8: case RT_UINT8: case RT_BOOL: return 1;
    default: return 0;
    }
}

/* Binary operators per kind of element. NaN propagates through Min/Max as in numpy.
 * Min and Max must give bitwise the same answer for (a, b) and (b, a): recursive doubling has
 * both partners reduce the same pair in opposite orders. The only equal-but-different values
 * are -0.0 and +0.0, so ties go by sign: Min prefers -0.0, Max prefers +0.0. */
#define FLOAT_MIN(a, b) (((a) < (b) || (a) != (a) || ((a) == (b) && __builtin_signbit(a))) ? (a) : (b))
#define FLOAT_MAX(a, b) (((a) > (b) || (a) != (a) || ((a) == (b) && !__builtin_signbit(a))) ? (a) : (b))
#define FLOAT_SUM(a, b) ((a) + (b))
#define FLOAT_PROD(a, b) ((a) * (b))
#define WRAP_SUM(U, a, b) ((U)(a) + (U)(b))
#define WRAP_PROD(U, a, b) ((U)(a) * (U)(b))
#define INT_MIN_OF(a, b) ((a) < (b) ? (a) : (b))
#define INT_MAX_OF(a, b) ((a) > (b) ? (a) : (b))

/* One loop per (type, expression): in place (x op= y) and into a third buffer (z = x op y). */
#define LOOP_INPLACE(T, EXPR)                                                       \
    do {                                                                            \
        T *restrict x_ = (T *)inout;                                                \
        const T *restrict y_ = (const T *)in;                                       \
        for (size_t i = 0; i < count; i++) { T a = x_[i], b = y_[i]; x_[i] = (T)(EXPR); } \
    } while (0)
#define LOOP_INTO(T, EXPR)                                                          \
    do {                                                                            \
        T *restrict z_ = (T *)out;                                                  \
        const T *restrict x_ = (const T *)a_in;                                     \
        const T *restrict y_ = (const T *)b_in;                                     \
        for (size_t i = 0; i < count; i++) { T a = x_[i], b = y_[i]; z_[i] = (T)(EXPR); } \
    } while (0)

#define HALF(EXPR_F, TO, FROM) TO(EXPR_F(FROM(a), FROM(b)))

/* The dispatch over (dtype, op), written once and instantiated for both loop shapes. */
#define DISPATCH(LOOP)                                                                      \
    switch (dtype) {                                                                        \
    case RT_FLOAT32:                                                                        \
        switch (op) {                                                                       \
        case RT_MIN: LOOP(float, FLOAT_MIN(a, b)); return;                                  \
        case RT_MAX: LOOP(float, FLOAT_MAX(a, b)); return;                                  \
        case RT_PRODUCT: LOOP(float, FLOAT_PROD(a, b)); return;                             \
        default: LOOP(float, FLOAT_SUM(a, b)); return;                                      \
        }                                                                                   \
    case RT_FLOAT64:                                                                        \
        switch (op) {                                                                       \
        case RT_MIN: LOOP(double, FLOAT_MIN(a, b)); return;                                 \
        case RT_MAX: LOOP(double, FLOAT_MAX(a, b)); return;                                 \
        case RT_PRODUCT: LOOP(double, FLOAT_PROD(a, b)); return;                            \
        default: LOOP(double, FLOAT_SUM(a, b)); return;                                     \
        }                                                                                   \
    case RT_FLOAT16:                                                                        \
        switch (op) {                                                                       \
        case RT_MIN: LOOP(uint16_t, HALF(FLOAT_MIN, rt_f32_to_f16, rt_f16_to_f32)); return; \
        case RT_MAX: LOOP(uint16_t, HALF(FLOAT_MAX, rt_f32_to_f16, rt_f16_to_f32)); return; \
        case RT_PRODUCT: LOOP(uint16_t, HALF(FLOAT_PROD, rt_f32_to_f16, rt_f16_to_f32)); return; \
        default: LOOP(uint16_t, HALF(FLOAT_SUM, rt_f32_to_f16, rt_f16_to_f32)); return;     \
        }                                                                                   \
    case RT_BFLOAT16:                                                                       \
        switch (op) {                                                                       \
        case RT_MIN: LOOP(uint16_t, HALF(FLOAT_MIN, rt_f32_to_bf16, rt_bf16_to_f32)); return; \
        case RT_MAX: LOOP(uint16_t, HALF(FLOAT_MAX, rt_f32_to_bf16, rt_bf16_to_f32)); return; \
        case RT_PRODUCT: LOOP(uint16_t, HALF(FLOAT_PROD, rt_f32_to_bf16, rt_bf16_to_f32)); return; \
        default: LOOP(uint16_t, HALF(FLOAT_SUM, rt_f32_to_bf16, rt_bf16_to_f32)); return;   \
        }                                                                                   \
    case RT_INT8: INTEGER_CASES(LOOP, int8_t, uint8_t)                                      \
    case RT_INT16: INTEGER_CASES(LOOP, int16_t, uint16_t)                                   \
    case RT_INT32: INTEGER_CASES(LOOP, int32_t, uint32_t)                                   \
    case RT_INT64: INTEGER_CASES(LOOP, int64_t, uint64_t)                                   \
    case RT_UINT8: INTEGER_CASES(LOOP, uint8_t, uint8_t)                                    \
    case RT_BOOL: /* Sum/Max = logical or, Product/Min = logical and */                     \
        switch (op) {                                                                       \
        case RT_MIN: case RT_PRODUCT: LOOP(uint8_t, a & b); return;                         \
        default: LOOP(uint8_t, a | b); return;                                              \
        }                                                                                   \
    default: return;                                                                        \
    }

#define INTEGER_CASES(LOOP, T, U)                              \
    switch (op) {                                              \
    case RT_MIN: LOOP(T, INT_MIN_OF(a, b)); return;            \
    case RT_MAX: LOOP(T, INT_MAX_OF(a, b)); return;            \
    case RT_PRODUCT: LOOP(T, WRAP_PROD(U, a, b)); return;      \
    default: LOOP(T, WRAP_SUM(U, a, b)); return;               \
    }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define RT_HAVE_F16C_PATH 1
/* GCC does not vectorise _Float16 conversions, so float16 gets an explicit 8-wide F16C loop:
 * widen, operate in float32, round to nearest even once. out may equal a (each vector is
 * loaded before it is stored). Selected at run time on CPUs that have F16C and AVX2. */
#define F16C_LOOP(EXPR)                                                                       \
    for (; i + 8 <= count; i += 8) {                                                          \
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i)));                \
        __m256 y = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i)));                \
        __m256 z = (EXPR);                                                                    \
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(z, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); \
    }
/* NaN-propagating min/max, as FLOAT_MIN/FLOAT_MAX: take x where x wins or x is NaN; on a tie
 * take x|y for min (-0.0 if either is) and x&y for max (+0.0 unless both are -0.0). */
#define F16C_PICK(CMP, TIE)                                                                        \
    _mm256_blendv_ps(_mm256_blendv_ps(y, x, _mm256_or_ps(_mm256_cmp_ps(x, y, CMP), _mm256_cmp_ps(x, x, _CMP_UNORD_Q))), \
                     TIE(x, y), _mm256_cmp_ps(x, y, _CMP_EQ_OQ))

__attribute__((target("avx2,f16c"))) static void float16_f16c(uint16_t *out, const uint16_t *a, const uint16_t *b,
                                                              size_t count, rt_op op) {
    size_t i = 0;
    switch (op) {
    case RT_MIN: F16C_LOOP(F16C_PICK(_CMP_LT_OQ, _mm256_or_ps)) break;
    case RT_MAX: F16C_LOOP(F16C_PICK(_CMP_GT_OQ, _mm256_and_ps)) break;
    case RT_PRODUCT: F16C_LOOP(_mm256_mul_ps(x, y)) break;
    default: F16C_LOOP(_mm256_add_ps(x, y)) break;
    }
    for (; i < count; i++) {
        float x = rt_f16_to_f32(a[i]), y = rt_f16_to_f32(b[i]);
        float z = op == RT_MIN ? FLOAT_MIN(x, y) : op == RT_MAX ? FLOAT_MAX(x, y) : op == RT_PRODUCT ? x * y : x + y;
        out[i] = rt_f32_to_f16(z);
    }
}

static int have_f16c(void) {
    static int known = -1;
    if (known < 0) known = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
    return known;
}
#endif

RT_MULTIVERSION
void rt_reduce_inplace(void *inout, const void *in, size_t count, rt_dtype dtype, rt_op op) {
#ifdef RT_HAVE_F16C_PATH
    if (dtype == RT_FLOAT16 && have_f16c()) { float16_f16c(inout, inout, in, count, op); return; }
#endif
    DISPATCH(LOOP_INPLACE)
}

RT_MULTIVERSION
void rt_reduce_into(void *out, const void *a_in, const void *b_in, size_t count, rt_dtype dtype, rt_op op) {
#ifdef RT_HAVE_F16C_PATH
    if (dtype == RT_FLOAT16 && have_f16c()) { float16_f16c(out, a_in, b_in, count, op); return; }
#endif
    DISPATCH(LOOP_INTO)
}

#define SCALE_LOOP(T, EXPR)                                                          \
    do {                                                                             \
        T *z_ = (T *)out; /* may alias in_ */                                        \
        const T *x_ = (const T *)in;                                                 \
        for (size_t i = 0; i < count; i++) { T a = x_[i]; z_[i] = (T)(EXPR); }      \
    } while (0)

RT_MULTIVERSION
void rt_scale(void *out, const void *in, size_t count, rt_dtype dtype, double factor) {
    const float f32 = (float)factor;
    switch (dtype) {
    case RT_FLOAT32: SCALE_LOOP(float, a * f32); return;
    case RT_FLOAT64: SCALE_LOOP(double, a * factor); return;
    case RT_FLOAT16: SCALE_LOOP(uint16_t, rt_f32_to_f16(rt_f16_to_f32(a) * f32)); return;
    case RT_BFLOAT16: SCALE_LOOP(uint16_t, rt_f32_to_bf16(rt_bf16_to_f32(a) * f32)); return;
    case RT_INT8: SCALE_LOOP(int8_t, (double)a * factor); return;
    case RT_INT16: SCALE_LOOP(int16_t, (double)a * factor); return;
    case RT_INT32: SCALE_LOOP(int32_t, (double)a * factor); return;
    case RT_INT64: SCALE_LOOP(int64_t, (double)a * factor); return;
    case RT_UINT8: SCALE_LOOP(uint8_t, (double)a * factor); return;
    case RT_BOOL: SCALE_LOOP(uint8_t, ((double)a * factor) != 0.0); return;
    default: return;
    }
}

void rt_divide_integers(void *out, size_t count, rt_dtype dtype, int64_t divisor) {
    const void *in = out;
    switch (dtype) {
    case RT_INT8: SCALE_LOOP(int8_t, a / divisor); return;
    case RT_INT16: SCALE_LOOP(int16_t, a / divisor); return;
    case RT_INT32: SCALE_LOOP(int32_t, a / divisor); return;
    case RT_INT64: SCALE_LOOP(int64_t, a / divisor); return;
    case RT_UINT8: SCALE_LOOP(uint8_t, a / divisor); return;
    default: return;
    }
}
