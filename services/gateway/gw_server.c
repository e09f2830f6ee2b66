#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw.h"
#include "gw_s3.h"
#include "rf_sgconf.h"
#include "gw_metrics.h"
#include "gw_tls.h"
#include "rf_log.h"

typedef enum { S_MSG_RELOAD, S_MSG_DRAIN } s_msg_kind_t;

typedef struct {
    h2o_multithread_message_t super;
    s_msg_kind_t kind;
    gw_vhosts_t *vhosts; /* RELOAD: a reference for the receiving thread */
} s_control_msg_t;

/* Opens a listening socket. Every thread opens its own with SO_REUSEPORT
 * so the kernel spreads connections without a shared accept lock.
 * Returns the fd, or -1 with errno set. */
static int s_listen(const rf_listen_t *l, int reuseport)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char port[16];
    snprintf(port, sizeof(port), "%d", l->port);
    const char *host = l->host && l->host[0] ? l->host : NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        errno = EADDRNOTAVAIL;
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        errno = e;
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Checks that nothing holds the address yet with a plain bind (see the
 * caller). Returns 0, or -1 (logged). */
static int s_port_free(const rf_listen_t *l)
{
    int probe = s_listen(l, 0);
    if (probe < 0) {
        rf_error("cannot listen on %s:%d: %s", l->host, l->port,
                 errno == EADDRINUSE ? "the address is in use by another process" : strerror(errno));
        return -1;
    }
    close(probe);
    return 0;
}

static void s_on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    h2o_accept_ctx_t *actx = listener->data;
    h2o_socket_t *sock;
    /* Drain the backlog: one readiness event may stand for many clients. */
    for (int i = 0; i < 64 && (sock = h2o_evloop_socket_accept(listener)) != NULL; i++)
        h2o_accept(actx, sock);
}

static h2o_socket_t *s_listener_start(h2o_loop_t *loop, int fd, h2o_accept_ctx_t *actx)
{
    h2o_socket_t *sock = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    sock->data = actx;
    h2o_socket_read_start(sock, s_on_accept);
    return sock;
}

static void s_on_control(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    gw_thread_t *t = H2O_STRUCT_FROM_MEMBER(gw_thread_t, control_receiver, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        s_control_msg_t *m = H2O_STRUCT_FROM_MEMBER(s_control_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&m->super.link);
        if (m->kind == S_MSG_RELOAD) {
            gw_vhosts_unref(&t->vhosts);
            t->vhosts = m->vhosts;
        } else if (!t->draining) {
            t->draining = 1;
            t->drain_deadline_ms = (int64_t)h2o_now(t->ctx.loop) + t->server->cfg->gateway.drain_timeout_ms;
            /* Stop accepting; let keep-alive and HTTP/2 clients know. */
            h2o_socket_t **ls[] = {&t->listener, &t->tls_listener, &t->s3_listener};
            for (size_t i = 0; i < sizeof(ls) / sizeof(ls[0]); i++)
                if (*ls[i] != NULL) {
                    h2o_socket_read_stop(*ls[i]);
                    h2o_socket_close(*ls[i]);
                    *ls[i] = NULL;
                }
            h2o_context_request_shutdown(&t->ctx);
        }
        free(m);
    }
}

/* Metrics collector: the cache's gauges and eviction counters, read from
 * the store at scrape time (under the registry's render lock). */
static void s_cache_collect(rf_metrics_t *reg, void *arg)
{
    (void)reg;
    static uint64_t last_disk, last_memory;
    gw_server_t *srv = arg;
    if (srv->store == NULL)
        return;
    rf_store_stats_t st;
    rf_store_stats(srv->store, &st);
    rf_metric_set(gw_m.cache_objects, NULL, (double)st.objects);
    const char *lm[] = {"memory"}, *ld[] = {"disk"};
    rf_metric_set(gw_m.cache_bytes, lm, (double)st.memory_bytes);
    rf_metric_set(gw_m.cache_bytes, ld, (double)st.disk_bytes);
    rf_metric_add(gw_m.cache_evictions, lm, (double)(st.evicted_memory - last_memory));
    rf_metric_add(gw_m.cache_evictions, ld, (double)(st.evicted_disk - last_disk));
    last_memory = st.evicted_memory;
    last_disk = st.evicted_disk;
}

