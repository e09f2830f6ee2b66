/*  unit_run — a shell command run from a unit test (ffmpeg and ffprobe
 *  making and checking media), for the tests that need one. Include after
 *  <cmocka.h>. */
#ifndef UNIT_RUN_H
#define UNIT_RUN_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static char *unit_run(const char *dir, const char *fmt, ...) __attribute__((format(printf, 2, 3), unused));

/* Runs the command in directory dir; returns its stdout (malloc'd, caller
 * frees) and asserts it exited 0. */
static char *unit_run(const char *dir, const char *fmt, ...)
{
    char cmd[2048];
    int n = snprintf(cmd, sizeof(cmd), "cd '%s' && ", dir);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof(cmd) - (size_t)n, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    size_t got;
    while ((got = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 2048)
            out = realloc(out, cap *= 2);
    }
    out[len] = '\0';
    int rc = pclose(p);
    if (rc != 0)
        fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    assert_int_equal(rc, 0);
    return out;
}

#endif
