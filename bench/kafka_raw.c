/* A Kafka client in plain C (no librdkafka) whose per-record cost is near zero, so that
 * what bench_kafka.py measures is the broker (issue 9, Speed).
 *
 *   cc -O2 -o kafka_raw kafka_raw.c
 *   ./kafka_raw produce HOST:PORT TOPIC PARTITIONS COUNT SIZE [BATCH_BYTES [IN_FLIGHT [ACKS]]]
 *   ./kafka_raw consume HOST:PORT TOPIC PARTITIONS COUNT [MAX_BYTES]
 *   ./kafka_raw sink PORT_FILE
 *
 * produce: COUNT keyless records of SIZE bytes as v2 RecordBatches of at most BATCH_BYTES
 *   (default 1,000,000, like batch.size), producerId -1, uncompressed, CRC32C over the
 *   batch from its attributes on. Every Produce request (v7, acks=1 by default) carries one
 *   batch for each of the PARTITIONS partitions; IN_FLIGHT requests (default 5, like
 *   librdkafka's max.in.flight) are pipelined on one connection. The batch bytes are built
 *   once and sent again and again: the broker stamps base offsets, and producerId -1 means
 *   no sequence checks; only the request's correlation id is patched. Every answer is
 *   checked: its correlation id, error code 0 for every partition, and base offsets that
 *   follow each other per partition (each batch right after the one before).
 * consume: Fetch (v4) from offset 0 of every partition, max wait 10 ms, MAX_BYTES per
 *   response (default 16 MiB, a share of it per partition), one fetch at a time; walks
 *   the returned batches by their headers, verifies each one's CRC32C and magic, counts
 *   its records, advances past it; a partial batch at the end of a partition's records
 *   (Kafka may cut the last one) is fetched again next time. Stops at COUNT records.
 * sink: a fake broker for the client's own ceiling: writes its port to PORT_FILE, takes
 *   one connection, answers every Produce (v3-8) with error 0 without storing anything,
 *   and exits when the client hangs up.
 *
 * produce and consume print one JSON line: records, bytes, requests, seconds (from before
 * connecting to the last answer). Exit status 0 only if everything was acknowledged/read;
 * otherwise a line starting with "ERROR:" on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>
#endif

static const char CLIENT_ID[] = "kafka_raw";

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ERROR: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ CRC32C (Castagnoli) */

