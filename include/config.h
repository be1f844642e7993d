/* config.h -- the responder's configuration, read once from the environment.
 *
 * Every setting has a default and a range. config_load() validates them all
 * before the worker touches the network, so a typo fails the start with a
 * message naming the variable instead of failing the first purchase.
 *
 * The stack-only variables (WORKERS, PORT, PGPORT, REDIS_PORT) are read by
 * tests/stack/stack.sh, not here: the responder never listens on a port.
 * Every setting is in one table in config.c: config_load() reads it,
 * config_usage() lists it, config_classify_name() compares names with it.
 */
#ifndef STOCK_CONFIG_H
#define STOCK_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "log.h"

#define CONFIG_URL_MAX 1024
#define CONFIG_ERR_MAX 256

/* statement_timeout is enforced by the server; a server that hangs would
 * never send the error. The store gives up on a statement this long after
 * statement_timeout would have fired (see store.c), and the lock TTL must
 * cover that bound too. */
#define STATEMENT_GRACE_MS 500

/* Where Redis lives: a TCP host and port, or a unix socket path. */
struct redis_target {
    char host[256]; /* empty for a unix socket */
    int port;
    char path[256];     /* empty for TCP */
    char username[128]; /* optional ACL user (AUTH user pass) */
    char password[256]; /* optional; never logged */
    int db;             /* SELECT db when non-zero */
};

/* Redis Sentinel (REDIS_SENTINELS, REDIS_MASTER_NAME, and
 * REDIS_SENTINEL_PASSWORD if the sentinels have a requirepass): the
 * sentinels to ask for the address of the primary of that name, in order.
 * With none (count 0), REDIS_URL names the server; with some, REDIS_URL
 * gives only the credentials and the database. */
#define CONFIG_SENTINELS_MAX 8
struct redis_sentinels {
    int count;
    struct {
        char host[256];
        int port;
    } at[CONFIG_SENTINELS_MAX];
    char master[128];
    char password[256]; /* the sentinels' own; empty: none; never logged */
};

struct config {
    char database_url[CONFIG_URL_MAX]; /* libpq conninfo string or URI */
    struct redis_target redis;
    struct redis_sentinels sentinels;
    int lock_ttl_ms;          /* lock expiry: must outlive the critical section */
    int lock_wait_ms;         /* how long a buyer may wait for a busy product */
    int statement_timeout_ms; /* PostgreSQL statement_timeout */
    int redis_timeout_ms;     /* hiredis connect and command timeout */
    int combine_max;          /* waiting purchases a lock holder makes with its own
                                 (combine.h); 0: one purchase per lock grant */
    enum log_level log_level;
    char metrics_file[CONFIG_URL_MAX]; /* METRICS_FILE; empty: beside the FastCGI socket */
};

/* Looks up one environment variable; NULL when unset. getenv() in production,
 * a table in the unit tests. */
typedef const char *(*config_lookup_fn)(const char *name);

/* Fills cfg from lookup, applying defaults. Returns 0, or -1 with a message
 * naming the offending variable in err. */
int config_load(struct config *cfg, config_lookup_fn lookup, char *err, size_t errlen);

/* Parses redis://[[user]:password@]host[:port][/db] or unix:///path.
 * Returns 0, or -1 with a message in err. */
int config_parse_redis_url(const char *url, struct redis_target *out, char *err, size_t errlen);

/* Parses REDIS_SENTINELS ("host[:port],host[:port]...", port 26379 by
 * default, at most CONFIG_SENTINELS_MAX) and REDIS_MASTER_NAME (letters,
 * digits, . _ -), which is required with it. An empty list is no Sentinel.
 * Returns 0, or -1 with a message in err. */
int config_parse_sentinels(const char *list, const char *master, struct redis_sentinels *out,
                           char *err, size_t errlen);

/* Lists every setting, one a line, with its bounds and default (--help). */
void config_usage(FILE *out);

/* What an environment variable's name (len bytes; "NAME=value" works) is to
 * the responder: one of its settings; another program's; or, likely, a
 * misspelt setting, which the responder would ignore: a name within two
 * slips of a setting's (a letter wrong, missing or extra, two swapped; case
 * ignored), or NAME_MS with a word of a millisecond setting's name. For the
 * last, msg (cap bytes) says so and what was meant; it is empty otherwise. */
enum config_name { CONFIG_NAME_SETTING, CONFIG_NAME_OTHER, CONFIG_NAME_SUSPECT };
enum config_name config_classify_name(const char *name, size_t len, char *msg, size_t cap);

#endif
