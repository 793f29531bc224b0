/* A minimal librdkafka producer for bench_kafka.py: COUNT records of SIZE bytes to TOPIC,
 * keyless (librdkafka's default partitioner spreads them), then flush. No per-record
 * input parsing, so what it measures is librdkafka and the broker, not a line reader.
 *
 *   cc -O2 -o kafka_producer kafka_producer.c -lrdkafka
 *   ./kafka_producer BOOTSTRAP TOPIC COUNT SIZE [key=value ...]    (librdkafka configs)
 *
 * Exit status 0 only if every record was acknowledged.
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long delivered, failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (failed++ == 0)
            fprintf(stderr, "ERROR: delivery failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        delivered++;
    }
}

static void set(rd_kafka_conf_t *conf, const char *key, const char *value) {
    char err[512];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "ERROR: %s\n", err);
        exit(2);
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC COUNT SIZE [key=value ...]\n", argv[0]);
        return 2;
    }
    long count = atol(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", argv[1]);
    for (int i = 5; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "ERROR: not key=value: %s\n", argv[i]);
            return 2;
        }
        *eq = '\0';
        set(conf, argv[i], eq + 1);
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "ERROR: %s\n", err);
        return 2;
    }
    /* Distinct printable payloads: windows onto a pool, as bench_kafka's record files. */
    size_t pool_size = size + 4096;
    char *pool = malloc(pool_size);
    unsigned seed = 12345;
    for (size_t i = 0; i < pool_size; i++) {
        seed = seed * 1103515245u + 12345u;
        pool[i] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(seed >> 16) % 62];
    }
    for (long i = 0; i < count;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(argv[2]), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_VALUE(pool + (i % 4096), size), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 1);
            continue;
        }
        if (e) {
            fprintf(stderr, "ERROR: produce: %s\n", rd_kafka_err2str(e));
            return 1;
        }
        i++;
        if ((i & 0xffff) == 0)
            rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 120000);
    rd_kafka_poll(rk, 0);
    rd_kafka_destroy(rk);
    free(pool);
    if (delivered != count) {
        fprintf(stderr, "ERROR: %ld of %ld records acknowledged (%ld failed)\n", delivered,
                count, failed);
        return 1;
    }
    return 0;
}
