#include "rf_path.h"

#include <string.h>

static int s_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int s_unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

static int s_control(int c)
{
    return c < 0x20 || c == 0x7f;
}

/* Resolves the segment just written (out[seg_start..*o)) when it is "."
 * or "..": *o moves back to just after a '/'. Returns 1 when it did, 0
 * for an ordinary segment, -1 when ".." would climb above the root. */
static int s_dot_segment(char *out, size_t *o, size_t seg_start)
{
    size_t n = *o - seg_start;
    const char *seg = out + seg_start;
    if (n == 1 && seg[0] == '.') {
        *o = seg_start; /* "/a/./b" -> "/a/b"; a final "/." leaves "/a/" */
        return 1;
    }
    if (n == 2 && seg[0] == '.' && seg[1] == '.') {
        if (seg_start <= 1)
            return -1; /* "/.." */
        size_t p = seg_start - 1; /* the '/' that opens ".." */
        while (p > 0 && out[p - 1] != '/')
            p--;
        *o = p; /* just after the '/' before the dropped segment */
        return 1;
    }
    return 0;
}

ssize_t rf_path_canon(const char *in, size_t len, char *out, const char **why)
{
    if (len == 0 || in[0] != '/') {
        *why = "the path must begin with '/'";
        return -1;
    }
    if (len > RF_PATH_MAX) {
        *why = "the path is too long";
        return -1;
    }
    size_t o = 0, seg_start = 1;
    out[o++] = '/';
    for (size_t i = 1; i <= len; i++) {
        if (i == len || in[i] == '/') {
            int r = s_dot_segment(out, &o, seg_start);
            if (r < 0) {
                *why = "the path climbs above the root";
                return -1;
            }
            if (i == len)
                break;
            if (r == 0) /* after a resolved dot segment o already follows a '/' */
                out[o++] = '/';
            seg_start = o;
            continue;
        }
        int c = (unsigned char)in[i];
        if (c == '%') {
            int h = i + 2 < len ? s_hex((unsigned char)in[i + 1]) : -1;
            int l = h >= 0 ? s_hex((unsigned char)in[i + 2]) : -1;
            if (l < 0) {
                *why = "bad percent-encoding in the path";
                return -1;
            }
            int d = h * 16 + l;
            i += 2;
            if (s_control(d)) {
                *why = "control character in the path";
                return -1;
            }
            if (d == '/' || d == '\\') {
                *why = "encoded slash or backslash in the path";
                return -1;
            }
            if (s_unreserved(d)) {
                out[o++] = (char)d;
            } else {
                static const char hexd[] = "0123456789ABCDEF";
                out[o++] = '%';
                out[o++] = hexd[d >> 4];
                out[o++] = hexd[d & 15];
            }
            continue;
        }
        if (s_control(c)) {
            *why = "control character in the path";
            return -1;
        }
        if (c == '\\') {
            *why = "backslash in the path";
            return -1;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (ssize_t)o;
}

size_t rf_path_decode(const char *canon, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int h, l;
        if (canon[i] == '%' && i + 2 < len && (h = s_hex((unsigned char)canon[i + 1])) >= 0 &&
            (l = s_hex((unsigned char)canon[i + 2])) >= 0) {
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = canon[i];
        }
    }
    out[o] = '\0';
    return o;
}

int rf_query_ok(const char *q, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s_control((unsigned char)q[i]))
            return 0;
    return 1;
}
