// CPU feature detection (cpuid + xgetbv) and the AVX2/FMA GEMM micro-kernel; see the header.

#include "CGossipKernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

int gossip_cpu_has_avx2_fma(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    const unsigned int fma = 1u << 12, osxsave = 1u << 27, avx = 1u << 28;
    if ((ecx & (fma | osxsave | avx)) != (fma | osxsave | avx)) return 0;
    // XCR0 bits 1 (SSE state) and 2 (AVX state): the OS saves YMM registers on context switch.
    unsigned int xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    (void)xcr0_hi;
    if ((xcr0_lo & 6u) != 6u) return 0;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    return (ebx & (1u << 5)) ? 1 : 0;  // AVX2
}

#define ROW(r)                                              \
    a = _mm256_broadcast_ss(pa + (r));                      \
    c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0);              \
    c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);

__attribute__((target("avx2,fma")))
void gossip_gemm_microkernel_6x16_avx2_fma(ptrdiff_t k, const float *pa, const float *pb,
                                           float *c, ptrdiff_t ldc, ptrdiff_t rows, ptrdiff_t cols) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (ptrdiff_t p = 0; p < k; p++) {
        const __m256 b0 = _mm256_loadu_ps(pb), b1 = _mm256_loadu_ps(pb + 8);
        __m256 a;
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
        pa += 6;
        pb += 16;
    }
    if (rows == 6 && cols == 16) {
        _mm256_storeu_ps(c, c00);           _mm256_storeu_ps(c + 8, c01);
        _mm256_storeu_ps(c + ldc, c10);     _mm256_storeu_ps(c + ldc + 8, c11);
        _mm256_storeu_ps(c + 2 * ldc, c20); _mm256_storeu_ps(c + 2 * ldc + 8, c21);
        _mm256_storeu_ps(c + 3 * ldc, c30); _mm256_storeu_ps(c + 3 * ldc + 8, c31);
        _mm256_storeu_ps(c + 4 * ldc, c40); _mm256_storeu_ps(c + 4 * ldc + 8, c41);
        _mm256_storeu_ps(c + 5 * ldc, c50); _mm256_storeu_ps(c + 5 * ldc + 8, c51);
        return;
    }
    float t[6][16];
    _mm256_storeu_ps(t[0], c00); _mm256_storeu_ps(t[0] + 8, c01);
    _mm256_storeu_ps(t[1], c10); _mm256_storeu_ps(t[1] + 8, c11);
    _mm256_storeu_ps(t[2], c20); _mm256_storeu_ps(t[2] + 8, c21);
    _mm256_storeu_ps(t[3], c30); _mm256_storeu_ps(t[3] + 8, c31);
    _mm256_storeu_ps(t[4], c40); _mm256_storeu_ps(t[4] + 8, c41);
    _mm256_storeu_ps(t[5], c50); _mm256_storeu_ps(t[5] + 8, c51);
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t j = 0; j < cols; j++) c[r * ldc + j] = t[r][j];
}

#else

int gossip_cpu_has_avx2_fma(void) { return 0; }

#endif
