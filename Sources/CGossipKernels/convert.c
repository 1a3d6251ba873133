// Lossy wire encodings of float32 weights; see gossip_convert.h and Protocol/SPEC.md §6.5.
// The loops are written branch-free where it matters so that clang vectorises them (-O2,
// also in debug builds of this target, see Package.swift).

#include "gossip_convert.h"
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// MARK: bfloat16

// Counters are 32-bit within chunks of CHUNK values so that the loops vectorise 4 or 8 wide.
#define CHUNK 65536

size_t gossip_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    size_t bad = 0;
    for (size_t c = 0; c < n; c += CHUNK) {
        size_t end = n - c < CHUNK ? n : c + CHUNK;
        uint32_t b = 0;
        for (size_t i = c; i < end; i++) {
            uint32_t u = f2u(src[i]);
            uint32_t a = u & 0x7fffffffu;
            uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);   // round to nearest even
            uint32_t nan = u | 0x00400000u;                      // quiet NaN, sign and payload kept
            uint32_t r = a > 0x7f800000u ? nan : rounded;
            dst[i] = (uint16_t)(r >> 16);
            b += ((r & 0x7f800000u) == 0x7f800000u);
        }
        bad += b;
    }
    return bad;
}

size_t gossip_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    size_t bad = 0;
    for (size_t c = 0; c < n; c += CHUNK) {
        size_t end = n - c < CHUNK ? n : c + CHUNK;
        uint32_t b = 0;
        for (size_t i = c; i < end; i++) {
            uint32_t u = (uint32_t)src[i] << 16;
            dst[i] = u2f(u);
            b += ((u & 0x7f800000u) == 0x7f800000u);
        }
        bad += b;
    }
    return bad;
}

// MARK: binary16

// Round to nearest even (F. Giesen's float_to_half_fast3_rtne); NaN as F16C makes it.
static inline uint16_t f32_to_f16_one(float f) {
    uint32_t u = f2u(f);
    uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint32_t o;
    if (u >= (uint32_t)(127 + 16) << 23) {                  // >= 65536: inf, or NaN
        o = u > 0x7f800000u ? (0x7e00u | ((u >> 13) & 0x3ffu)) : 0x7c00u;
    } else if (u < (uint32_t)113 << 23) {                    // below 2^-14: subnormal or zero
        float g = u2f(u) + 0.5f;                             // adds 2^-1: ulp 2^-24 = f16's subnormal step
        o = f2u(g) - 0x3f000000u;
    } else {
        uint32_t odd = (u >> 13) & 1u;
        u += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
        o = u >> 13;                                        // may carry into inf (>= 65520)
    }
    return (uint16_t)(o | (sign >> 16));
}

static inline float f16_to_f32_one(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) return u2f(f2u((float)m * 5.9604644775390625e-8f) | sign);   // m * 2^-24, exact
    if (e == 31) return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e + 112u) << 23) | (m << 13));
}

#if defined(__x86_64__)
int gossip_cpu_has_f16c(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    const unsigned int f16c = 1u << 29, osxsave = 1u << 27, avx = 1u << 28;
    if ((ecx & (f16c | osxsave | avx)) != (f16c | osxsave | avx)) return 0;
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 6u) == 6u;
}

static int f16c_state = -1;   // benign race: every thread computes the same value

static int have_f16c(void) {
    int s = __atomic_load_n(&f16c_state, __ATOMIC_RELAXED);
    if (s < 0) { s = gossip_cpu_has_f16c(); __atomic_store_n(&f16c_state, s, __ATOMIC_RELAXED); }
    return s;
}

__attribute__((target("avx,f16c")))
static size_t f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0, bad = 0;
    const __m128i expmask = _mm_set1_epi16(0x7c00);
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(dst + i), h);
        __m128i isbad = _mm_cmpeq_epi16(_mm_and_si128(h, expmask), expmask);
        bad += (size_t)__builtin_popcount((unsigned)_mm_movemask_epi8(isbad)) / 2;
    }
    for (; i < n; i++) {
        dst[i] = f32_to_f16_one(src[i]);
        bad += ((dst[i] & 0x7c00u) == 0x7c00u);
    }
    return bad;
}

