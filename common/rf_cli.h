/*  rf_cli — the command line the service processes share:
 *  `-c CONFIG [-t] [-h]` (refract-prewarm, refract-storgate-scheduler).
 */
#ifndef RF_CLI_H
#define RF_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Reads -c (required), -t and -h. *path borrows from argv. Returns -1 to
 * go on, or the exit code when the process should stop here: 0 after -h
 * (usage on stdout), 2 for a bad command line (usage on stderr). */
int rf_cli_args(int argc, char **argv, void (*usage)(FILE *out), const char **path, bool *test_only);

#endif
