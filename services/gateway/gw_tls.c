#include "gw_tls.h"

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

#include "gw.h"

/* The event-loop thread running on this OS thread (see gw_tls.h). */
static __thread gw_thread_t *s_thread;

void gw_tls_bind_thread(void *thread)
{
    s_thread = thread;
}

/* Formats "tls: <what> <file>: <openssl reason>" into *err (malloc'd). */
static void s_err(char **err, const char *what, const char *file)
{
    char reason[256] = "unknown error";
    unsigned long e = ERR_peek_error(); /* the first: the cause, e.g. the file not found */
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    if (asprintf(err, "tls: %s %s: %s", what, file ? file : "", reason) < 0)
        *err = NULL;
}

SSL_CTX *gw_tls_ctx_new(const rf_config_t *cfg, const rf_tls_cert_t *cert, char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        s_err(err, "cannot create a context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, cfg->gateway.tls.min_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_cipher_list(ctx, cfg->gateway.tls.ciphers) != 1) {
        s_err(err, "bad cipher list", cfg->gateway.tls.ciphers);
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert->cert) != 1) {
        s_err(err, "cannot load certificate", cert->cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cert->key, SSL_FILETYPE_PEM) != 1) {
        s_err(err, "cannot load private key", cert->key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        s_err(err, "private key does not match certificate", cert->cert);
        goto fail;
    }
    /* A session resumed on a switched context must find the same id. */
    static const unsigned char sid[] = "refract";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    /* h2o's own list names only h2 (and drafts); saying http/1.1 too lets
     * clients that offer both see which one they got. */
    static const h2o_iovec_t alpn[] = {{H2O_STRLIT("h2")}, {H2O_STRLIT("http/1.1")}, {NULL, 0}};
    h2o_ssl_register_alpn_protocols(ctx, alpn);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* Reads the host_name of a server_name extension (RFC 6066 §3). Returns 0
 * with *name (borrowed) and *len, or -1. */
static int s_sni(SSL *ssl, const char **name, size_t *len)
{
    const unsigned char *p;
    size_t n;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &n) || n < 5)
        return -1;
    size_t list = ((size_t)p[0] << 8) | p[1];
    if (list + 2 != n || p[2] != TLSEXT_NAMETYPE_host_name)
        return -1;
    size_t nl = ((size_t)p[3] << 8) | p[4];
    if (nl == 0 || nl + 5 > n)
        return -1;
    *name = (const char *)p + 5;
    *len = nl;
    return 0;
}

/* Switches the handshake to the context of the vhost its SNI names, or to
 * the default certificate's, from the current table of this thread. */
static int s_on_client_hello(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    (void)arg;
    gw_thread_t *t = s_thread;
    if (t == NULL || t->vhosts == NULL || t->vhosts->tls_def == NULL)
        return SSL_CLIENT_HELLO_SUCCESS;
    gw_vhosts_t *v = t->vhosts;
    SSL_CTX *ctx = v->tls_def;
    const char *name;
    size_t len;
    if (s_sni(ssl, &name, &len) == 0) {
        const rf_vhost_conf_t *vh = gw_vhosts_match(v, name, len);
        size_t i = vh != NULL ? (size_t)(vh - v->cfg->vhosts) : SIZE_MAX;
        if (i < v->cfg->n_vhosts && v->tls_vhost[i] != NULL)
            ctx = v->tls_vhost[i];
    }
    if (SSL_get_SSL_CTX(ssl) != ctx && SSL_set_SSL_CTX(ssl, ctx) == NULL)
        return SSL_CLIENT_HELLO_ERROR;
    return SSL_CLIENT_HELLO_SUCCESS;
}

SSL_CTX *gw_tls_bootstrap_new(const rf_config_t *cfg, char **err)
{
    SSL_CTX *ctx = gw_tls_ctx_new(cfg, &cfg->gateway.tls.def, err);
    if (ctx != NULL)
        SSL_CTX_set_client_hello_cb(ctx, s_on_client_hello, NULL);
    return ctx;
}
