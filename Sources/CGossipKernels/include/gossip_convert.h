// Lossy wire encodings of float32 weights (Protocol/SPEC.md §6.5): float32 <-> bfloat16,
// IEEE binary16 and block-scaled int8. Plain loops the compiler vectorises, and F16C for
// binary16 on x86_64 CPUs that have it (picked at run time; the portable path gives the same
// bits for every non-NaN input). Every function reads and writes little-endian bytes and
// assumes a little-endian host (x86_64, arm64).
#ifndef GOSSIP_CONVERT_H
#define GOSSIP_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Elements per int8 block: each block is one float32 scale then up to this many int8 values.
#define GOSSIP_I8_BLOCK 256

/// float32 -> bfloat16 (upper 16 bits, round to nearest even; NaN stays NaN, quieted).
/// Returns how many outputs are not finite (a finite input may round to infinity).
size_t gossip_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
/// bfloat16 -> float32 (exact). Returns how many outputs are not finite.
size_t gossip_bf16_to_f32(const uint16_t *src, float *dst, size_t n);

/// float32 -> IEEE binary16, round to nearest even (subnormals kept; beyond 65519.99... -> inf).
/// Returns how many outputs are not finite.
size_t gossip_f32_to_f16(const float *src, uint16_t *dst, size_t n);
/// IEEE binary16 -> float32 (exact). Returns how many outputs are not finite.
size_t gossip_f16_to_f32(const uint16_t *src, float *dst, size_t n);

/// float32 -> block-scaled int8: per block of GOSSIP_I8_BLOCK values (the last may be
/// shorter) a little-endian float32 scale = maxabs / 127 (0 for an all-zero block), then
/// q = clamp(round_half_even(x / scale), -127, 127) per value (0 when scale is 0). `dst`
/// holds n + 4 * ceil(n / GOSSIP_I8_BLOCK) bytes (DType.byteCount in Swift). Returns how many inputs are not finite (the
/// encoding is then meaningless and must not be sent), plus 1 for each block whose maxabs
/// is so close to FLT_MAX that 127 × scale overflows.
size_t gossip_f32_to_i8(const float *src, uint8_t *dst, size_t n);
/// Block-scaled int8 -> float32: x = float32(q * scale). Returns (size_t)-1 when a scale has its
/// sign bit set (negative or -0), is NaN or infinite (nothing useful written), else how many outputs are not
/// finite (q * scale can overflow). `src` holds n + 4 * ceil(n / GOSSIP_I8_BLOCK) bytes.
size_t gossip_i8_to_f32(const uint8_t *src, float *dst, size_t n);

/// 1 when this CPU has F16C (and AVX, OS-enabled); always 0 off x86_64.
int gossip_cpu_has_f16c(void);

#ifdef __cplusplus
}
#endif

#endif
