/*  vid_err — the video core's one error convention: a one-line reason
 *  written into the caller's err[errlen] (which may be NULL). Shared by
 *  vid_core.c and vid_recut.c, each built alone too (tests, fuzzers). */
#ifndef VID_ERR_H
#define VID_ERR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static inline void s_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Writes the formatted reason into err[errlen], as one line. */
static inline void s_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *p = err; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

#endif
