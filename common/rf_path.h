/*  rf_path — the one canonical form of a request path.
 *
 *  Everything from a client is hostile: the path is canonicalised once, at
 *  the front of the gateway, and only the canonical form is used after that
 *  — for routing, function-chain splitting, the origin request line, file
 *  origins, transform sources and cache keys. Two spellings of one resource
 *  ("/a/./b", "/a/%62") become one, and no spelling reaches above the root:
 *
 *    - %XX of an unreserved character (ALPHA DIGIT - . _ ~, RFC 3986 §2.3)
 *      is decoded; every other %XX is kept, with upper-case hex;
 *    - "." and ".." segments are resolved (RFC 3986 §5.2.4) after that
 *      decoding, so "%2e%2e" is "..", and ".." above the root is refused;
 *    - control bytes (0x00-0x1F, 0x7F), raw or %-encoded, are refused —
 *      "/a.txt%00.jpg" would otherwise name "a.txt" to the file system;
 *    - an encoded slash or backslash (%2F, %5C) and a raw backslash are
 *      refused: origins disagree on whether they separate segments, so
 *      "/..%2fsecret" could climb out of a prefix on one of them;
 *    - a '%' not followed by two hex digits is refused.
 *
 *  Empty segments ("//") are kept: they are distinct names to S3-like
 *  origins, and they cannot climb.
 */
#ifndef RF_PATH_H
#define RF_PATH_H

#include <stddef.h>
#include <sys/types.h>

/* Longest request path accepted (bytes, before the query). */
#define RF_PATH_MAX 8192

/* Canonicalises `in[0..len)` (a path without its query; it must begin
 * with '/') into `out`, which must have room for len + 1 bytes (the
 * canonical form is never longer; it is NUL-terminated). Returns the
 * canonical length, or -1 with *why set to a static one-line reason. */
ssize_t rf_path_canon(const char *in, size_t len, char *out, const char **why);

/* Decodes every %XX of a canonical path into `out` (room for len + 1;
 * NUL-terminated) — the name a file system sees. Canonical paths hold no
 * encoded control byte or separator, so the decoded form names the same
 * segments. Returns the decoded length. */
size_t rf_path_decode(const char *canon, size_t len, char *out);

/* Whether a query string (without '?') is free of control bytes. */
int rf_query_ok(const char *q, size_t len);

#endif