static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc32c_sw(uint32_t c, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t c, const uint8_t *p,
                                                              size_t n) {
    uint64_t c64 = c;
    while (n && ((uintptr_t)p & 7)) {
        c64 = _mm_crc32_u8((uint32_t)c64, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    while (n--) c64 = _mm_crc32_u8((uint32_t)c64, *p++);
    return (uint32_t)c64;
}
#endif

static int have_sse42;

static uint32_t crc32c(const uint8_t *p, size_t n) {
#if defined(__x86_64__)
    if (have_sse42) return ~crc32c_hw(~0u, p, n);
#endif
    return ~crc32c_sw(~0u, p, n);
}

static void crc_setup(void) {
    crc_init();
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) have_sse42 = (c & bit_SSE4_2) != 0;
#endif
    static const uint8_t check[] = "123456789"; /* the standard check value */
    if (crc32c(check, 9) != 0xE3069283u || ~crc32c_sw(~0u, check, 9) != 0xE3069283u)
        die("CRC32C self-check failed");
}

/* ------------------------------------------------------------------ big-endian bytes */

static uint8_t *put8(uint8_t *p, uint8_t v) { *p = v; return p + 1; }
static uint8_t *put16(uint8_t *p, int16_t v) {
    uint16_t u = (uint16_t)v;
    p[0] = (uint8_t)(u >> 8); p[1] = (uint8_t)u;
    return p + 2;
}
static uint8_t *put32(uint8_t *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    p[0] = (uint8_t)(u >> 24); p[1] = (uint8_t)(u >> 16); p[2] = (uint8_t)(u >> 8); p[3] = (uint8_t)u;
    return p + 4;
}
static uint8_t *put64(uint8_t *p, int64_t v) {
    p = put32(p, (int32_t)((uint64_t)v >> 32));
    return put32(p, (int32_t)(uint32_t)v);
}
static uint8_t *put_str(uint8_t *p, const char *s) {
    size_t n = strlen(s);
    p = put16(p, (int16_t)n);
    memcpy(p, s, n);
    return p + n;
}
static uint8_t *put_varint(uint8_t *p, int64_t v) { /* zig-zag, then LEB128 */
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (u >= 0x80) {
        *p++ = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    *p++ = (uint8_t)u;
    return p;
}
static size_t varint_size(int64_t v) {
    uint8_t tmp[10];
    return (size_t)(put_varint(tmp, v) - tmp);
}

static uint32_t get32u(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static int64_t get64(const uint8_t *p) { return (int64_t)((uint64_t)get32u(p) << 32 | get32u(p + 4)); }

/* A bounds-checked reader over one response. */
typedef struct {
    const uint8_t *p, *end;
    const char *what;
} cursor;

static const uint8_t *take(cursor *c, size_t n) {
    if ((size_t)(c->end - c->p) < n) die("%s answer truncated", c->what);
    const uint8_t *at = c->p;
    c->p += n;
    return at;
}
static int16_t get_i16(cursor *c) { const uint8_t *p = take(c, 2); return (int16_t)(p[0] << 8 | p[1]); }
static int32_t get_i32(cursor *c) { return (int32_t)get32u(take(c, 4)); }
static int64_t get_i64(cursor *c) { return get64(take(c, 8)); }
static void skip_str(cursor *c) {
    int16_t n = get_i16(c);
    if (n > 0) take(c, (size_t)n);
}

/* ------------------------------------------------------------------ sockets */

static int connect_to(const char *address) {
    char host[256];
    const char *colon = strrchr(address, ':');
    if (!colon || (size_t)(colon - address) >= sizeof host) die("bad address %s", address);
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("bad IPv4 address %s", host);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect %s: %s", address, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("send: %s", w < 0 ? strerror(errno) : "connection closed");
        p += w;
        n -= (size_t)w;
    }
}

/* 1 when n bytes were read, 0 on a clean end of stream before the first byte. */
static int recv_all(int fd, uint8_t *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, p + got, n - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0 && got == 0) return 0;
        if (r <= 0) die("recv: %s", r < 0 ? strerror(errno) : "connection closed mid-frame");
        got += (size_t)r;
    }
    return 1;
}

/* Reads one frame into *buf (grown as needed); its size, or -1 at a clean end of stream. */
static ssize_t read_frame(int fd, uint8_t **buf, size_t *cap) {
    uint8_t head[4];
    if (!recv_all(fd, head, 4)) return -1;
    uint32_t size = get32u(head);
    if (size > (1u << 30)) die("frame of %u bytes", size);
    if (size > *cap) {
        free(*buf);
        *cap = size;
        *buf = xmalloc(size);
    }
    if (!recv_all(fd, *buf, size)) die("connection closed mid-frame");
    return (ssize_t)size;
}

/* The v1 request header after the size prefix: api_key, api_version, correlation id,
 * client id. Returns the position after it; the correlation id is at offset 8 of the frame. */
static uint8_t *request_header(uint8_t *p, int16_t key, int16_t version, int32_t corr) {
    p = put32(p, 0); /* size, patched by finish_request */
    p = put16(p, key);
    p = put16(p, version);
    p = put32(p, corr);
    return put_str(p, CLIENT_ID);
}
static size_t finish_request(uint8_t *start, uint8_t *end) {
    size_t n = (size_t)(end - start);
    put32(start, (int32_t)(n - 4));
    return n;
}

/* ------------------------------------------------------------------ record batches */

enum { BATCH_HEADER = 61, ATTRIBUTES_AT = 21 };

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t record_size(int64_t delta, size_t size) {
    size_t body = 1 + 1 + varint_size(delta) + 1 + varint_size((int64_t)size) + size + 1;
    return varint_size((int64_t)body) + body;
}

/* Records of one batch up to `limit` bytes (at least one). */
static long records_fitting(size_t limit, size_t size, long most) {
    size_t total = BATCH_HEADER;
    long n = 0;
    while (n < most) {
        size_t r = record_size(n, size);
        if (n > 0 && total + r > limit) break;
        total += r;
        n++;
    }
    return n;
}

/* Writes a v2 batch of `count` keyless records of `size` bytes (values drawn from `pool`)
 * at `out`; returns its size. baseOffset 0, partitionLeaderEpoch -1 (the broker stamps
 * both), producerId -1, epoch -1, sequence -1, no compression, CreateTime now. */
