// See include/CGossipAEAD.h: thin calls into swift-crypto's BoringSSL (EVP_AEAD, RFC 5116).
#include "CGossipAEAD.h"

// The declarations of <openssl/aead.h> (BoringSSL) under swift-crypto's symbol prefix.
typedef struct evp_aead_st EVP_AEAD;
typedef struct evp_aead_ctx_st EVP_AEAD_CTX;
extern const EVP_AEAD *CCryptoBoringSSL_EVP_aead_aes_256_gcm(void);
extern EVP_AEAD_CTX *CCryptoBoringSSL_EVP_AEAD_CTX_new(const EVP_AEAD *aead, const uint8_t *key, size_t key_len, size_t tag_len);
extern void CCryptoBoringSSL_EVP_AEAD_CTX_free(EVP_AEAD_CTX *ctx);
extern int CCryptoBoringSSL_EVP_AEAD_CTX_seal(const EVP_AEAD_CTX *ctx, uint8_t *out, size_t *out_len, size_t max_out_len,
                                              const uint8_t *nonce, size_t nonce_len, const uint8_t *in, size_t in_len,
                                              const uint8_t *ad, size_t ad_len);
extern int CCryptoBoringSSL_EVP_AEAD_CTX_open(const EVP_AEAD_CTX *ctx, uint8_t *out, size_t *out_len, size_t max_out_len,
                                              const uint8_t *nonce, size_t nonce_len, const uint8_t *in, size_t in_len,
                                              const uint8_t *ad, size_t ad_len);

void *gossip_aesgcm_new(const uint8_t *key32) {
    return CCryptoBoringSSL_EVP_AEAD_CTX_new(CCryptoBoringSSL_EVP_aead_aes_256_gcm(), key32, 32, 16);
}

void gossip_aesgcm_free(void *ctx) {
    CCryptoBoringSSL_EVP_AEAD_CTX_free((EVP_AEAD_CTX *)ctx);
}

int gossip_aesgcm_seal(const void *ctx, uint8_t *out, const uint8_t nonce[12], const uint8_t *in, size_t in_len,
                       const uint8_t *ad, size_t ad_len) {
    size_t out_len = 0;
    int ok = CCryptoBoringSSL_EVP_AEAD_CTX_seal((const EVP_AEAD_CTX *)ctx, out, &out_len, in_len + 16, nonce, 12,
                                                in, in_len, ad, ad_len);
    return ok == 1 && out_len == in_len + 16;
}

int gossip_aesgcm_open(const void *ctx, uint8_t *out, const uint8_t nonce[12], const uint8_t *in, size_t in_len,
                       const uint8_t *ad, size_t ad_len) {
    if (in_len < 16) return 0;
    size_t out_len = 0;
    int ok = CCryptoBoringSSL_EVP_AEAD_CTX_open((const EVP_AEAD_CTX *)ctx, out, &out_len, in_len - 16, nonce, 12,
                                                in, in_len, ad, ad_len);
    return ok == 1 && out_len == in_len - 16;
}
