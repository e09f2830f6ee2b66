/*  rf_sgfunc — a storgate task's `function` as a worker job (rf_sgfunc.h):
 *  checked when the configuration loads, run by the scheduler (sg_item.c).
 *
 *  A function is written as what follows the source in a gateway URL, with
 *  the built-in settings of a vhost that sets none (docs/storgate.md,
 *  "Task functions"):
 *    /dims/CHAIN, /hyperdims/CHAIN            the image worker
 *    /thumbnail/T[/WxH][/jpeg|png|webp][/keyframe]
 *    /sprite/EVERY/COLSxROWS/WxH/(N.jpg|sprite.vtt)
 *    /mp4[/HEIGHTp]                           transcoded to H.264/AAC
 *    ?trimming=A-B[,C-D…][&accurate=0|1], ?start=A&end=B
 *                                             the video worker
 *  The URL-tail grammar is the gateway's own (common/rf_vparse), so a
 *  function means in a workflow what it means in a URL.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rf_chain.h"
#include "rf_config.h"
#include "rf_sgfunc.h"
#include "rf_vparse.h"

/* Whether function starts with "/KEYWORD/" or is "/KEYWORD"; *rest is what
 * follows "/KEYWORD/" ("" for the bare form). */
static bool s_keyword(const char *function, const char *kw, const char **rest)
{
    size_t n = strlen(kw);
    if (function[0] != '/' || strncmp(function + 1, kw, n) != 0)
        return false;
    const char *after = function + 1 + n;
    if (*after != '\0' && *after != '/')
        return false;
    *rest = *after == '/' ? after + 1 : after;
    return true;
}

/* "" or "HEIGHTp" within the built-in max_height: the transcode job. */
static json_t *s_transcode(const char *rest, char *why, size_t why_len)
{
    rf_transcode_conf_t c;
    rf_transcode_default(&c);
    size_t n = strlen(rest);
    int height = c.max_height;
    if (n > 0) {
        int64_t h = n > 1 && rest[n - 1] == 'p' ? rf_vparse_digits(rest, n - 1, (int64_t)c.max_height + 1) : -1;
        if (h < 2) {
            snprintf(why, why_len, "'%.32s' is not a height such as 720p (at most %dp)", rest, c.max_height);
            return NULL;
        }
        height = (int)h;
    }
    return json_pack("[{s:s, s:i, s:i, s:i}]", "op", "transcode", "max_height", height, "crf", c.crf, "max_duration",
                     c.max_duration);
}

/* The video function's job: 1 with *chain (caller owns), 0 when function
 * is not a video function, -1 with why when it is one but malformed. */
static int s_video(const char *function, const char *src_path, json_t **chain, char *why, size_t why_len)
{
    rf_thumb_conf_t th;
    rf_thumb_default(&th);
    rf_transcode_conf_t tx;
    rf_transcode_default(&tx);
    const char *rest = NULL;
    *chain = NULL;
    if (s_keyword(function, th.keyword, &rest)) {
        rf_vthumb_t t;
        if (rf_vparse_thumb(rest, strlen(rest), &t, why, why_len) < 0)
            return -1;
        *chain = rf_vthumb_json(&t, th.quality);
    } else if (s_keyword(function, th.sprite_keyword, &rest)) {
        rf_vsprite_t t;
        if (rf_vparse_sprite(rest, strlen(rest), &t, why, why_len) < 0)
            return -1;
        *chain = rf_vsprite_json(&t, th.quality);
    } else if (s_keyword(function, tx.keyword, &rest)) {
        if ((*chain = s_transcode(rest, why, why_len)) == NULL)
            return -1;
    } else if (function[0] == '?') {
        rf_trim_conf_t c;
        rf_trim_default(&c);
        const char *v;
        size_t vl, fl = strlen(function);
        if (!rf_vparse_query_param(function, fl, c.param, &v, &vl) &&
            !rf_vparse_query_param(function, fl, "start", &v, &vl) &&
            !rf_vparse_query_param(function, fl, "end", &v, &vl)) { /* a typo is not the whole video */
            snprintf(why, why_len, "'%.64s' is not ?%s=A-B[,C-D…] or ?start=A&end=B", function, c.param);
            return -1;
        }
        const char *dot = strrchr(src_path, '.');
        rf_vtrim_t t = {.max_ratio = 0, /* a task wants the trim, never the original */
                        .accurate = c.accurate,
                        .audio = dot != NULL && strcasecmp(dot, ".m4a") == 0};
        if (rf_vparse_trim(function, strlen(function), c.param, &t, why, why_len) < 0)
            return -1;
        *chain = rf_vtrim_json(&t);
    } else {
        return 0;
    }
    if (*chain == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    return 1;
}

int rf_sgfunc_job(const char *function, const char *src_path, const char **service, json_t **chain, char *why,
                  size_t why_len)
{
    static const char *const image_kw[] = {"hyperdims", "dims", NULL};
    const char *rest = NULL;
    for (int i = 0; image_kw[i] != NULL; i++) {
        if (!s_keyword(function, image_kw[i], &rest) || rest[0] == '\0')
            continue;
        rf_chain_t parsed;
        rf_chain_ctx_t ctx = {0};
        if (rf_chain_parse(rest, strlen(rest), &ctx, &parsed, why, why_len) < 0)
            return -1;
        *service = "image";
        if ((*chain = rf_chain_to_json(&parsed)) == NULL) {
            snprintf(why, why_len, "out of memory");
            return -1;
        }
        return 0;
    }
    int rc = s_video(function, src_path, chain, why, why_len);
    if (rc == 0)
        snprintf(why, why_len,
                 "function %.200s: not /dims/… (or /hyperdims/…), /thumbnail/…, /sprite/…, /mp4[/Hp] or "
                 "?trimming=…",
                 function);
    *service = "video";
    return rc > 0 ? 0 : -1;
}