/* Sets up thread t's h2o context, receivers, submitter and listener
 * sockets. Runs on t's own thread: h2o's socket buffers come from a
 * per-thread (__thread) recycling allocator chosen when a socket is
 * created, so a context created on the main thread would have every loop
 * thread's notification pipe allocate from the main thread's free list,
 * unlocked — the reload use-after-free. Returns 0 or -1 (logged). */
static int s_thread_setup(gw_thread_t *t)
{
    gw_server_t *srv = t->server;
    h2o_context_init(&t->ctx, h2o_evloop_create(), &srv->h2o_conf);
    t->accept_ctx.ctx = &t->ctx;
    t->accept_ctx.hosts = srv->h2o_conf.hosts;
    h2o_linklist_init_anchor(&t->upstreams);
    h2o_timeout_init(t->ctx.loop, &t->probe_timeout, 250);
    h2o_timeout_init(t->ctx.loop, &t->sg_wait_timeout, 20);
    h2o_timeout_init(t->ctx.loop, &t->stream_timeout, 20);
    h2o_multithread_register_receiver(t->ctx.queue, &t->job_receiver, gw_transform_on_jobs);
    h2o_multithread_register_receiver(t->ctx.queue, &t->control_receiver, s_on_control);
    h2o_multithread_register_receiver(t->ctx.queue, &t->cache_receiver, gw_serve_on_wake);
    h2o_multithread_register_receiver(t->ctx.queue, &t->meta_receiver, gw_fill_on_meta);
    h2o_multithread_register_receiver(t->ctx.queue, &t->storage_receiver, gw_storage_on_probe);
    h2o_multithread_register_receiver(t->ctx.queue, &t->source_receiver, gw_srcache_on_wake);
    if (getrandom(&t->rng, sizeof(t->rng), 0) != sizeof(t->rng) || t->rng == 0)
        t->rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)t;
    t->submitter = gw_submitter_new(srv->broker);
    if (t->submitter == NULL) {
        rf_error("cannot connect a bus submitter");
        return -1;
    }
    t->listener = s_listener_start(t->ctx.loop, t->listen_fd, &t->accept_ctx);
    t->listen_fd = -1;
    gw_tls_bind_thread(t);
    if (t->tls_fd >= 0) {
        t->tls_accept_ctx = t->accept_ctx;
        t->tls_accept_ctx.ssl_ctx = srv->tls_bootstrap;
        t->tls_listener = s_listener_start(t->ctx.loop, t->tls_fd, &t->tls_accept_ctx);
        t->tls_fd = -1;
    }
    if (t->s3_fd >= 0) {
        h2o_context_init(&t->s3_ctx, t->ctx.loop, &srv->s3_conf);
        t->s3_accept_ctx.ctx = &t->s3_ctx;
        t->s3_accept_ctx.hosts = srv->s3_conf.hosts;
        t->s3_listener = s_listener_start(t->ctx.loop, t->s3_fd, &t->s3_accept_ctx);
        t->s3_fd = -1;
    }
    if (t->admin_fd >= 0) {
        h2o_context_init(&t->admin_ctx, t->ctx.loop, &srv->admin_conf);
        t->admin_accept_ctx.ctx = &t->admin_ctx;
        t->admin_accept_ctx.hosts = srv->admin_conf.hosts;
        t->admin_listener = s_listener_start(t->ctx.loop, t->admin_fd, &t->admin_accept_ctx);
        t->admin_fd = -1;
    }
    return 0;
}

/* Tells the main thread that t is serving (ok = 1) or failed to start. */
static void s_report_start(gw_server_t *srv, int ok)
{
    pthread_mutex_lock(&srv->start_mu);
    srv->started++;
    srv->start_failed |= !ok;
    pthread_cond_signal(&srv->start_cv);
    pthread_mutex_unlock(&srv->start_mu);
}

static void *s_thread_main(void *arg)
{
    gw_thread_t *t = arg;
    gw_server_t *srv = t->server;
    int ok = s_thread_setup(t) == 0;
    s_report_start(srv, ok);
    if (!ok)
        return NULL;
    h2o_loop_t *loop = t->ctx.loop;
    while (!atomic_load(&t->stopped)) {
        h2o_evloop_run(loop, 100);
        if (t->draining) {
            int64_t now = (int64_t)h2o_now(loop);
            /* Thread 0 also serves the admin port: it stays up (answering
             * /healthz with 503) until every other thread has drained. */
            int others_running = 0;
            for (int i = 1; t->idx == 0 && i < srv->nthreads; i++)
                others_running |= !atomic_load(&srv->threads[i].stopped);
            if ((t->inflight == 0 && !others_running) || now >= t->drain_deadline_ms) {
                if (t->inflight > 0)
                    rf_warn("drain timeout: %d request(s) still in flight on thread %d", t->inflight, t->idx);
                atomic_store(&t->stopped, 1);
            }
        }
    }
    if (t->idx == 0 && t->admin_listener != NULL) {
        h2o_socket_close(t->admin_listener);
        t->admin_listener = NULL;
    }
    gw_submitter_destroy(&t->submitter);
    return NULL;
}