__attribute__((target("avx,f16c")))
static size_t f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0, bad = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
        __m128i e = _mm_and_si128(h, _mm_set1_epi16(0x7c00));
        __m128i isbad = _mm_cmpeq_epi16(e, _mm_set1_epi16(0x7c00));
        bad += (size_t)__builtin_popcount((unsigned)_mm_movemask_epi8(isbad)) / 2;
    }
    for (; i < n; i++) {
        dst[i] = f16_to_f32_one(src[i]);
        bad += ((src[i] & 0x7c00u) == 0x7c00u);
    }
    return bad;
}
#else
int gossip_cpu_has_f16c(void) { return 0; }
#endif

size_t gossip_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
#if defined(__x86_64__)
    if (have_f16c()) return f32_to_f16_f16c(src, dst, n);
#endif
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        dst[i] = f32_to_f16_one(src[i]);
        bad += ((dst[i] & 0x7c00u) == 0x7c00u);
    }
    return bad;
}

size_t gossip_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
#if defined(__x86_64__)
    if (have_f16c()) return f16_to_f32_f16c(src, dst, n);
#endif
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        dst[i] = f16_to_f32_one(src[i]);
        bad += ((src[i] & 0x7c00u) == 0x7c00u);
    }
    return bad;
}

// MARK: block-scaled int8

size_t gossip_f32_to_i8(const float *src, uint8_t *dst, size_t n) {
    size_t bad = 0;
    for (size_t b = 0; b < n; b += GOSSIP_I8_BLOCK) {
        size_t len = n - b < GOSSIP_I8_BLOCK ? n - b : GOSSIP_I8_BLOCK;
        const float *x = src + b;
        // |x| as bits: for non-negative floats the bit patterns order as the values do.
        uint32_t maxbits = 0, nonfinite = 0;
        for (size_t i = 0; i < len; i++) {
            uint32_t a = f2u(x[i]) & 0x7fffffffu;
            nonfinite += (a >= 0x7f800000u);
            maxbits = a > maxbits ? a : maxbits;
        }
        float maxabs = u2f(maxbits);
        float scale = maxabs / 127.0f;
        bad += nonfinite;
        bad += !nonfinite && (f2u(127.0f * scale) & 0x7f800000u) == 0x7f800000u;   // maxabs near FLT_MAX: q * scale overflows
        memcpy(dst, &scale, 4);
        int8_t *q = (int8_t *)(dst + 4);
        if (scale == 0.0f || nonfinite) {
            memset(q, 0, len);
        } else {
            // round_half_even(y) for |y| < 2^22: (y + 1.5*2^23) - 1.5*2^23 in float32.
            const float magic = 12582912.0f;
            for (size_t i = 0; i < len; i++) {
                float y = x[i] / scale;
                float r = (y + magic) - magic;
                r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
                q[i] = (int8_t)(int32_t)r;
            }
        }
        dst += 4 + len;
    }
    return bad;
}

size_t gossip_i8_to_f32(const uint8_t *src, float *dst, size_t n) {
    size_t bad = 0;
    for (size_t b = 0; b < n; b += GOSSIP_I8_BLOCK) {
        size_t len = n - b < GOSSIP_I8_BLOCK ? n - b : GOSSIP_I8_BLOCK;
        float scale;
        memcpy(&scale, src, 4);
        uint32_t su = f2u(scale);
        if (su >= 0x7f800000u) return (size_t)-1;            // sign bit set (also -0), NaN or infinite
        const int8_t *q = (const int8_t *)(src + 4);
        float *y = dst + b;
        uint32_t nf = 0;
        for (size_t i = 0; i < len; i++) {
            float v = (float)q[i] * scale;
            y[i] = v;
            nf += ((f2u(v) & 0x7f800000u) == 0x7f800000u);
        }
        bad += nf;
        src += 4 + len;
    }
    return bad;
}