static size_t build_batch(uint8_t *out, long count, size_t size, const uint8_t *pool) {
    int64_t ts = wall_ms();
    uint8_t *p = out + BATCH_HEADER;
    for (long i = 0; i < count; i++) {
        size_t body = 1 + 1 + varint_size(i) + 1 + varint_size((int64_t)size) + size + 1;
        p = put_varint(p, (int64_t)body);
        p = put8(p, 0);             /* attributes */
        p = put_varint(p, 0);       /* timestampDelta */
        p = put_varint(p, i);       /* offsetDelta */
        p = put_varint(p, -1);      /* key: null */
        p = put_varint(p, (int64_t)size);
        memcpy(p, pool + (size_t)i % 4096, size);
        p += size;
        p = put_varint(p, 0);       /* headers */
    }
    size_t total = (size_t)(p - out);
    uint8_t *h = out;
    h = put64(h, 0);                        /* baseOffset */
    h = put32(h, (int32_t)(total - 12));    /* batchLength */
    h = put32(h, -1);                       /* partitionLeaderEpoch */
    h = put8(h, 2);                         /* magic */
    uint8_t *crc_at = h;
    h = put32(h, 0);                        /* crc, below */
    h = put16(h, 0);                        /* attributes */
    h = put32(h, (int32_t)(count - 1));     /* lastOffsetDelta */
    h = put64(h, ts);                       /* baseTimestamp */
    h = put64(h, ts);                       /* maxTimestamp */
    h = put64(h, -1);                       /* producerId */
    h = put16(h, -1);                       /* producerEpoch */
    h = put32(h, -1);                       /* baseSequence */
    put32(h, (int32_t)count);               /* recordsCount */
    put32(crc_at, (int32_t)crc32c(out + ATTRIBUTES_AT, total - ATTRIBUTES_AT));
    return total;
}

static uint8_t *value_pool(size_t size) {
    uint8_t *pool = xmalloc(size + 4096);
    static const char alphabet[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < size + 4096; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        pool[i] = (uint8_t)alphabet[x % 62];
    }
    return pool;
}

/* ------------------------------------------------------------------ produce */

typedef struct {
    uint8_t *bytes;
    size_t size;
    int parts;          /* partitions in it */
    long *counts;       /* records per partition in it (0: not in it) */
} request;

/* A Produce v7 request giving partition i counts[i] records (skipped when 0). */
static request produce_request(const char *topic, int partitions, const long *counts, size_t size,
                               const uint8_t *pool, int acks) {
    size_t cap = 64 + strlen(topic);
    for (int i = 0; i < partitions; i++)
        if (counts[i]) {
            cap += 8 + BATCH_HEADER;
            for (long r = 0; r < counts[i]; r++) cap += record_size(r, size);
        }
    request q = {.bytes = xmalloc(cap), .counts = xmalloc(sizeof(long) * (size_t)partitions)};
    memcpy(q.counts, counts, sizeof(long) * (size_t)partitions);
    uint8_t *p = request_header(q.bytes, 0, 7, 0);
    p = put16(p, -1);               /* transactional_id: null */
    p = put16(p, (int16_t)acks);
    p = put32(p, 30000);            /* timeout_ms */
    p = put32(p, 1);                /* topics */
    p = put_str(p, topic);
    uint8_t *nparts = p;
    p = put32(p, 0);
    for (int i = 0; i < partitions; i++) {
        if (!counts[i]) continue;
        p = put32(p, i);
        uint8_t *len = p;
        size_t n = build_batch(p + 4, counts[i], size, pool);
        put32(len, (int32_t)n);
        p += 4 + n;
        q.parts++;
    }
    put32(nparts, q.parts);
    q.size = finish_request(q.bytes, p);
    if (q.size > cap) die("request overran its buffer");
    return q;
}

/* Checks one Produce v7 answer to `q` sent with correlation id `corr`; next[i] is where
 * partition i's next batch must land (-1 until the first answer). */
