/*  gw_origin_tls — client TLS settings of https:// origins.
 *
 *  One SSL_CTX per distinct origin TLS setting: the CA file (or the system
 *  CA bundle), verify on or off, the client certificate and key, and the
 *  name the origin's certificate must carry (the vhost's origin_tls.sni,
 *  else the origin host). Each is built on first use, from any event-loop
 *  thread, and then shared by all of them for the life of the process
 *  (OpenSSL allows SSL_new on one SSL_CTX from several threads); reloads
 *  that keep a setting keep its context. TLS 1.2 is the minimum version.
 *
 *  With verify on, the context has SSL_VERIFY_PEER and the expected name in
 *  its X509_VERIFY_PARAM (a DNS name, or an IP address for address
 *  origins), so OpenSSL checks chain and name inside the handshake and a
 *  bad certificate fails the handshake itself: nothing is checked after
 *  the fact, nothing passes silently.
 */
#ifndef GW_ORIGIN_TLS_H
#define GW_ORIGIN_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "rf_config.h"

typedef struct gw_origin_tls_t gw_origin_tls_t;

/* Returns the shared TLS setting of https origin `o`, building its SSL_CTX
 * the first time (that reads the CA, certificate and key files, once per
 * setting). Borrowed: it lives until the process exits. Returns NULL when a
 * file cannot be loaded, with *why a one-line reason in a thread-local
 * buffer valid until the next call on this thread. Thread-safe. */
const gw_origin_tls_t *gw_origin_tls_get(const rf_origin_t *o, const char **why);

/* Whether `t` is the TLS setting origin `o` asks for; NULL `t` (plain
 * HTTP) matches only http:// origins. Lock-free: settings never change
 * once built. Returns 1 or 0. */
int gw_origin_tls_matches(const gw_origin_tls_t *t, const rf_origin_t *o);

/* The context to hand to h2o_socket_ssl_handshake (borrowed). */
SSL_CTX *gw_origin_tls_ctx(const gw_origin_tls_t *t);

/* The name sent as SNI and checked in the certificate (borrowed). */
const char *gw_origin_tls_name(const gw_origin_tls_t *t);

/* Whether certificates are verified (origin_tls.verify). */
bool gw_origin_tls_verifies(const gw_origin_tls_t *t);

#endif
