/*  gw_tls — TLS for clients: certificates by SNI, ALPN h2 / http/1.1.
 *
 *  Every TLS listener hands its handshakes to one bootstrap SSL_CTX (fixed
 *  for the process: protocol versions and ciphers). Its ClientHello
 *  callback, run on the event-loop thread doing the handshake, picks the
 *  certificate from that thread's current vhost table — the vhost the SNI
 *  names, else the default certificate — and switches the connection to
 *  that table's SSL_CTX. Tables are rebuilt on SIGHUP, so certificates
 *  reload with them; connections keep the SSL_CTX they started with
 *  (OpenSSL reference-counts it).
 */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <openssl/ssl.h>

#include "rf_config.h"

/* Builds an SSL_CTX serving `cert` with the gateway's TLS settings (min
 * version, ciphers, ALPN h2 and http/1.1). Returns it (caller owns;
 * SSL_CTX_free) or NULL with *err malloc'd ("tls: cannot load …"). */
SSL_CTX *gw_tls_ctx_new(const rf_config_t *cfg, const rf_tls_cert_t *cert, char **err);

/* The process-wide context the listeners accept with: a gw_tls_ctx_new of
 * the default certificate plus the ClientHello callback that switches to
 * the right table context. Same ownership and failure as gw_tls_ctx_new. */
SSL_CTX *gw_tls_bootstrap_new(const rf_config_t *cfg, char **err);

/* Which thread's tables the ClientHello callback reads on this thread;
 * each event-loop thread calls it once with its own gw_thread_t. */
void gw_tls_bind_thread(void *thread);

#endif