static void check_produce(const uint8_t *f, size_t n, int32_t corr, const request *q,
                          int partitions, int64_t *next) {
    cursor c = {f, f + n, "Produce"};
    int32_t got = get_i32(&c);
    if (got != corr) die("Produce answer has correlation id %d, expected %d", got, corr);
    int32_t topics = get_i32(&c);
    int seen = 0;
    for (int32_t t = 0; t < topics; t++) {
        skip_str(&c);
        int32_t parts = get_i32(&c);
        for (int32_t i = 0; i < parts; i++) {
            int32_t index = get_i32(&c);
            int16_t error = get_i16(&c);
            int64_t base = get_i64(&c);
            get_i64(&c); /* log_append_time_ms */
            get_i64(&c); /* log_start_offset */
            if (error != 0) die("Produce to partition %d: error code %d", index, error);
            if (index < 0 || index >= partitions || !q->counts[index])
                die("Produce answer names partition %d, which was not sent", index);
            if (next[index] >= 0 && base != next[index])
                die("partition %d: batch stored at offset %lld, expected %lld", index,
                    (long long)base, (long long)next[index]);
            next[index] = base + q->counts[index];
            seen++;
        }
    }
    get_i32(&c); /* throttle_time_ms */
    if (seen != q->parts) die("Produce answer covers %d partitions of %d", seen, q->parts);
}

static int produce(int argc, char **argv) {
    if (argc < 7)
        die("usage: %s produce HOST:PORT TOPIC PARTITIONS COUNT SIZE [BATCH_BYTES [IN_FLIGHT [ACKS]]]",
            argv[0]);
    const char *address = argv[2], *topic = argv[3];
    int partitions = atoi(argv[4]);
    long count = atol(argv[5]);
    size_t size = (size_t)atol(argv[6]);
    size_t batch_bytes = argc > 7 ? (size_t)atol(argv[7]) : 1000000;
    int in_flight = argc > 8 ? atoi(argv[8]) : 5;
    int acks = argc > 9 ? atoi(argv[9]) : 1;
    if (partitions < 1 || count < 1 || in_flight < 1 || (acks != 1 && acks != -1))
        die("PARTITIONS, COUNT and IN_FLIGHT must be positive; ACKS 1 or -1 (0 is not answered)");

    double start = now_s();
    uint8_t *pool = value_pool(size);
    long per_batch = records_fitting(batch_bytes, size, count);
    long per_request = per_batch * partitions;
    long full = count / per_request, rest = count % per_request;
    long *counts = xmalloc(sizeof(long) * (size_t)partitions);
    for (int i = 0; i < partitions; i++) counts[i] = per_batch;
    request whole = produce_request(topic, partitions, counts, size, pool, acks);
    request tail = {0};
    if (rest) { /* the last request: the rest spread over the partitions */
        for (int i = 0; i < partitions; i++) counts[i] = rest / partitions + (i < rest % partitions);
        tail = produce_request(topic, partitions, counts, size, pool, acks);
    }
    long total_requests = full + (rest ? 1 : 0);
    const request **sent = xmalloc(sizeof(request *) * (size_t)in_flight);
    int64_t *next = xmalloc(sizeof(int64_t) * (size_t)partitions);
    for (int i = 0; i < partitions; i++) next[i] = -1;

    int fd = connect_to(address);
    uint8_t *frame = NULL;
    size_t cap = 0;
    long issued = 0, answered = 0;
    uint64_t bytes_sent = 0;
    while (answered < total_requests) {
        if (issued < total_requests && issued - answered < in_flight) {
            request *q = issued < full ? &whole : &tail;
            put32(q->bytes + 8, (int32_t)issued); /* correlation id */
            send_all(fd, q->bytes, q->size);
            bytes_sent += q->size;
            sent[issued % in_flight] = q;
            issued++;
            continue;
        }
        ssize_t n = read_frame(fd, &frame, &cap);
        if (n < 0) die("broker closed the connection after %ld answers", answered);
        check_produce(frame, (size_t)n, (int32_t)answered, sent[answered % in_flight], partitions,
                      next);
        answered++;
    }
    double elapsed = now_s() - start;
    close(fd);
    printf("{\"mode\": \"produce\", \"records\": %ld, \"size\": %zu, \"partitions\": %d, "
           "\"records_per_batch\": %ld, \"requests\": %ld, \"request_bytes\": %llu, "
           "\"seconds\": %.6f, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f}\n",
           count, size, partitions, per_batch, total_requests, (unsigned long long)bytes_sent,
           elapsed, (double)count / elapsed, (double)count * (double)size / elapsed / 1e6);
    return 0;
}

/* ------------------------------------------------------------------ consume */

