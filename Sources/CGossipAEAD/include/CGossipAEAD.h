// AES-256-GCM sealing and opening into caller memory, straight on the BoringSSL that
// apple/swift-crypto builds and links (its symbols carry the prefix `CCryptoBoringSSL_`).
// swift-crypto's public API returns every result in a fresh `Data` and copies the
// ciphertext twice more (SealedBox), which costs as much as the cipher itself on 64 KiB
// records; the record layer needs seal/open into its own buffers. GossipSecure verifies this
// path against swift-crypto's public API once per process (`FastAESGCM.selfTest`) and falls
// back to the public API if they ever disagree. If a swift-crypto release renamed the
// symbols, linking fails loudly: then delete this target and the fallback is the only path.
#ifndef CGOSSIP_AEAD_H
#define CGOSSIP_AEAD_H
#include <stddef.h>
#include <stdint.h>

/// A keyed AES-256-GCM context (16-byte tags); NULL on failure. Free with gossip_aesgcm_free.
void *gossip_aesgcm_new(const uint8_t *key32);
void gossip_aesgcm_free(void *ctx);

/// Seals `in_len` bytes at `in` into `out` (in_len + 16 bytes: ciphertext then tag) with a
/// 12-byte nonce and associated data; returns 1 on success. `ctx` is only read: several
/// threads may seal with one context at once.
int gossip_aesgcm_seal(const void *ctx, uint8_t *out, const uint8_t nonce[12], const uint8_t *in, size_t in_len,
                       const uint8_t *ad, size_t ad_len);

/// Opens `in_len` bytes (ciphertext then 16-byte tag) into `out` (in_len - 16 bytes);
/// returns 1 when the tag verifies, 0 otherwise (then `out` holds no plaintext: BoringSSL
/// clears it).
int gossip_aesgcm_open(const void *ctx, uint8_t *out, const uint8_t nonce[12], const uint8_t *in, size_t in_len,
                       const uint8_t *ad, size_t ad_len);

#endif
