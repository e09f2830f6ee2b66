/*  gw_spool — the directory (bus.spool_dir) where sources fetched from
 *  http(s) origins are written while they arrive, so that a worker maps
 *  them by path like a file:// source instead of receiving their bytes
 *  over the bus.
 *
 *  Files are named src-HOST-PID-XXXXXX: HOST and PID tell which gateway
 *  made them, so a gateway starting on a host removes what a dead
 *  gateway of the same host left (a crash skips the unlink), and never
 *  the files of a live one sharing the directory. The transform owns each
 *  file and unlinks it when its request ends. Workers write results too
 *  large for a REPLY here (out-*), which the gateway takes over and
 *  unlinks; one older than an hour at start is an orphan.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gw.h"
#include "rf_log.h"

/* A worker's result file (out-*) older than this is an orphan. */
#define GW_SPOOL_RESULT_MAX_AGE_S 3600

/* This host's name as it goes into file names (no '-' or '/'). */
static void s_host(char *host, size_t len)
{
    if (gethostname(host, len - 1) != 0)
        snprintf(host, len, "refract");
    host[len - 1] = '\0';
    for (char *p = host; *p; p++)
        if (*p == '-' || *p == '/')
            *p = '_';
}

/* Whether `name` is a file a gateway of this host with a pid that no longer
 * runs left behind. */
static int s_is_stale(const char *name, const char *host)
{
    size_t hl = strlen(host);
    if (strncmp(name, "src-", 4) != 0 || strncmp(name + 4, host, hl) != 0 || name[4 + hl] != '-')
        return 0;
    char *end = NULL;
    long pid = strtol(name + 5 + hl, &end, 10);
    if (end == NULL || *end != '-' || pid <= 0)
        return 0;
    return pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

int gw_spool_init(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rf_error("bus.spool_dir %s: %s", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK) != 0) {
        rf_error("bus.spool_dir %s: not a writable directory", dir);
        return -1;
    }
    char host[64];
    s_host(host, sizeof(host));
    DIR *d = opendir(dir);
    if (d == NULL) {
        rf_error("bus.spool_dir %s: %s", dir, strerror(errno));
        return -1;
    }
    int removed = 0;
    time_t now = time(NULL);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        /* Results a worker left for a gateway that died before taking
         * them (out-*): workers may run on other hosts, so age decides. */
        struct stat fst;
        bool old_result = strncmp(e->d_name, "out-", 4) == 0 && fstatat(dirfd(d), e->d_name, &fst, 0) == 0 &&
                          now - fst.st_mtime > GW_SPOOL_RESULT_MAX_AGE_S;
        if ((s_is_stale(e->d_name, host) || old_result) && unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    if (removed > 0)
        rf_log(RF_LOG_INFO, NULL, "bus.spool_dir %s: removed %d source files a stopped gateway left", dir, removed);
    return 0;
}

int gw_spool_open(const char *dir, char **path)
{
    char host[64];
    s_host(host, sizeof(host));
    char *p = NULL;
    if (asprintf(&p, "%s/src-%s-%ld-XXXXXX", dir, host, (long)getpid()) < 0)
        return -1;
    int fd = mkostemp(p, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(p);
        errno = e;
        return -1;
    }
    *path = p;
    return fd;
}