static int consume(int argc, char **argv) {
    if (argc < 6) die("usage: %s consume HOST:PORT TOPIC PARTITIONS COUNT [MAX_BYTES]", argv[0]);
    const char *address = argv[2], *topic = argv[3];
    int partitions = atoi(argv[4]);
    long count = atol(argv[5]);
    long max_bytes = argc > 6 ? atol(argv[6]) : 16L * 1024 * 1024;
    if (partitions < 1 || count < 1 || max_bytes < 1024) die("bad PARTITIONS, COUNT or MAX_BYTES");
    int32_t part_bytes = (int32_t)(max_bytes / partitions);

    double start = now_s();
    int64_t *offset = xmalloc(sizeof(int64_t) * (size_t)partitions);
    for (int i = 0; i < partitions; i++) offset[i] = 0;
    size_t req_cap = 64 + strlen(topic) + 16 * (size_t)partitions;
    uint8_t *req = xmalloc(req_cap);
    uint8_t *frame = NULL;
    size_t cap = 0;
    int fd = connect_to(address);
    long got = 0, requests = 0, batches = 0;
    uint64_t bytes = 0;
    double last_progress = now_s();
    while (got < count) {
        uint8_t *p = request_header(req, 1, 4, (int32_t)requests);
        p = put32(p, -1);               /* replica_id */
        p = put32(p, 10);               /* max_wait_ms */
        p = put32(p, 1);                /* min_bytes */
        p = put32(p, (int32_t)max_bytes);
        p = put8(p, 0);                 /* isolation_level: read uncommitted */
        p = put32(p, 1);                /* topics */
        p = put_str(p, topic);
        p = put32(p, partitions);
        for (int i = 0; i < partitions; i++) {
            p = put32(p, i);
            p = put64(p, offset[i]);
            p = put32(p, part_bytes);
        }
        send_all(fd, req, finish_request(req, p));
        ssize_t n = read_frame(fd, &frame, &cap);
        if (n < 0) die("broker closed the connection after %ld fetches", requests);
        cursor c = {frame, frame + n, "Fetch"};
        int32_t corr = get_i32(&c);
        if (corr != (int32_t)requests) die("Fetch answer has correlation id %d, expected %ld", corr, requests);
        requests++;
        get_i32(&c); /* throttle_time_ms */
        int32_t topics = get_i32(&c);
        long before = got;
        for (int32_t t = 0; t < topics; t++) {
            skip_str(&c);
            int32_t parts = get_i32(&c);
            for (int32_t k = 0; k < parts; k++) {
                int32_t index = get_i32(&c);
                int16_t error = get_i16(&c);
                get_i64(&c); /* high_watermark */
                get_i64(&c); /* last_stable_offset */
                int32_t aborted = get_i32(&c);
                if (aborted > 0) take(&c, (size_t)aborted * 16);
                int32_t len = get_i32(&c);
                const uint8_t *r = len > 0 ? take(&c, (size_t)len) : NULL;
                if (error != 0) die("Fetch of partition %d: error code %d", index, error);
                if (index < 0 || index >= partitions) die("Fetch answer names partition %d", index);
                size_t pos = 0, end = len > 0 ? (size_t)len : 0;
                while (end - pos >= 12) { /* whole batches; a cut last one is left */
                    const uint8_t *b = r + pos;
                    int64_t base = get64(b);
                    uint32_t blen = get32u(b + 8);
                    if (blen < BATCH_HEADER - 12)
                        die("partition %d: batch at offset %lld has length %u", index,
                            (long long)base, blen);
                    size_t whole = 12 + (size_t)blen;
                    if (whole > end - pos) break;
                    if (b[16] != 2) die("partition %d: batch magic %d", index, b[16]);
                    uint32_t stored = get32u(b + 17);
                    uint32_t actual = crc32c(b + ATTRIBUTES_AT, whole - ATTRIBUTES_AT);
                    if (stored != actual)
                        die("partition %d: batch at offset %lld fails its CRC32C "
                            "(stored %08x, computed %08x)", index, (long long)base, stored, actual);
                    int64_t last = base + (int32_t)get32u(b + 23);
                    int32_t records = (int32_t)get32u(b + 57);
                    if (last >= offset[index]) {
                        got += base >= offset[index] ? records : (long)(last + 1 - offset[index]);
                        offset[index] = last + 1;
                    }
                    batches++;
                    bytes += whole;
                    pos += whole;
                }
            }
        }
        double t = now_s();
        if (got > before)
            last_progress = t;
        else if (t - last_progress > 30)
            die("no new records for 30 s: read %ld of %ld", got, count);
    }
    double elapsed = now_s() - start;
    close(fd);
    printf("{\"mode\": \"consume\", \"records\": %ld, \"partitions\": %d, \"batches\": %ld, "
           "\"batch_bytes\": %llu, \"requests\": %ld, \"seconds\": %.6f, \"msgs_per_s\": %.1f, "
           "\"mb_per_s\": %.3f}\n",
           got, partitions, batches, (unsigned long long)bytes, requests, elapsed,
           (double)got / elapsed, (double)bytes / elapsed / 1e6);
    return 0;
}

