/*  rf_log — one log line per event, the same shape in every process:
 *    2026-11-22T07:30:00.123Z gateway[1234] INFO req=ab12.. message
 *  Lines go to stderr (the supervisor or journald keeps them). A request id
 *  is passed explicitly so every process that touched a request logs it.
 */
#ifndef RF_LOG_H
#define RF_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum { RF_LOG_ERROR = 0, RF_LOG_WARN, RF_LOG_INFO, RF_LOG_DEBUG } rf_log_level_t;

/* Sets the process name shown in each line (borrowed; keep it static). */
void rf_log_init(const char *process);

/* Sets the threshold; lines above it are dropped. */
void rf_log_set_level(rf_log_level_t level);

/* Parses "error"/"warn"/"info"/"debug"; returns the level or -1. */
int rf_log_level_parse(const char *name);

/* Writes one line if `level` passes the threshold. `reqid` may be NULL. */
void rf_log(rf_log_level_t level, const char *reqid, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Writes a one-line reason into why[len] (when why is not NULL) and
 * returns -1, so parsers can `return rf_why(why, len, "...", ...)`. */
int rf_why(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define rf_error(...) rf_log(RF_LOG_ERROR, NULL, __VA_ARGS__)
#define rf_warn(...) rf_log(RF_LOG_WARN, NULL, __VA_ARGS__)
#define rf_info(...) rf_log(RF_LOG_INFO, NULL, __VA_ARGS__)
#define rf_debug(...) rf_log(RF_LOG_DEBUG, NULL, __VA_ARGS__)

#endif
