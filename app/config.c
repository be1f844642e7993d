/* config.c -- see config.h. */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#include "combine.h"
#include "config.h"
#include "lock.h"
#include "decimal.h"

#define DEFAULT_DATABASE_URL "postgresql://127.0.0.1:5433/redisdistributedlock"
#define DEFAULT_REDIS_URL    "redis://127.0.0.1:6380"

/* Every setting the responder reads: config_load() takes the numbers from
 * here, --help lists them all, and a name close to one of them is called a
 * likely typo (config_classify_name). */
struct setting {
    const char *name;
    const char *help; /* for --help */
    /* A whole number: its unit (NULL: not a number), default, bounds, and
     * the int in struct config. */
    const char *unit;
    int def, min, max;
    size_t offset;
};

#define NUMBER(unit, def, min, max, field) unit, def, min, max, offsetof(struct config, field)

static const struct setting settings[] = {
    {"DATABASE_URL", "PostgreSQL: a libpq connection string or postgresql:// URI", NULL, 0, 0, 0,
     0},
    {"REDIS_URL", "redis://[[user]:password@]host[:port][/db] or unix:///path", NULL, 0, 0, 0, 0},
    {"REDIS_SENTINELS", "host[:port],...: the Redis Sentinels to ask for the primary", NULL, 0, 0,
     0, 0},
    {"REDIS_MASTER_NAME", "the name the sentinels know the primary by", NULL, 0, 0, 0, 0},
    {"REDIS_SENTINEL_PASSWORD", "the sentinels' own password", NULL, 0, 0, 0, 0},
    {"LOCK_TTL_MS", "lock expiry", NUMBER("milliseconds", 5000, 100, 600000, lock_ttl_ms)},
    {"LOCK_WAIT_MS", "a buyer's wait for a busy product",
     NUMBER("milliseconds", 1000, 0, 60000, lock_wait_ms)},
    {"STATEMENT_TIMEOUT_MS", "PostgreSQL statement_timeout",
     NUMBER("milliseconds", 500, 10, 60000, statement_timeout_ms)},
    {"REDIS_TIMEOUT_MS", "Redis connect and command timeout",
     NUMBER("milliseconds", 250, 10, 10000, redis_timeout_ms)},
    {"COMBINE_MAX", "queued purchases a lock holder takes with its own, 0: none",
     NUMBER("purchases", COMBINE_MAX_DEFAULT, 0, LOCK_BATCH_MAX, combine_max)},
    {"LOG_LEVEL", "error, warn, info or debug (default info)", NULL, 0, 0, 0, 0},
    {"METRICS_FILE", "the workers' shared metrics (default: metrics beside the socket)", NULL, 0, 0,
     0, 0},
    {"FCGI_WEB_SERVER_ADDRS", "libfcgi: the web servers allowed to connect to a TCP socket", NULL,
     0, 0, 0, 0},
};

#define SETTING_COUNT (sizeof settings / sizeof settings[0])

static int fail(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return -1;
}

/* A plain decimal within bounds: "010", "+5", " 5" and "5ms" are typos
 * worth rejecting rather than guessing at. */
static int parse_int(const char *s, int min, int max, int *out)
{
    int64_t v;
    if (decimal_parse(s, strlen(s), max, &v) != 0 || v < min)
        return -1;
    *out = (int)v;
    return 0;
}

