#include "rf_log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *s_process = "refract";
static rf_log_level_t s_level = RF_LOG_INFO;
static const char *const s_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void rf_log_init(const char *process)
{
    s_process = process;
}

void rf_log_set_level(rf_log_level_t level)
{
    s_level = level;
}

int rf_log_level_parse(const char *name)
{
    static const char *const lower[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, lower[i]) == 0)
            return i;
    return -1;
}

void rf_log(rf_log_level_t level, const char *reqid, const char *fmt, ...)
{
    if (level > s_level)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    /* Build the whole line first: one write() keeps lines from different
     * threads from interleaving. */
    char line[2048];
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03dZ %s[%d] %s ", (int)(tv.tv_usec / 1000), s_process,
                  (int)getpid(), s_names[level]);
    if (reqid != NULL && (size_t)n < sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "req=%s ", reqid);
    if ((size_t)n < sizeof(line)) {
        va_list ap;
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
    }
    if ((size_t)n >= sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}

int rf_why(char *why, size_t len, const char *fmt, ...)
{
    if (why != NULL && len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, len, fmt, ap);
        va_end(ap);
    }
    return -1;
}
