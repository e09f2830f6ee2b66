/*  rf_sign — signed function URLs (docs/image.md, "Signed URLs").
 *
 *  A vhost with dims.signing keys accepts a function URL only with a
 *  signature in its query:
 *
 *    /photo.jpg/dims/resize/500x500?expires=1767225600&keyid=k2&sig=BASE64URL
 *
 *  sig = base64url, unpadded, of HMAC-SHA256(secret of keyid,
 *          PATH [ "?" REST ] "\n" EXPIRES)
 *  where PATH is the path as the gateway canonicalises it, REST the query
 *  without the expires, keyid and sig parameters (in their order), and
 *  EXPIRES the decimal unix time as written. Several keys may be valid at
 *  once (rotation: sign with the new one, retire the old one later).
 *  Verification is pure (no clock of its own, no I/O) for unit tests and
 *  fuzzing.
 */
#ifndef RF_SIGN_H
#define RF_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RF_SIGN_MAX_KEYS 16
#define RF_SIGN_ID_MAX 32

typedef struct {
    char id[RF_SIGN_ID_MAX];
    char *secret; /* at least 16 bytes (malloc'd by the config) */
} rf_sign_key_t;

typedef struct {
    rf_sign_key_t keys[RF_SIGN_MAX_KEYS];
    size_t n_keys; /* 0: signing off */
    bool required; /* unsigned URLs refused (default when keys are given) */
} rf_sign_conf_t;

/* Checks the signature of path[0..plen) with query[0..qlen) (no '?', may
 * be empty) at unix time `now`. On 0 (valid, or unsigned and not
 * required), rest[0..*rest_len) is the query without the signature
 * parameters (rest must hold qlen bytes). On -1 a one-line reason is in
 * why[why_len]. Nothing is allocated. */
int rf_sign_verify(const rf_sign_conf_t *c, const char *path, size_t plen, const char *query, size_t qlen, int64_t now,
                   char *rest, size_t *rest_len, char *why, size_t why_len);

/* The sig value (base64url, unpadded, NUL-terminated: out holds 44 bytes)
 * for path, rest query and expires, under `secret`. 0 or -1. */
int rf_sign_make(const char *secret, const char *path, size_t plen, const char *rest, size_t rlen, const char *expires,
                 char out[44]);

#endif