static int copy_str(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        return -1;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Copies a URL userinfo part, decoding %XX (passwords often need it). */
static int copy_decoded(char *dst, size_t cap, const char *src, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)src[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hexval((unsigned char)src[i + 1]), lo = hexval((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (n + 1 >= cap)
            return -1;
        dst[n++] = (char)c;
    }
    dst[n] = '\0';
    return 0;
}

static int parse_userinfo(const char *s, size_t len, struct redis_target *t)
{
    const char *colon = memchr(s, ':', len);
    if (colon == NULL) /* redis://secret@host is the password, as redis-cli reads it */
        return copy_decoded(t->password, sizeof t->password, s, len);
    if (copy_decoded(t->username, sizeof t->username, s, (size_t)(colon - s)) < 0)
        return -1;
    return copy_decoded(t->password, sizeof t->password, colon + 1, len - (size_t)(colon - s) - 1);
}

static int parse_hostport(const char *s, size_t len, int default_port, struct redis_target *t)
{
    const char *port = NULL;
    size_t hostlen = len;
    if (len > 0 && s[0] == '[') { /* [::1]:6379 */
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return -1;
        if (copy_str(t->host, sizeof t->host, s + 1, (size_t)(close - s - 1)) < 0)
            return -1;
        if (close + 1 < s + len) {
            if (close[1] != ':')
                return -1;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', len);
        if (colon != NULL) {
            hostlen = (size_t)(colon - s);
            port = colon + 1;
        }
        if (copy_str(t->host, sizeof t->host, s, hostlen) < 0)
            return -1;
    }
    if (t->host[0] == '\0')
        return -1;
    t->port = default_port;
    if (port != NULL) {
        char buf[8];
        if (copy_str(buf, sizeof buf, port, (size_t)(s + len - port)) < 0)
            return -1;
        if (parse_int(buf, 1, 65535, &t->port) < 0)
            return -1;
    }
    return 0;
}

int config_parse_redis_url(const char *url, struct redis_target *out, char *err, size_t errlen)
{
    struct redis_target t;
    memset(&t, 0, sizeof t);

    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7;
        if (path[0] != '/' || copy_str(t.path, sizeof t.path, path, strlen(path)) < 0)
            goto bad;
        *out = t;
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0)
        goto bad;

    const char *rest = url + 8;
    const char *slash = strchr(rest, '/');
    const char *end = slash ? slash : rest + strlen(rest);
    const char *at = memchr(rest, '@', (size_t)(end - rest));
    if (at != NULL) {
        if (parse_userinfo(rest, (size_t)(at - rest), &t) < 0)
            goto bad;
        rest = at + 1;
    }
    if (parse_hostport(rest, (size_t)(end - rest), 6379, &t) < 0)
        goto bad;
    if (slash != NULL && slash[1] != '\0' && parse_int(slash + 1, 0, 65535, &t.db) < 0)
        goto bad;
    *out = t;
    return 0;
bad:
    /* Never echo the URL: it may carry a password. */
    return fail(err, errlen,
                "REDIS_URL must look like redis://[[user]:password@]host[:port][/db] "
                "or unix:///path/to/redis.sock");
}

int config_parse_sentinels(const char *list, const char *master, struct redis_sentinels *out,
                           char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strpbrk(list, " \t\n") != NULL)
        return fail(err, errlen, "REDIS_SENTINELS must look like host[:port],host[:port]...");
    if (list[0] == '\0' && master[0] != '\0')
        return fail(err, errlen, "REDIS_MASTER_NAME needs REDIS_SENTINELS, the sentinels to ask");
    for (const char *p = list; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        struct redis_target t;
        memset(&t, 0, sizeof t);
        if (out->count == CONFIG_SENTINELS_MAX)
            return fail(err, errlen, "REDIS_SENTINELS lists more than 8 sentinels");
        if (parse_hostport(p, len, 26379, &t) < 0)
            return fail(err, errlen, "REDIS_SENTINELS must look like host[:port],host[:port]...");
        memcpy(out->at[out->count].host, t.host, sizeof t.host);
        out->at[out->count++].port = t.port;
        p += len + (comma != NULL);
    }
    if (out->count == 0)
        return 0;
    size_t n = strlen(master);
    if (n == 0 || n >= sizeof out->master ||
        strspn(master, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       "abcdefghijklmnopqrstuvwxyz"
                       "0123456789._-") != n)
        return fail(err, errlen,
                    "REDIS_MASTER_NAME must name the primary the sentinels watch "
                    "(letters, digits, . _ -)");
    memcpy(out->master, master, n + 1);
    return 0;
}

static const char *lookup_or(config_lookup_fn lookup, const char *name, const char *def)
{
    const char *v = lookup(name);
    return v != NULL && v[0] != '\0' ? v : def;
}

static int load_database_url(struct config *cfg, config_lookup_fn lookup, char *err, size_t errlen)
{
    const char *url = lookup_or(lookup, "DATABASE_URL", DEFAULT_DATABASE_URL);
    if (copy_str(cfg->database_url, sizeof cfg->database_url, url, strlen(url)) < 0)
        return fail(err, errlen, "DATABASE_URL is longer than 1023 bytes");
    /* libpq parses without connecting, so a malformed URL fails the start
     * instead of every request. Its message may quote the URL: keep it out. */
    char *pqerr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &pqerr);
    if (opts == NULL) {
        PQfreemem(pqerr);
        return fail(err, errlen,
                    "DATABASE_URL is not a libpq connection string or postgresql:// URI");
    }
    PQconninfoFree(opts);
    return 0;
}

