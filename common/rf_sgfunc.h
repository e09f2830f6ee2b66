/*  rf_sgfunc — a storgate task's `function` as a worker job.
 *
 *  A function is what follows the source in a gateway URL (docs/storgate.md,
 *  "Task functions"): /dims/CHAIN or the seed's /hyperdims/CHAIN (the image
 *  worker); /thumbnail/…, /sprite/…, /mp4[/HEIGHTp] and ?trimming=… (the
 *  video worker), with the built-in settings of a vhost that sets none.
 */
#ifndef RF_SGFUNC_H
#define RF_SGFUNC_H

#include <stddef.h>

#include <jansson.h>

/* The worker job of function over the file at src_path (its extension
 * tells an .m4a trim): *service ("image" or "video", static) and *chain
 * (the JOB's chain, caller owns). 0, or -1 with why (malformed, or not a
 * function). */
int rf_sgfunc_job(const char *function, const char *src_path, const char **service, json_t **chain, char *why,
                  size_t why_len);

#endif