/* Opens thread t's listening socket on the main thread, so that a port
 * that cannot be bound is reported before anything serves; the loop thread
 * builds everything else itself (s_thread_setup). Returns 0 or -1. */
static int s_thread_bind(gw_server_t *srv, gw_thread_t *t)
{
    const rf_config_t *cfg = srv->cfg;
    t->listen_fd = s_listen(&cfg->gateway.listen, 1);
    if (t->listen_fd < 0) {
        rf_error("cannot listen on %s:%d: %s", cfg->gateway.listen.host, cfg->gateway.listen.port, strerror(errno));
        return -1;
    }
    t->tls_fd = -1;
    t->s3_fd = -1;
    const rf_sg_conf_t *sg = cfg->storgate;
    if (sg != NULL && sg->listen.port > 0 && (t->s3_fd = s_listen(&sg->listen, 1)) < 0) {
        rf_error("cannot listen on S3 %s:%d: %s", sg->listen.host, sg->listen.port, strerror(errno));
        return -1;
    }
    if (cfg->gateway.tls.listen.port > 0 && (t->tls_fd = s_listen(&cfg->gateway.tls.listen, 1)) < 0) {
        rf_error("cannot listen on TLS %s:%d: %s", cfg->gateway.tls.listen.host, cfg->gateway.tls.listen.port,
                 strerror(errno));
        return -1;
    }
    return 0;
}

static void s_post(gw_thread_t *t, s_msg_kind_t kind, gw_vhosts_t *vhosts)
{
    s_control_msg_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return;
    m->kind = kind;
    m->vhosts = vhosts;
    h2o_multithread_send_message(&t->control_receiver, &m->super);
}

static void s_reload(gw_server_t *srv, const char *path)
{
    char *err = NULL;
    rf_config_t *cfg = rf_config_load(path, &err);
    if (cfg == NULL) {
        rf_error("reload failed, keeping the running configuration: %s", err ? err : "?");
        free(err);
        return;
    }
    size_t n = cfg->n_vhosts;
    gw_vhosts_t *v = gw_vhosts_new(&cfg, &err);
    if (v == NULL) {
        rf_error("reload failed, keeping the running configuration: %s", err ? err : "?");
        free(err);
        return;
    }
    for (int i = 0; i < srv->nthreads; i++) {
        gw_vhosts_ref(v);
        s_post(&srv->threads[i], S_MSG_RELOAD, v);
    }
    gw_vhosts_unref(&v);
    rf_info("reloaded %s: %zu vhost(s) and their certificates; listeners, bus and workers settings need a restart",
            path, n);
}

static void s_h2o_conf(h2o_globalconf_t *conf, const rf_config_t *cfg)
{
    h2o_config_init(conf);
    conf->server_name = h2o_iovec_init(H2O_STRLIT("refract"));
    conf->http1.req_timeout = (uint64_t)cfg->gateway.client_timeout_ms;
    conf->http2.idle_timeout = (uint64_t)cfg->gateway.client_timeout_ms;
}

