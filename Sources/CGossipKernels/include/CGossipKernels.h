// CGossipKernels: the CPU-feature check and the AVX2/FMA GEMM micro-kernel of GossipML.
//
// Only these two live in C: Swift cannot compile one function for AVX2/FMA while the rest of
// the module stays portable, and C can (`__attribute__((target("avx2,fma")))`). GossipML
// calls the AVX2 kernel only after `gossip_cpu_has_avx2_fma()` said yes, so the library runs
// on any x86_64 CPU (and any other architecture, where the AVX2 kernel does not exist).
#ifndef CGOSSIPKERNELS_H
#define CGOSSIPKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when this CPU and OS run AVX2 and FMA instructions (CPUID AVX, AVX2, FMA, OSXSAVE and
/// XCR0 saving the YMM state), else 0. Always 0 off x86_64.
int gossip_cpu_has_avx2_fma(void);

#if defined(__x86_64__)
/// C[rows, cols] = A panel (6 x k, element (r, p) at pa[p*6 + r]) times B panel (k x 16,
/// element (p, j) at pb[p*16 + j]); row r of C starts at c + r*ldc; only rows x cols floats
/// (rows <= 6, cols <= 16) are written. Each accumulator step is one fused multiply-add
/// (`vfmadd`), p in order 0 ..< k. Precondition: the CPU has AVX2 and FMA.
void gossip_gemm_microkernel_6x16_avx2_fma(ptrdiff_t k, const float *pa, const float *pb,
                                           float *c, ptrdiff_t ldc, ptrdiff_t rows, ptrdiff_t cols);
#endif

#ifdef __cplusplus
}
#endif

#endif

#include "gossip_convert.h"
