/*  libFuzzer target for services/storgate-scheduler/sg_ldoc.c: the object
 *  an https:// leader lease keeps on an S3 service, which others may write.
 *
 *  Input: the object's bytes. Besides memory safety (and leaks) it
 *  abort()s when a document that reads is not written back byte for byte
 *  (the format has one spelling: anything else accepted would be a second
 *  reading), or when a record read breaks a bound. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sg_ldoc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sg_ldoc_t d;
    memset(&d, 0, sizeof(d));
    if (sg_ldoc_parse((const char *)data, size, &d) == 0) {
        if (d.n > SG_LDOC_ENTRIES || strlen(d.node) == 0 || strlen(d.node) > SG_LDOC_NAME)
            abort();
        for (size_t i = 0; i < d.n; i++)
            if (strlen(d.text[i]) > SG_LDOC_TEXT || strlen(d.name[i]) == 0)
                abort();
        size_t len = 0;
        char *text = sg_ldoc_text(&d, &len);
        if (text == NULL || len != size || memcmp(text, data, size) != 0)
            abort();
        free(text);
    }
    sg_ldoc_clear(&d);
    return 0;
}