/* ------------------------------------------------------------------ sink */

static int sink(int argc, char **argv) {
    if (argc < 3) die("usage: %s sink PORT_FILE", argv[0]);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0)
        die("listen: %s", strerror(errno));
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
    FILE *pf = fopen(tmp, "w");
    if (!pf) die("%s: %s", tmp, strerror(errno));
    fprintf(pf, "%d\n", ntohs(sa.sin_port));
    fclose(pf);
    if (rename(tmp, argv[2]) != 0) die("rename %s: %s", tmp, strerror(errno));
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) die("accept: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint8_t *frame = NULL, *out = xmalloc(1 << 16);
    size_t cap = 0;
    static int64_t next[1024]; /* offsets handed out per partition (of any topic) */
    for (;;) {
        ssize_t n = read_frame(fd, &frame, &cap);
        if (n < 0) break;
        cursor c = {frame, frame + n, "sink: Produce request"};
        int16_t key = get_i16(&c), version = get_i16(&c);
        int32_t corr = get_i32(&c);
        skip_str(&c); /* client id */
        if (key != 0 || version < 3 || version > 8) die("sink serves Produce v3-8, got %d v%d", key, version);
        skip_str(&c); /* transactional id */
        int16_t acks = get_i16(&c);
        get_i32(&c); /* timeout */
        uint8_t *p = put32(out, 0);
        p = put32(p, corr);
        int32_t topics = get_i32(&c);
        p = put32(p, topics);
        for (int32_t t = 0; t < topics; t++) {
            int16_t len = get_i16(&c);
            const uint8_t *name = take(&c, (size_t)(len > 0 ? len : 0));
            p = put16(p, len);
            memcpy(p, name, (size_t)(len > 0 ? len : 0));
            p += len > 0 ? len : 0;
            int32_t parts = get_i32(&c);
            p = put32(p, parts);
            for (int32_t i = 0; i < parts; i++) {
                if (p - out > (1 << 16) - 64) die("sink: too many partitions");
                int32_t index = get_i32(&c);
                if (index < 0 || index >= 1024) die("sink: partition %d", index);
                p = put32(p, index);
                int32_t rl = get_i32(&c);
                const uint8_t *r = rl > 0 ? take(&c, (size_t)rl) : NULL;
                int64_t base = next[index];
                for (int32_t at = 0; rl - at >= BATCH_HEADER; at += 12 + (int32_t)get32u(r + at + 8))
                    next[index] += (int32_t)get32u(r + at + 23) + 1; /* lastOffsetDelta + 1 */
                p = put16(p, 0);   /* error_code */
                p = put64(p, base);
                p = put64(p, -1);  /* log_append_time_ms */
                if (version >= 5) p = put64(p, 0);
                if (version >= 8) { p = put32(p, 0); p = put16(p, -1); }
            }
        }
        p = put32(p, 0); /* throttle_time_ms */
        if (acks != 0) send_all(fd, out, finish_request(out, p));
    }
    return 0;
}

int main(int argc, char **argv) {
    crc_setup();
    if (argc >= 2 && strcmp(argv[1], "produce") == 0) return produce(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "consume") == 0) return consume(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "sink") == 0) return sink(argc, argv);
    fprintf(stderr,
            "usage: %s produce HOST:PORT TOPIC PARTITIONS COUNT SIZE [BATCH_BYTES [IN_FLIGHT [ACKS]]]\n"
            "       %s consume HOST:PORT TOPIC PARTITIONS COUNT [MAX_BYTES]\n"
            "       %s sink PORT_FILE\n",
            argv[0], argv[0], argv[0]);
    return 2;
}
