/*  img_orc — serialises liborc's code-memory changes (img_core.h).
 *
 *  Why: Debian 12's liborc 0.4.33 frees a compiled program's code chunk
 *  (orc_code_chunk_free, reached from orc_program_free and from a
 *  recompile in orc_program_compile) without its global mutex, merging
 *  neighbours in the free list that orc_code_allocate_codemem changes
 *  under that mutex. Two libvips operations built or freed at once on two
 *  job threads (vips_reducev compiles ORC programs for each operation and
 *  frees them with it) can corrupt that list: the image worker died with
 *  SIGSEGV in liborc, a few times in 15,000 small concurrent resizes, and
 *  four threads compiling and freeing programs crash it every time within
 *  1,000 rounds (tests/unit/test_img_orc.c).
 *
 *  How: the executable defines the two liborc entry points libvips calls
 *  that reach the code allocator, and exports them (the link's
 *  --export-dynamic-symbol, Makefile ORC_GUARD), so libvips's calls bind
 *  here; each takes one process-wide mutex and calls liborc's own
 *  (dlsym RTLD_NEXT). A program's compile is tens of microseconds; running
 *  compiled programs (orc_executor_run) is not serialised.
 */
#include <dlfcn.h>
#include <orc/orc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "img_core.h"

static pthread_mutex_t s_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;
static OrcCompileResult (*s_compile)(OrcProgram *);
static void (*s_free)(OrcProgram *);

static void s_resolve(void)
{
    s_compile = (OrcCompileResult(*)(OrcProgram *))dlsym(RTLD_NEXT, "orc_program_compile");
    s_free = (void (*)(OrcProgram *))dlsym(RTLD_NEXT, "orc_program_free");
    if (s_compile == NULL || s_free == NULL) {
        /* Only if liborc is not loaded, and then nothing calls these. */
        fprintf(stderr, "img_orc: liborc's orc_program_compile/orc_program_free not found\n");
        abort();
    }
}

/* liborc's orc_program_compile, one at a time with any other compile or
 * free. Ownership as liborc's: p is borrowed. */
OrcCompileResult orc_program_compile(OrcProgram *p)
{
    pthread_once(&s_once, s_resolve);
    pthread_mutex_lock(&s_mu);
    OrcCompileResult r = s_compile(p);
    pthread_mutex_unlock(&s_mu);
    return r;
}

/* liborc's orc_program_free, one at a time with any compile or other
 * free. Takes p, as liborc's does. */
void orc_program_free(OrcProgram *p)
{
    pthread_once(&s_once, s_resolve);
    pthread_mutex_lock(&s_mu);
    s_free(p);
    pthread_mutex_unlock(&s_mu);
}

bool img_orc_guarded(void)
{
    /* What the dynamic linker gives libvips for these names: ours only
     * when the executable exports them. */
    return dlsym(RTLD_DEFAULT, "orc_program_compile") == (void *)orc_program_compile &&
           dlsym(RTLD_DEFAULT, "orc_program_free") == (void *)orc_program_free;
}
