/*  rf_cli — the shared command line (rf_cli.h). */
#include "rf_cli.h"

#include <unistd.h>

int rf_cli_args(int argc, char **argv, void (*usage)(FILE *out), const char **path, bool *test_only)
{
    int opt;
    *path = NULL;
    *test_only = false;
    while ((opt = getopt(argc, argv, "c:th")) != -1) {
        switch (opt) {
        case 'c': *path = optarg; break;
        case 't': *test_only = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (*path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    return -1;
}