int gw_server_run(const char *config_path, rf_config_t **cfg_p)
{
    gw_server_t srv = {.start_mu = PTHREAD_MUTEX_INITIALIZER, .start_cv = PTHREAD_COND_INITIALIZER};
    int rc = 1, admin_fd = -1;
    char *err = NULL;
    srv.cfg = *cfg_p;
    *cfg_p = NULL;
    signal(SIGPIPE, SIG_IGN);
    /* Only the main thread takes these signals (sigwait below); block them
     * before any thread exists so every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    zsys_handler_set(NULL);
    zsys_init();

    srv.metrics = rf_metrics_new();
    if (srv.metrics == NULL || gw_metrics_init(srv.metrics) < 0) {
        rf_error("cannot declare metrics");
        goto done;
    }
    srv.mimemap = h2o_mimemap_create();
    rf_config_t *table_cfg = rf_config_load(config_path, &err);
    if (table_cfg == NULL) {
        rf_error("%s", err ? err : "cannot reload configuration");
        goto done;
    }
    gw_vhosts_t *vhosts = gw_vhosts_new(&table_cfg, &err);
    if (vhosts == NULL) {
        rf_error("%s", err ? err : "cannot build the vhost table");
        goto done;
    }
    if (srv.cfg->gateway.tls.listen.port > 0 && (srv.tls_bootstrap = gw_tls_bootstrap_new(srv.cfg, &err)) == NULL) {
        rf_error("%s", err ? err : "cannot set up TLS");
        gw_vhosts_unref(&vhosts);
        goto done;
    }
    srv.broker = gw_broker_new(srv.cfg, &err);
    if (srv.broker == NULL) {
        rf_error("%s", err ? err : "cannot start the bus broker");
        gw_vhosts_unref(&vhosts);
        goto done;
    }
    s_h2o_conf(&srv.h2o_conf, srv.cfg);
    gw_req_register(h2o_config_register_host(&srv.h2o_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535));
    s_h2o_conf(&srv.admin_conf, srv.cfg);
    gw_admin_register(h2o_config_register_host(&srv.admin_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535), &srv);
    s_h2o_conf(&srv.s3_conf, srv.cfg);
    if (srv.cfg->storgate != NULL) {
        /* h2o reads a body whole before the handler (spilling past 32 MiB
         * to a mapped temporary file): a PUT is bounded by max_put, plus
         * the aws-chunked framing (~90 bytes per 64 KiB chunk). */
        srv.s3_conf.max_request_entity_size = srv.cfg->storgate->max_put + srv.cfg->storgate->max_put / 256 + 65536;
        gw_s3_register(h2o_config_register_host(&srv.s3_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535), &srv);
    }

    if (srv.cfg->gateway.admin_listen.port > 0 && (admin_fd = s_listen(&srv.cfg->gateway.admin_listen, 0)) < 0) {
        rf_error("cannot listen on admin %s:%d: %s", srv.cfg->gateway.admin_listen.host,
                 srv.cfg->gateway.admin_listen.port, strerror(errno));
        gw_vhosts_unref(&vhosts);
        goto done;
    }
    /* The public listeners share the port with SO_REUSEPORT, which would
     * also let them share it with another process that set the flag (a
     * second gateway silently taking part of the traffic). A plain bind
     * first fails when anything holds the port already. */
    if (s_port_free(&srv.cfg->gateway.listen) < 0 ||
        (srv.cfg->gateway.tls.listen.port > 0 && s_port_free(&srv.cfg->gateway.tls.listen) < 0) ||
        (srv.cfg->storgate != NULL && srv.cfg->storgate->listen.port > 0 &&
         s_port_free(&srv.cfg->storgate->listen) < 0)) {
        gw_vhosts_unref(&vhosts);
        goto done;
    }
    /* After the port check: a second gateway must not touch the cache of
     * the one already serving. */
    rf_store_opts_t so = {.dir = srv.cfg->gateway.cache_dir,
                          .memory = srv.cfg->gateway.cache_memory,
                          .disk = srv.cfg->gateway.cache_disk,
                          .memory_object_max = srv.cfg->gateway.cache_memory_object_max};
    if ((srv.store = rf_store_new(&so, &err)) == NULL) {
        rf_error("%s", err ? err : "cannot open the cache");
        gw_vhosts_unref(&vhosts);
        goto done;
    }
    if (srv.cfg->bus.spool_dir != NULL && gw_spool_init(srv.cfg->bus.spool_dir) < 0) {
        gw_vhosts_unref(&vhosts);
        goto done;
    }
    rf_metrics_on_collect(srv.metrics, s_cache_collect, &srv);
    if (srv.cfg->gateway.name != NULL) {
        /* A Via received-by is a token or host[:port]: anything else would
         * make an unparsable header and blind the loop check. */
        const char *n = srv.cfg->gateway.name;
        if (strlen(n) > 100 ||
            strspn(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:~!") != strlen(n)) {
            rf_error("gateway.name '%s': letters, digits and . - _ : ~ ! only (at most 100)", n);
            gw_vhosts_unref(&vhosts);
            goto done;
        }
        snprintf(srv.via, sizeof(srv.via), "1.1 %s", n);
    } else {
        char host[64] = "refract";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        snprintf(srv.via, sizeof(srv.via), "1.1 %s:%d", host, srv.cfg->gateway.listen.port);
    }
    if ((srv.storage = gw_storage_new(srv.cfg->storgate_scheduler.state_dir)) == NULL) {
        rf_error("cannot start the object-storage threads");
        gw_vhosts_unref(&vhosts);
        goto done;
    }
    /* After srv.via: the metadata thread names this gateway with it. */
    if ((srv.meta = gw_meta_new(&srv, &err)) == NULL) {
        rf_error("%s", err ? err : "cannot set up gateway.metadata");
        gw_vhosts_unref(&vhosts);
        goto done;
    }
    {
        rf_store_stats_t st;
        rf_store_stats(srv.store, &st);
        rf_info("cache %s: %llu objects (%llu bytes) loaded, %llu damaged files dropped", so.dir,
                (unsigned long long)st.objects, (unsigned long long)st.disk_bytes,
                (unsigned long long)st.dropped_at_load);
    }
    srv.nthreads = srv.cfg->gateway.threads > 0 ? srv.cfg->gateway.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (srv.nthreads < 1)
        srv.nthreads = 1;
    srv.threads = calloc((size_t)srv.nthreads, sizeof(gw_thread_t));
    if (srv.threads == NULL) {
        rf_error("out of memory");
        gw_vhosts_unref(&vhosts);
        goto done;
    }
    for (int i = 0; i < srv.nthreads; i++) {
        gw_thread_t *t = &srv.threads[i];
        t->idx = i;
        t->server = &srv;
        t->admin_fd = i == 0 ? admin_fd : -1;
        gw_vhosts_ref(vhosts);
        t->vhosts = vhosts;
        if (s_thread_bind(&srv, t) < 0) {
            gw_vhosts_unref(&vhosts);
            goto done;
        }
    }
    gw_vhosts_unref(&vhosts);
    for (int i = 0; i < srv.nthreads; i++) {
        int e = pthread_create(&srv.threads[i].tid, NULL, s_thread_main, &srv.threads[i]);
        if (e != 0) {
            /* Threads already running cannot be joined cleanly here. */
            rf_error("cannot start event-loop thread %d: %s", i, strerror(e));
            _exit(1);
        }
    }
    pthread_mutex_lock(&srv.start_mu);
    while (srv.started < srv.nthreads)
        pthread_cond_wait(&srv.start_cv, &srv.start_mu);
    pthread_mutex_unlock(&srv.start_mu);
    if (srv.start_failed) {
        rf_error("an event-loop thread failed to start");
        _exit(1);
    }
    rf_info("refract-gateway listening on %s:%d (admin %s:%d), %d thread(s), bus %s",
            srv.cfg->gateway.listen.host[0] ? srv.cfg->gateway.listen.host : "*", srv.cfg->gateway.listen.port,
            srv.cfg->gateway.admin_listen.host && srv.cfg->gateway.admin_listen.host[0]
                ? srv.cfg->gateway.admin_listen.host
                : "*",
            srv.cfg->gateway.admin_listen.port, srv.nthreads, srv.cfg->bus.endpoint);
    if (srv.tls_bootstrap != NULL)
        rf_info("TLS (HTTP/1.1 and h2) on %s:%d",
                srv.cfg->gateway.tls.listen.host[0] ? srv.cfg->gateway.tls.listen.host : "*",
                srv.cfg->gateway.tls.listen.port);

    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            s_reload(&srv, config_path);
            continue;
        }
        rf_info("signal %d: draining in-flight requests (up to %d ms)", sig, srv.cfg->gateway.drain_timeout_ms);
        break;
    }
    for (int i = 0; i < srv.nthreads; i++)
        s_post(&srv.threads[i], S_MSG_DRAIN, NULL);
    for (int i = 0; i < srv.nthreads; i++)
        pthread_join(srv.threads[i].tid, NULL);
    rf_info("stopped");
    rc = 0;
done:
    free(err);
    /* The broker goes after the loops: no thread submits any more. */
    gw_broker_destroy(&srv.broker);
    gw_meta_destroy(&srv.meta);       /* its thread applies purges to the store */
    gw_storage_destroy(&srv.storage); /* its jobs hold objects of the store */
    /* Objects still referenced by unfinished fills keep the store alive. */
    rf_store_destroy(&srv.store);
    rf_metrics_destroy(&srv.metrics);
    SSL_CTX_free(srv.tls_bootstrap);
    rf_config_destroy(&srv.cfg);
    /* Threads' contexts and pools are left to process exit: tearing down
     * h2o contexts with connections still open is not worth the risk. */
    free(srv.threads);
    return rc;
}
