/*  gw_file — file:// origins: a directory served like a static web server.
 *
 *  Plain requests go through h2o's own file handler (Range, ETag and
 *  conditional requests, HEAD), given the decoded canonical path, which
 *  cannot climb out of the directory (gw_recv). Transforms read their
 *  source here, or only check it when the worker maps it by reference.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw.h"
#include "gw_metrics.h"
#include "rf_path.h"

/* Serves dir + path (decoded, under the directory) as the vhost's h2o file
 * handler serves a plain request — with Range, ETag and the conditionals,
 * and HEAD: the image fallback for file origins. */
void gw_file_serve_path(gw_req_t *rc, const char *path, size_t path_len)
{
    h2o_req_t *req = rc->req;
    const char *l[] = {rc->vhost->name, "file"};
    rf_metric_add(gw_m.origin_requests, l, 1);
    req->path_normalized = h2o_iovec_init(path, path_len);
    h2o_handler_t *fh = gw_vhosts_file_handler(rc->vhosts, rc->vhost);
    gw_deliver_headers(rc);
    if (fh->on_req(fh, req) != 0)
        gw_send_error(rc, 404, "Not Found", "not found: %.*s", (int)(path_len > 200 ? 200 : path_len), path);
}

/* See gw.h. */
int gw_file_read_source(const rf_origin_t *o, const char *path, size_t path_len, size_t limit, void **body, size_t *len,
                        const char **why)
{
    char full[4096];
    if (strlen(o->dir) + path_len >= sizeof(full)) {
        *why = "path too long";
        return -1;
    }
    snprintf(full, sizeof(full), "%s%.*s", o->dir, (int)path_len, path);
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        *why = "not found";
        return -1;
    }
    if (limit > 0 && (size_t)st.st_size > limit) {
        close(fd);
        return 1;
    }
    if (body == NULL) {
        close(fd);
        *len = (size_t)st.st_size;
        return 0;
    }
    char *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    size_t off = 0;
    while (buf != NULL && off < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + off, (size_t)st.st_size - off);
        if (r <= 0)
            break;
        off += (size_t)r;
    }
    close(fd);
    if (buf == NULL || off != (size_t)st.st_size) {
        free(buf);
        *why = "read error";
        return -1;
    }
    *body = buf;
    *len = off;
    return 0;
}

/* A directory named without its trailing slash gets a 301 to "path/", like
 * a static web server — sent here rather than by h2o's file handler, whose
 * redirect drops the headers every response carries. Returns 1 when it
 * answered. */
static int s_dir_redirect(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    h2o_iovec_t p = req->path_normalized;
    if (p.len == 0 || p.base[p.len - 1] == '/')
        return 0;
    const char *dir = rc->vhost->origin.dir;
    size_t dl = strlen(dir);
    char *full = h2o_mem_alloc_pool(&req->pool, dl + p.len + 1);
    memcpy(full, dir, dl);
    memcpy(full + dl, p.base, p.len);
    full[dl + p.len] = '\0';
    struct stat st;
    if (stat(full, &st) != 0 || !S_ISDIR(st.st_mode))
        return 0;
    static h2o_generator_t no_generator = {NULL, NULL};
    h2o_iovec_t loc = h2o_concat(&req->pool, rc->path, h2o_iovec_init(H2O_STRLIT("/")), rc->query);
    req->res.status = 301;
    req->res.reason = gw_reason(301);
    req->res.content_length = 0;
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, loc.base, loc.len, 1);
    gw_deliver_headers(rc);
    h2o_start_response(req, &no_generator);
    h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    return 1;
}

void gw_file_serve(gw_req_t *rc)
{
    h2o_req_t *req = rc->req;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("allow"), 0, H2O_STRLIT("GET, HEAD"), 1);
        gw_send_error(rc, 405, "Method Not Allowed", "a file origin serves GET and HEAD only");
        return;
    }
    const char *l[] = {rc->vhost->name, "file"};
    rf_metric_add(gw_m.origin_requests, l, 1);
    /* h2o's file handler maps path_normalized under the directory: give
     * it the decoded canonical path (no NUL, no climbing segment). */
    char *dec = h2o_mem_alloc_pool(&req->pool, rc->path.len + 1);
    req->path_normalized = h2o_iovec_init(dec, rf_path_decode(rc->path.base, rc->path.len, dec));
    if (s_dir_redirect(rc))
        return;
    h2o_handler_t *fh = gw_vhosts_file_handler(rc->vhosts, rc->vhost);
    gw_deliver_headers(rc);
    if (fh->on_req(fh, req) != 0)
        gw_send_error(rc, 404, "Not Found", "not found: %.*s", (int)(rc->path.len > 200 ? 200 : rc->path.len),
                      rc->path.base);
}
