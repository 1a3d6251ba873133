// CGossipKernels: the CPU-feature check and the AVX2/FMA GEMM micro-kernel of GossipML, and
// the hardware CRC-32 of GossipWire's frame checksums.
//
// Only these live in C: Swift cannot compile one function for AVX2/FMA while the rest of
// the module stays portable, and C can (`__attribute__((target("avx2,fma")))`). GossipML
// calls the AVX2 kernel only after `gossip_cpu_has_avx2_fma()` said yes, so the library runs
// on any x86_64 CPU (and any other architecture, where the AVX2 kernel does not exist).
#ifndef CGOSSIPKERNELS_H
#define CGOSSIPKERNELS_H

#include <stddef.h>
#include <stdint.h>

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

/// 1 when `gossip_crc32_hw` may be called on this CPU: x86_64 with PCLMULQDQ and SSE4.1
/// (CPUID.1:ECX bits 1 and 19), or AArch64 with the CRC32 extension (HWCAP_CRC32); else 0.
/// Computed once; cheap to call.
int gossip_crc32_hw_available(void);

/// CRC-32 (zlib's: IEEE 802.3 polynomial 0x04C11DB7, reflected, init and xorout 0xFFFFFFFF)
/// of `len` bytes at `buf`, continuing from `crc` (the value zlib's `crc32` returned for the
/// bytes before; 0 to start). Same result as zlib `crc32(crc, buf, len)` for every input.
/// x86_64: 4-way PCLMULQDQ folding of 64-byte blocks (Intel, "Fast CRC Computation for
/// Generic Polynomials Using PCLMULQDQ Instruction", 2009, with the reflected constants
/// Chromium's zlib and Linux's crc32-pclmul use) and a bytewise table for the < 16-byte
/// rest and inputs under 64 bytes; AArch64: `crc32x`/`crc32b`.
/// Precondition: `gossip_crc32_hw_available()` returned 1.
uint32_t gossip_crc32_hw(uint32_t crc, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif

#include "gossip_convert.h"
