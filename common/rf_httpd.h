/*  rf_httpd — the tiny admin HTTP endpoint of worker processes.
 *
 *  Workers run their job loop on ZeroMQ, not on an HTTP stack, yet must
 *  serve Prometheus text at /metrics and liveness at /healthz. rf_httpd
 *  runs one background thread that accepts HTTP/1.0 and HTTP/1.1 GET/HEAD
 *  requests (one request per connection, `Connection: close`), answers
 *    GET /metrics  -> 200 text/plain; version=0.0.4 (rf_metrics_render)
 *    GET /healthz  -> 200 "ok\n", or 503 + reason if the health callback
 *                     says the process is unhealthy
 *    anything else -> 404 / 405 with a one-line reason
 *  Requests with headers larger than 8 KiB get 431; a client that sends
 *  nothing for 5 s is dropped, so a stuck peer never blocks the thread for
 *  long. The gateway does not use this: it serves the same paths from h2o.
 */
#ifndef RF_HTTPD_H
#define RF_HTTPD_H

#include "rf_metrics.h"

typedef struct rf_httpd_t rf_httpd_t;

/* Health callback: return 0 if healthy, else -1 and write a one-line
 * reason (NUL-terminated) into buf of size len. Called on the httpd thread. */
typedef int(rf_httpd_health_fn)(void *arg, char *buf, size_t len);

/* Binds host:port (host NULL or "" = 0.0.0.0; port 0 = ephemeral) and
 * starts the serving thread. `metrics` is borrowed and must outlive the
 * httpd. `health` may be NULL (always healthy). Returns the new httpd
 * (caller owns; rf_httpd_destroy) or NULL with *err set to a malloc'd
 * message (caller frees) when binding fails. */
rf_httpd_t *rf_httpd_new(const char *host, int port, rf_metrics_t *metrics, rf_httpd_health_fn *health, void *arg,
                         char **err);

/* The port actually bound (useful with port 0). */
int rf_httpd_port(rf_httpd_t *self);

/* Stops the thread, closes the socket, frees; safe on NULL and twice. */
void rf_httpd_destroy(rf_httpd_t **self_p);

#endif