int config_load(struct config *cfg, config_lookup_fn lookup, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);

    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const struct setting *s = &settings[i];
        if (s->unit == NULL)
            continue;
        int *field = (int *)((char *)cfg + s->offset);
        const char *v = lookup(s->name);
        *field = s->def;
        if (v != NULL && v[0] != '\0' && parse_int(v, s->min, s->max, field) < 0) {
            snprintf(err, errlen, "%s must be a whole number of %s from %d to %d", s->name, s->unit,
                     s->min, s->max);
            return -1;
        }
    }

    if (load_database_url(cfg, lookup, err, errlen) < 0)
        return -1;
    if (config_parse_redis_url(lookup_or(lookup, "REDIS_URL", DEFAULT_REDIS_URL), &cfg->redis, err,
                               errlen) < 0)
        return -1;
    if (config_parse_sentinels(lookup_or(lookup, "REDIS_SENTINELS", ""),
                               lookup_or(lookup, "REDIS_MASTER_NAME", ""), &cfg->sentinels, err,
                               errlen) < 0)
        return -1;
    const char *sentinel_pw = lookup_or(lookup, "REDIS_SENTINEL_PASSWORD", "");
    if (sentinel_pw[0] != '\0' && cfg->sentinels.count == 0)
        return fail(err, errlen, "REDIS_SENTINEL_PASSWORD needs REDIS_SENTINELS");
    if (copy_str(cfg->sentinels.password, sizeof cfg->sentinels.password, sentinel_pw,
                 strlen(sentinel_pw)) < 0)
        return fail(err, errlen, "REDIS_SENTINEL_PASSWORD is longer than 255 bytes");
    if (cfg->sentinels.count > 0 && cfg->redis.path[0] != '\0')
        return fail(err, errlen,
                    "REDIS_SENTINELS needs a redis:// REDIS_URL (its credentials and database), "
                    "not unix://");
    if (log_parse_level(lookup_or(lookup, "LOG_LEVEL", "info"), &cfg->log_level) < 0)
        return fail(err, errlen, "LOG_LEVEL must be one of error, warn, info, debug");
    const char *metrics = lookup_or(lookup, "METRICS_FILE", "");
    if (metrics[0] != '\0' && metrics[0] != '/')
        return fail(err, errlen, "METRICS_FILE must be an absolute path");
    if (strlen(metrics) >= sizeof cfg->metrics_file)
        return fail(err, errlen, "METRICS_FILE is too long");
    memcpy(cfg->metrics_file, metrics, strlen(metrics) + 1);

    /* The lock must outlive the longest critical section of a healthy
     * purchase: the grant's reply and the release (each bounded by
     * REDIS_TIMEOUT_MS) and three PostgreSQL round trips (each given up on
     * after statement_timeout + STATEMENT_GRACE_MS): the purchase, then
     * either the COMMIT, which must find that much validity left, or the
     * stock read and the refusal's record. A shorter TTL would let a slow but
     * healthy purchase lose its lock. (The rare reseed after a Redis restart
     * takes longer; it checks the validity left before it goes on.) */
    long round = cfg->statement_timeout_ms + STATEMENT_GRACE_MS;
    long critical = 3L * round + 2L * cfg->redis_timeout_ms;
    if (cfg->lock_ttl_ms <= critical) {
        snprintf(err, errlen,
                 "LOCK_TTL_MS (%d) must exceed 3 x (STATEMENT_TIMEOUT_MS + %d) + "
                 "2 x REDIS_TIMEOUT_MS = %ld, the longest time a purchase may hold the lock",
                 cfg->lock_ttl_ms, STATEMENT_GRACE_MS, critical);
        return -1;
    }
    return 0;
}

void config_usage(FILE *out)
{
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const struct setting *s = &settings[i];
        if (s->unit == NULL)
            fprintf(out, "  %-23s %s\n", s->name, s->help);
        else
            fprintf(out, "  %-23s %s (%s, %d to %d; default %d)\n", s->name, s->help, s->unit,
                    s->min, s->max, s->def);
    }
}

