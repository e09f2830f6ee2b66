/*  config_doc — rewrites the schema tables of docs/configuration.md from
 *  common/rf_config.def (`make docs`). Each table sits between
 *    <!-- schema:SECTION -->  and  <!-- /schema:SECTION -->
 *  and everything outside those markers is left as written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_config.h"

static char *s_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n + 4096 > cap && (buf = realloc(buf, cap = cap * 2 + 8192)) == NULL)
            break;
        r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
    } while (r > 0);
    fclose(f);
    if (buf != NULL)
        buf[n] = '\0';
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "docs/configuration.md";
    static const char *const sections[] = {"gateway",  "bus",     "image_worker", "video_worker", "storgate_scheduler",
                                           "prewarm",  "log",     NULL};
    size_t len;
    char *doc = s_slurp(path, &len);
    if (doc == NULL) {
        perror(path);
        return 1;
    }
    for (int i = 0; sections[i]; i++) {
        char open_m[64], close_m[64];
        snprintf(open_m, sizeof(open_m), "<!-- schema:%s -->\n", sections[i]);
        snprintf(close_m, sizeof(close_m), "<!-- /schema:%s -->", sections[i]);
        char *a = strstr(doc, open_m), *b = a ? strstr(a, close_m) : NULL;
        if (a == NULL || b == NULL) {
            fprintf(stderr, "%s: markers for section '%s' not found\n", path, sections[i]);
            return 1;
        }
        a += strlen(open_m);
        char *table = NULL;
        size_t tl = 0;
        FILE *m = open_memstream(&table, &tl);
        rf_config_write_reference(m, sections[i]);
        fclose(m);
        size_t head = (size_t)(a - doc), tail = strlen(b);
        char *next = malloc(head + tl + tail + 1);
        memcpy(next, doc, head);
        memcpy(next + head, table, tl);
        memcpy(next + head + tl, b, tail + 1);
        free(doc);
        free(table);
        doc = next;
    }
    FILE *out = fopen(path, "w");
    if (out == NULL || fputs(doc, out) == EOF || fclose(out) != 0) {
        perror(path);
        return 1;
    }
    free(doc);
    return 0;
}
