/*  Unit tests for common/rf_evict: both policies keep within their
 *  capacity and report every object they drop; LRU drops the least
 *  recently used; S3-FIFO keeps hot objects against a flood of one-hit
 *  wonders, sends a key seen again soon after eviction straight to its
 *  main queue, and forgets purged keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

#include "rf_evict.h"

typedef struct {
    uint64_t bytes, count;
    uint64_t last;
} s_evicted_t;

static void s_on_evict(uint64_t key, uint64_t size, void *arg)
{
    s_evicted_t *e = arg;
    e->bytes += size;
    e->count++;
    e->last = key;
}

static void test_capacity_and_accounting(void **state)
{
    (void)state;
    for (int kind = RF_EVICT_LRU; kind <= RF_EVICT_S3FIFO; kind++) {
        rf_evict_t *c = rf_evict_new(kind, 10000);
        assert_non_null(c);
        s_evicted_t ev = {0};
        uint64_t admitted = 0, rng = 88172645463325252ULL;
        for (int i = 0; i < 20000; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            uint64_t key = rng % 500, size = 1 + key % 700;
            int r = rf_evict_access(c, key, size, s_on_evict, &ev);
            assert_true(r == 0 || r == 1);
            if (r == 0)
                admitted += size;
            assert_true(rf_evict_bytes(c) <= 10000);
        }
        /* what came in either is held or was reported going out */
        assert_int_equal(admitted, rf_evict_bytes(c) + ev.bytes);
        assert_int_equal(rf_evict_access(c, 999999, 20000, NULL, NULL), 0); /* larger than the cache */
        assert_int_equal(rf_evict_access(c, 999999, 1, NULL, NULL), 0);
        assert_int_equal(rf_evict_access(c, 999999, 1, NULL, NULL), 1);
        rf_evict_destroy(&c);
        assert_null(c);
        rf_evict_destroy(&c);
    }
    assert_null(rf_evict_new(RF_EVICT_LRU, 0));
}

static void test_lru_order(void **state)
{
    (void)state;
    rf_evict_t *c = rf_evict_new(RF_EVICT_LRU, 3);
    s_evicted_t ev = {0};
    rf_evict_access(c, 1, 1, s_on_evict, &ev);
    rf_evict_access(c, 2, 1, s_on_evict, &ev);
    rf_evict_access(c, 3, 1, s_on_evict, &ev);
    assert_int_equal(rf_evict_access(c, 1, 1, s_on_evict, &ev), 1); /* 1 is now the newest */
    rf_evict_access(c, 4, 1, s_on_evict, &ev);
    assert_int_equal(ev.last, 2);
    assert_int_equal(rf_evict_count(c), 3);
    rf_evict_destroy(&c);
}

static void test_s3fifo_keeps_hot_objects_against_a_scan(void **state)
{
    (void)state;
    rf_evict_t *c = rf_evict_new(RF_EVICT_S3FIFO, 100);
    rf_evict_t *lru = rf_evict_new(RF_EVICT_LRU, 100);
    /* 50 hot objects, each requested twice */
    for (int round = 0; round < 2; round++)
        for (uint64_t k = 0; k < 50; k++) {
            rf_evict_access(c, k, 1, NULL, NULL);
            rf_evict_access(lru, k, 1, NULL, NULL);
        }
    /* a scan of 1000 objects seen once each */
    for (uint64_t k = 1000; k < 2000; k++) {
        rf_evict_access(c, k, 1, NULL, NULL);
        rf_evict_access(lru, k, 1, NULL, NULL);
    }
    int hot_s3 = 0, hot_lru = 0;
    for (uint64_t k = 0; k < 50; k++) {
        hot_s3 += rf_evict_access(c, k, 1, NULL, NULL) == 1;
        hot_lru += rf_evict_access(lru, k, 1, NULL, NULL) == 1;
    }
    assert_int_equal(hot_s3, 50); /* the scan went through the small queue only */
    assert_int_equal(hot_lru, 0); /* the scan flushed LRU */
    rf_evict_destroy(&c);
    rf_evict_destroy(&lru);
}

static void test_s3fifo_ghost_sends_returning_keys_to_main(void **state)
{
    (void)state;
    rf_evict_t *c = rf_evict_new(RF_EVICT_S3FIFO, 100);
    s_evicted_t ev = {0};
    /* fill main with 90 objects hit twice, then push key 7 through small */
    for (int round = 0; round < 2; round++)
        for (uint64_t k = 100; k < 190; k++)
            rf_evict_access(c, k, 1, s_on_evict, &ev);
    for (uint64_t k = 200; k < 230; k++) /* one-hit objects push each other out of small */
        rf_evict_access(c, k, 1, s_on_evict, &ev);
    assert_int_equal(rf_evict_access(c, 200, 1, s_on_evict, &ev), 0); /* 200 was evicted to the ghost */
    /* back from the ghost, 200 went to main: a further flood of one-hit
     * objects through small does not remove it */
    for (uint64_t k = 300; k < 330; k++)
        rf_evict_access(c, k, 1, s_on_evict, &ev);
    assert_int_equal(rf_evict_access(c, 200, 1, s_on_evict, &ev), 1);
    rf_evict_destroy(&c);
}

static void test_remove(void **state)
{
    (void)state;
    for (int kind = RF_EVICT_LRU; kind <= RF_EVICT_S3FIFO; kind++) {
        rf_evict_t *c = rf_evict_new(kind, 100);
        rf_evict_access(c, 5, 10, NULL, NULL);
        assert_int_equal(rf_evict_bytes(c), 10);
        assert_int_equal(rf_evict_remove(c, 5), 1);
        assert_int_equal(rf_evict_remove(c, 5), 0);
        assert_int_equal(rf_evict_bytes(c), 0);
        assert_int_equal(rf_evict_count(c), 0);
        assert_int_equal(rf_evict_access(c, 5, 10, NULL, NULL), 0); /* a miss again */
        rf_evict_destroy(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity_and_accounting),
        cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_s3fifo_keeps_hot_objects_against_a_scan),
        cmocka_unit_test(test_s3fifo_ghost_sends_returning_keys_to_main),
        cmocka_unit_test(test_remove),
    };
    return cmocka_run_group_tests_name("rf_evict", tests, NULL, NULL);
}