#define NAME_LEN_MAX 64

/* The optimal string alignment distance between a and b (at most
 * NAME_LEN_MAX bytes each), case ignored: a letter wrong, missing or extra,
 * or two neighbours swapped, count one each. */
static int name_distance(const char *a, size_t la, const char *b, size_t lb)
{
    unsigned char d[NAME_LEN_MAX + 1][NAME_LEN_MAX + 1];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (unsigned char)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (unsigned char)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int same = toupper((unsigned char)a[i - 1]) == toupper((unsigned char)b[j - 1]);
            int v = d[i - 1][j - 1] + !same;
            if (d[i - 1][j] + 1 < v)
                v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (i > 1 && j > 1 &&
                toupper((unsigned char)a[i - 1]) == toupper((unsigned char)b[j - 2]) &&
                toupper((unsigned char)a[i - 2]) == toupper((unsigned char)b[j - 1]) &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = (unsigned char)v;
        }
    }
    return d[la][lb];
}

/* Whether word (len bytes, case ignored) is one of name's words, those
 * between underscores. */
static int has_word(const char *name, const char *word, size_t len)
{
    for (const char *p = name; *p != '\0';) {
        size_t n = strcspn(p, "_");
        if (n == len && strncasecmp(p, word, len) == 0)
            return 1;
        p += n + (p[n] == '_');
    }
    return 0;
}

/* Whether name, NAME_MS, has a word of a millisecond setting's name besides
 * MS (LOCK_TIMEOUT_MS, REDIS_CONNECT_TIMEOUT_MS): a setting meant for us,
 * not another program's (SENTINEL_DOWN_AFTER_MS is the stack's). */
static int like_a_millisecond_setting(const char *name, size_t len)
{
    if (len < 4 || strncasecmp(name + len - 3, "_MS", 3) != 0)
        return 0;
    size_t end = len - 3; /* the words before _MS */
    for (size_t at = 0; at < end;) {
        const char *us = memchr(name + at, '_', end - at);
        size_t n = us != NULL ? (size_t)(us - (name + at)) : end - at;
        for (size_t i = 0; i < SETTING_COUNT && n > 0; i++)
            if (settings[i].unit != NULL && strcmp(settings[i].unit, "milliseconds") == 0 &&
                has_word(settings[i].name, name + at, n))
                return 1;
        at += n + 1;
    }
    return 0;
}

enum config_name config_classify_name(const char *name, size_t len, char *msg, size_t cap)
{
    const struct setting *nearest = NULL;
    int best = 3;
    msg[0] = '\0';
    if (len > NAME_LEN_MAX)
        return CONFIG_NAME_OTHER;
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const char *s = settings[i].name;
        if (strlen(s) == len && strncmp(s, name, len) == 0)
            return CONFIG_NAME_SETTING;
        int d = name_distance(name, len, s, strlen(s));
        if (strlen(s) == len + 3 && strncasecmp(s, name, len) == 0 && strcmp(s + len, "_MS") == 0)
            d = 1; /* the unit left out: REDIS_TIMEOUT */
        /* Two slips in a long name; one in a short one. */
        if (d < best && d <= (strlen(s) >= 8 ? 2 : 1)) {
            best = d;
            nearest = &settings[i];
        }
    }
    if (nearest != NULL) {
        snprintf(msg, cap, "%.*s is not a setting (ignored): did you mean %s?", (int)len, name,
                 nearest->name);
        return CONFIG_NAME_SUSPECT;
    }
    if (!like_a_millisecond_setting(name, len))
        return CONFIG_NAME_OTHER;
    int n = snprintf(msg, cap, "%.*s is not a setting (ignored); the ones in milliseconds are",
                     (int)len, name);
    const char *sep = " ";
    for (size_t i = 0; i < SETTING_COUNT && n > 0 && (size_t)n < cap; i++) {
        if (settings[i].unit == NULL || strcmp(settings[i].unit, "milliseconds") != 0)
            continue;
        n += snprintf(msg + n, cap - (size_t)n, "%s%s", sep, settings[i].name);
        sep = ", ";
    }
    return CONFIG_NAME_SUSPECT;
}
