/*  sg_kafka — Kafka webhook targets of the storgate outbox (sg_outbox.c).
 *
 *  A target written kafka://HOST:PORT[,HOST:PORT…]/TOPIC sends the webhook's
 *  payload as one message to TOPIC, keyed by its idempotency key, through
 *  an idempotent producer (librdkafka, enable.idempotence, acks=all) kept
 *  per broker list. The outbox removes its file only once the message's
 *  delivery report says the brokers have it; otherwise it retries with its
 *  usual backoff, so Kafka targets get the outbox's at-least-once delivery.
 *
 *  Everything here runs on the outbox's delivery thread: an sg_kafka_t is
 *  not shared between threads.
 */
#ifndef SG_KAFKA_H
#define SG_KAFKA_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct sg_kafka_t sg_kafka_t;

/* Whether `target` starts with "kafka://" (a Kafka target, valid or not). */
bool sg_kafka_is_target(const char *target);

/* Checks a kafka:// target's form: one or more HOST:PORT, a '/', a topic
 * name (1-249 of [A-Za-z0-9._-]). 0, or -1 with why. Borrows everything. */
int sg_kafka_check(const char *target, char *why, size_t why_len);

/* A set of producers, none made yet. `stop` (borrowed, may be NULL; it
 * must outlive the set) cuts a wait for a delivery report short when set.
 * The caller owns the result: sg_kafka_destroy. NULL on allocation failure. */
sg_kafka_t *sg_kafka_new(const atomic_int *stop);

/* Flushes nothing (every message sent was waited for), purges what is
 * left, destroys the producers and the set, and NULLs *self_p. */
void sg_kafka_destroy(sg_kafka_t **self_p);

/* Sends `payload` keyed by `key` to the kafka:// `target` (all borrowed),
 * with the broker list's producer (made at its first use), and waits for
 * the delivery report, 10 s at most. true once the brokers acknowledged
 * it (acks=all); false with why otherwise (then the message may still
 * have arrived: the outbox sends it again, at least once). */
bool sg_kafka_send(sg_kafka_t *k, const char *target, const char *key, const char *payload, char *why, size_t why_len);

#endif
