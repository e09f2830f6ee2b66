#include "gw_origin_tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_origin_tls_t {
    struct gw_origin_tls_t *next;
    char *ca_file; /* NULL = the system CA bundle */
    bool verify;
    char *client_cert, *client_key;
    char *name; /* SNI and the name checked */
    SSL_CTX *ctx;
};

/* Every setting built so far. Entries are appended under the lock and never
 * change or go away, so a published entry may be read without it. */
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static gw_origin_tls_t *s_settings;

static __thread char s_why[512];

static int s_streq(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

static const char *s_name_of(const rf_origin_t *o)
{
    return o->tls.sni != NULL ? o->tls.sni : o->host;
}

int gw_origin_tls_matches(const gw_origin_tls_t *t, const rf_origin_t *o)
{
    if (t == NULL || !o->https)
        return t == NULL && !o->https;
    return t->verify == o->tls.verify && s_streq(t->ca_file, o->tls.ca_file) &&
           s_streq(t->client_cert, o->tls.client_cert) && s_streq(t->client_key, o->tls.client_key) &&
           strcmp(t->name, s_name_of(o)) == 0;
}

SSL_CTX *gw_origin_tls_ctx(const gw_origin_tls_t *t)
{
    return t->ctx;
}

const char *gw_origin_tls_name(const gw_origin_tls_t *t)
{
    return t->name;
}

bool gw_origin_tls_verifies(const gw_origin_tls_t *t)
{
    return t->verify;
}

/* Formats "TLS: cannot load WHAT 'FILE': <OpenSSL's reason>" into s_why and
 * empties this thread's OpenSSL error queue (a stale entry would make h2o
 * misread a later SSL_read on the same thread). Returns -1. */
static int s_load_fail(const char *what, const char *file)
{
    unsigned long e = ERR_peek_error(); /* the first entry: the cause, e.g. the file not found */
    char r[200] = "unknown error";
    if (e != 0)
        ERR_error_string_n(e, r, sizeof(r));
    snprintf(s_why, sizeof(s_why), "TLS: cannot load %s '%s': %s", what, file, r);
    ERR_clear_error();
    return -1;
}

/* OpenSSL fills a certificate's extension cache the first time a chain
 * uses it, and tests that cache without a lock (a race by design: a
 * thread can read fields another is still writing). The trust anchors are
 * shared by every thread's handshakes, so fill their caches here, once,
 * before the context is published. */
static void s_cache_anchor_extensions(SSL_CTX *ctx)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (x != NULL)
            X509_check_purpose(x, -1, 0);
    }
}

/* Builds the client context of `t`. Returns 0, or -1 with s_why set
 * (t->ctx is then NULL). */
static int s_build(gw_origin_tls_t *t)
{
    int rc = -1;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(s_why, sizeof(s_why), "TLS: out of memory");
        goto cleanup;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* Kept-alive connections carry the reuse; no session cache to share
     * (and lock) between threads. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (t->verify) {
        if (t->ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1
                               : SSL_CTX_set_default_verify_paths(ctx) != 1) {
            s_load_fail("ca_file", t->ca_file ? t->ca_file : "(system CA bundle)");
            goto cleanup;
        }
        s_cache_anchor_extensions(ctx);
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
        unsigned char ip[16];
        int is_ip = inet_pton(AF_INET, t->name, ip) == 1 || inet_pton(AF_INET6, t->name, ip) == 1;
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, t->name) : X509_VERIFY_PARAM_set1_host(param, t->name, 0);
        if (ok != 1) {
            snprintf(s_why, sizeof(s_why), "TLS: cannot check certificates for the name '%s'", t->name);
            ERR_clear_error();
            goto cleanup;
        }
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (t->client_cert != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, t->client_cert) != 1) {
            s_load_fail("client_cert", t->client_cert);
            goto cleanup;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, t->client_key, SSL_FILETYPE_PEM) != 1) {
            s_load_fail("client_key", t->client_key);
            goto cleanup;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            s_load_fail("client_key (it does not match client_cert)", t->client_key);
            goto cleanup;
        }
    }
    t->ctx = ctx;
    ctx = NULL;
    rc = 0;
cleanup:
    SSL_CTX_free(ctx);
    return rc;
}

static void s_free(gw_origin_tls_t *t)
{
    if (t == NULL)
        return;
    free(t->ca_file);
    free(t->client_cert);
    free(t->client_key);
    free(t->name);
    SSL_CTX_free(t->ctx);
    free(t);
}

const gw_origin_tls_t *gw_origin_tls_get(const rf_origin_t *o, const char **why)
{
    gw_origin_tls_t *found = NULL, *t = NULL;
    pthread_mutex_lock(&s_lock);
    for (gw_origin_tls_t *e = s_settings; e != NULL && found == NULL; e = e->next)
        if (gw_origin_tls_matches(e, o))
            found = e;
    if (found != NULL)
        goto cleanup;
    /* Failures are not remembered: a file fixed on disk is read again on
     * the next request. */
    t = calloc(1, sizeof(*t));
    if (t == NULL || (o->tls.ca_file && !(t->ca_file = strdup(o->tls.ca_file))) ||
        (o->tls.client_cert && !(t->client_cert = strdup(o->tls.client_cert))) ||
        (o->tls.client_key && !(t->client_key = strdup(o->tls.client_key))) || !(t->name = strdup(s_name_of(o)))) {
        snprintf(s_why, sizeof(s_why), "TLS: out of memory");
        goto cleanup;
    }
    t->verify = o->tls.verify;
    if (s_build(t) < 0)
        goto cleanup;
    t->next = s_settings;
    s_settings = t;
    found = t;
    t = NULL;
cleanup:
    pthread_mutex_unlock(&s_lock);
    s_free(t);
    if (found == NULL)
        *why = s_why;
    return found;
}
