/* test_config.c -- defaults, validation, REDIS_URL parsing, and the names
 * that look like misspelt settings. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "unit.h"

/* The environment the lookup sees: NAME=value pairs, NULL-terminated. */
static const char *const *fake_env;

static const char *fake_lookup(const char *name)
{
    size_t n = strlen(name);
    for (const char *const *e = fake_env; e != NULL && *e != NULL; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static int load(const char *const *env, struct config *cfg, char *err)
{
    fake_env = env;
    return config_load(cfg, fake_lookup, err, CONFIG_ERR_MAX);
}

static void config_defaults_match_the_local_stack(void)
{
    static const char *const env[] = {NULL};
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    CHECK(load(env, &cfg, err) == 0);
    CHECK(strcmp(cfg.database_url, "postgresql://127.0.0.1:5433/redisdistributedlock") == 0);
    CHECK(strcmp(cfg.redis.host, "127.0.0.1") == 0 && cfg.redis.port == 6380);
    CHECK(cfg.lock_ttl_ms == 5000 && cfg.lock_wait_ms == 1000);
    CHECK(cfg.statement_timeout_ms == 500 && cfg.redis_timeout_ms == 250);
    CHECK(cfg.log_level == LOG_INFO);
}

static void config_reads_every_variable(void)
{
    static const char *const env[] = {"DATABASE_URL=host=/tmp dbname=x",
                                      "REDIS_URL=unix:///run/redis.sock",
                                      "LOCK_TTL_MS=9000",
                                      "LOCK_WAIT_MS=0",
                                      "STATEMENT_TIMEOUT_MS=2000",
                                      "REDIS_TIMEOUT_MS=100",
                                      "LOG_LEVEL=debug",
                                      NULL};
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    CHECK(load(env, &cfg, err) == 0);
    CHECK(strcmp(cfg.database_url, "host=/tmp dbname=x") == 0);
    CHECK(strcmp(cfg.redis.path, "/run/redis.sock") == 0 && cfg.redis.host[0] == '\0');
    CHECK(cfg.lock_ttl_ms == 9000 && cfg.lock_wait_ms == 0);
    CHECK(cfg.statement_timeout_ms == 2000 && cfg.redis_timeout_ms == 100);
    CHECK(cfg.log_level == LOG_DEBUG);
}

static void config_rejects_bad_values_naming_the_variable(void)
{
    static const struct {
        const char *setting, *named;
    } cases[] = {
        {"LOCK_TTL_MS=abc", "LOCK_TTL_MS"},
        {"LOCK_TTL_MS=5000ms", "LOCK_TTL_MS"},
        {"LOCK_TTL_MS=-1", "LOCK_TTL_MS"},
        {"LOCK_TTL_MS=050", "LOCK_TTL_MS"},
        {"LOCK_TTL_MS=99999999999", "LOCK_TTL_MS"},
        {"LOCK_WAIT_MS=60001", "LOCK_WAIT_MS"},
        {"STATEMENT_TIMEOUT_MS=0", "STATEMENT_TIMEOUT_MS"},
        {"REDIS_TIMEOUT_MS=1.5", "REDIS_TIMEOUT_MS"},
        {"LOG_LEVEL=verbose", "LOG_LEVEL"},
        {"REDIS_URL=http://x", "REDIS_URL"},
        {"DATABASE_URL=postgresql://host/db?nosuchoption=1", "DATABASE_URL"},
        {"DATABASE_URL=dbname='unterminated", "DATABASE_URL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[] = {cases[i].setting, NULL};
        struct config cfg;
        char err[CONFIG_ERR_MAX] = "";
        CHECK_CASE(load(env, &cfg, err) < 0, cases[i].setting);
        CHECK_CASE(strstr(err, cases[i].named) != NULL, cases[i].setting);
    }
}

/* Each number's message names its unit: COMBINE_MAX counts purchases. */
static void config_messages_name_the_unit(void)
{
    static const char *const combine[] = {"COMBINE_MAX=65", NULL};
    static const char *const wait[] = {"LOCK_WAIT_MS=x", NULL};
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    CHECK(load(combine, &cfg, err) < 0);
    CHECK(strcmp(err, "COMBINE_MAX must be a whole number of purchases from 0 to 64") == 0);
    CHECK(load(wait, &cfg, err) < 0);
    CHECK(strcmp(err, "LOCK_WAIT_MS must be a whole number of milliseconds from 0 to 60000") == 0);
}

/* Every name config_load() looks up is a setting of the one table (the one
 * --help lists and typos are compared with). */
static int unknown_lookups;

static const char *checking_lookup(const char *name)
{
    char msg[CONFIG_ERR_MAX];
    if (config_classify_name(name, strlen(name), msg, sizeof msg) != CONFIG_NAME_SETTING) {
        printf("#   looked up %s, which is not in the settings table\n", name);
        unknown_lookups++;
    }
    return NULL;
}

static void config_reads_only_listed_settings(void)
{
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    unknown_lookups = 0;
    CHECK(config_load(&cfg, checking_lookup, err, sizeof err) == 0);
    CHECK(unknown_lookups == 0);
    /* And --help lists each of them. */
    char help[4096] = "";
    FILE *f = fmemopen(help, sizeof help - 1, "w");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    config_usage(f);
    fclose(f);
    static const char *const names[] = {"DATABASE_URL",
                                        "REDIS_URL",
                                        "REDIS_SENTINELS",
                                        "REDIS_MASTER_NAME",
                                        "REDIS_SENTINEL_PASSWORD",
                                        "LOCK_TTL_MS",
                                        "LOCK_WAIT_MS",
                                        "STATEMENT_TIMEOUT_MS",
                                        "REDIS_TIMEOUT_MS",
                                        "COMBINE_MAX",
                                        "LOG_LEVEL",
                                        "METRICS_FILE",
                                        "FCGI_WEB_SERVER_ADDRS"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK_CASE(strstr(help, names[i]) != NULL, names[i]);
    CHECK(strstr(help, "COMBINE_MAX             queued purchases") != NULL);
    CHECK(strstr(help, "(purchases, 0 to 64; default 32)") != NULL);
}

/* A misspelt setting would be ignored without a word: the names that look
 * like one are told apart from ours and from other programs'. */
static void names_that_look_like_misspelt_settings(void)
{
    static const struct {
        const char *name;
        enum config_name want;
        const char *says; /* in the message, for a suspect */
    } cases[] = {
        {"LOCK_WAIT_MS", CONFIG_NAME_SETTING, NULL},
        {"COMBINE_MAX", CONFIG_NAME_SETTING, NULL},
        {"FCGI_WEB_SERVER_ADDRS", CONFIG_NAME_SETTING, NULL},
        /* Slips: a letter wrong, missing, extra, two swapped; case. */
        {"LOCK_WIAT_MS", CONFIG_NAME_SUSPECT, "did you mean LOCK_WAIT_MS?"},
        {"LOG_LEVL", CONFIG_NAME_SUSPECT, "did you mean LOG_LEVEL?"},
        {"LOGLEVEL", CONFIG_NAME_SUSPECT, "did you mean LOG_LEVEL?"},
        {"REDIS_URLS", CONFIG_NAME_SUSPECT, "did you mean REDIS_URL?"},
        {"DATABSE_URI", CONFIG_NAME_SUSPECT, "did you mean DATABASE_URL?"},
        {"lock_ttl_ms", CONFIG_NAME_SUSPECT, "did you mean LOCK_TTL_MS?"},
        {"REDIS_TIMEOUT", CONFIG_NAME_SUSPECT, "did you mean REDIS_TIMEOUT_MS?"},
        {"COMBINE_MAXIMUM", CONFIG_NAME_OTHER, NULL},
        /* A millisecond setting of ours by its words, not by its spelling. */
        {"LOCK_TIMEOUT_MS", CONFIG_NAME_SUSPECT,
         "LOCK_TIMEOUT_MS is not a setting (ignored); the ones in milliseconds are LOCK_TTL_MS, "
         "LOCK_WAIT_MS, STATEMENT_TIMEOUT_MS, REDIS_TIMEOUT_MS"},
        {"REDIS_CONNECT_TIMEOUT_MS", CONFIG_NAME_SUSPECT, "the ones in milliseconds are"},
        {"lock_timeout_ms", CONFIG_NAME_SUSPECT, "the ones in milliseconds are"},
        /* Other programs' and the stack's own, which reach the responder
         * too: no warning. */
        {"SENTINEL_DOWN_AFTER_MS", CONFIG_NAME_OTHER, NULL},
        {"REDIS_PORT", CONFIG_NAME_OTHER, NULL},
        {"REDIS_PASSWORD", CONFIG_NAME_OTHER, NULL},
        {"SENTINEL_PASSWORD", CONFIG_NAME_OTHER, NULL},
        {"METRICS_ALLOW", CONFIG_NAME_OTHER, NULL},
        {"WORKERS", CONFIG_NAME_OTHER, NULL},
        {"PGPORT", CONFIG_NAME_OTHER, NULL},
        {"PATH", CONFIG_NAME_OTHER, NULL},
        {"STOCK_FAULT", CONFIG_NAME_OTHER, NULL},
        {"ASAN_OPTIONS", CONFIG_NAME_OTHER, NULL},
        {"TIMEOUT_MS", CONFIG_NAME_SUSPECT, "the ones in milliseconds are"},
        {"_MS", CONFIG_NAME_OTHER, NULL},
        {"MS", CONFIG_NAME_OTHER, NULL},
        {"", CONFIG_NAME_OTHER, NULL},
        {"AN_EXTREMELY_LONG_NAME_THAT_NO_SETTING_COMES_ANYWHERE_NEAR_AT_ALL_MS", CONFIG_NAME_OTHER,
         NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char msg[CONFIG_ERR_MAX] = "x";
        const char *n = cases[i].name;
        CHECK_CASE(config_classify_name(n, strlen(n), msg, sizeof msg) == cases[i].want, n);
        if (cases[i].says != NULL)
            CHECK_CASE(strstr(msg, cases[i].says) != NULL && strncmp(msg, n, strlen(n)) == 0, n);
        else
            CHECK_CASE(msg[0] == '\0', n);
    }
    /* The name ends at len: an environment entry is passed as it is. */
    char msg[CONFIG_ERR_MAX];
    CHECK(config_classify_name("LOCK_WAIT_MS=5", 12, msg, sizeof msg) == CONFIG_NAME_SETTING);
    CHECK(config_classify_name("LOCK_TIMEOUT_MS=5", 15, msg, sizeof msg) == CONFIG_NAME_SUSPECT);
    CHECK(strstr(msg, "=5") == NULL);
    CHECK(config_classify_name("PATH=/LOCK_TIMEOUT_MS", 4, msg, sizeof msg) == CONFIG_NAME_OTHER);
}

static void config_requires_ttl_above_critical_section(void)
{
    /* 3 x (1000 + 500 grace) + 2 x 250 = 5000 */
    static const char *const too_short[] = {"LOCK_TTL_MS=5000", "STATEMENT_TIMEOUT_MS=1000",
                                            "REDIS_TIMEOUT_MS=250", NULL};
    static const char *const enough[] = {"LOCK_TTL_MS=5001", "STATEMENT_TIMEOUT_MS=1000",
                                         "REDIS_TIMEOUT_MS=250", NULL};
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    CHECK(load(too_short, &cfg, err) < 0 && strstr(err, "LOCK_TTL_MS") != NULL);
    CHECK(load(enough, &cfg, err) == 0);
}

static void config_never_echoes_a_redis_password(void)
{
    static const char *const env[] = {"REDIS_URL=redis://:s3cret@host:notaport", NULL};
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    CHECK(load(env, &cfg, err) < 0);
    CHECK(strstr(err, "s3cret") == NULL);
}

static void redis_url_forms_parse(void)
{
    struct redis_target t;
    char err[CONFIG_ERR_MAX];
    CHECK(config_parse_redis_url("redis://localhost", &t, err, sizeof err) == 0);
    CHECK(strcmp(t.host, "localhost") == 0 && t.port == 6379 && t.db == 0 && !t.password[0]);
    CHECK(config_parse_redis_url("redis://10.0.0.2:7000/3", &t, err, sizeof err) == 0);
    CHECK(strcmp(t.host, "10.0.0.2") == 0 && t.port == 7000 && t.db == 3);
    CHECK(config_parse_redis_url("redis://:p%40ss@h:1", &t, err, sizeof err) == 0);
    CHECK(strcmp(t.password, "p@ss") == 0 && !t.username[0] && t.port == 1);
    CHECK(config_parse_redis_url("redis://app:pw@h/", &t, err, sizeof err) == 0);
    CHECK(strcmp(t.username, "app") == 0 && strcmp(t.password, "pw") == 0 && t.db == 0);
    CHECK(config_parse_redis_url("redis://[::1]:6380", &t, err, sizeof err) == 0);
    CHECK(strcmp(t.host, "::1") == 0 && t.port == 6380);
    CHECK(config_parse_redis_url("unix:///var/run/redis.sock", &t, err, sizeof err) == 0);
    CHECK(strcmp(t.path, "/var/run/redis.sock") == 0);
}

static void sentinels_parse(void)
{
    struct redis_sentinels s;
    char err[CONFIG_ERR_MAX];
    CHECK(config_parse_sentinels("", "", &s, err, sizeof err) == 0 && s.count == 0);
    CHECK(config_parse_sentinels("10.0.0.4,10.0.0.5:26380,[::1]:1", "stock", &s, err, sizeof err) ==
          0);
    CHECK(s.count == 3 && strcmp(s.master, "stock") == 0);
    CHECK(strcmp(s.at[0].host, "10.0.0.4") == 0 && s.at[0].port == 26379);
    CHECK(strcmp(s.at[1].host, "10.0.0.5") == 0 && s.at[1].port == 26380);
    CHECK(strcmp(s.at[2].host, "::1") == 0 && s.at[2].port == 1);
    /* A list needs the primary's name, a clean one; bad addresses, too many. */
    CHECK(config_parse_sentinels("h", "", &s, err, sizeof err) < 0 && strstr(err, "MASTER_NAME"));
    CHECK(config_parse_sentinels("h", "a b", &s, err, sizeof err) < 0);
    CHECK(config_parse_sentinels("h,,k", "m", &s, err, sizeof err) < 0 &&
          strstr(err, "REDIS_SENTINELS"));
    CHECK(config_parse_sentinels("h:0", "m", &s, err, sizeof err) < 0);
    CHECK(config_parse_sentinels("a,b,c,d,e,f,g,h,i", "m", &s, err, sizeof err) < 0);
    CHECK(config_parse_sentinels("h, k", "m", &s, err, sizeof err) < 0);
    CHECK(config_parse_sentinels(" h", "m", &s, err, sizeof err) < 0);
    /* A name without sentinels to ask is a mistake, not a no-op. */
    CHECK(config_parse_sentinels("", "m", &s, err, sizeof err) < 0 &&
          strstr(err, "REDIS_SENTINELS") != NULL);
}

static void sentinels_need_a_tcp_redis_url(void)
{
    static const char *const env[] = {"REDIS_SENTINELS=h", "REDIS_MASTER_NAME=m",
                                      "REDIS_URL=unix:///run/redis.sock", NULL};
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    CHECK(load(env, &cfg, err) < 0 && strstr(err, "REDIS_SENTINELS") != NULL);
}

/* The sentinels' own password: kept, and only with sentinels to give it to. */
static void sentinel_password(void)
{
    static const char *const with[] = {"REDIS_SENTINELS=h", "REDIS_MASTER_NAME=m",
                                       "REDIS_SENTINEL_PASSWORD=s3cret", NULL};
    static const char *const alone[] = {"REDIS_SENTINEL_PASSWORD=s3cret", NULL};
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    CHECK(load(with, &cfg, err) == 0 && strcmp(cfg.sentinels.password, "s3cret") == 0);
    CHECK(load(alone, &cfg, err) < 0 && strstr(err, "REDIS_SENTINEL_PASSWORD") != NULL &&
          strstr(err, "s3cret") == NULL);
}

static void redis_url_rejects_malformed(void)
{
    static const char *const bad[] = {
        "",
        "localhost:6379",
        "redis://",
        "redis://:6379",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:port",
        "redis://h/db",
        "redis://[::1",
        "redis://:pw%4@h",
        "unix://relative",
        "unix://",
        "rediss://h",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct redis_target t;
        char err[CONFIG_ERR_MAX] = "";
        CHECK_CASE(config_parse_redis_url(bad[i], &t, err, sizeof err) < 0, bad[i]);
        CHECK_CASE(strstr(err, "REDIS_URL") != NULL, bad[i]);
    }
}

void suite_config(void)
{
    RUN(config_defaults_match_the_local_stack);
    RUN(config_reads_every_variable);
    RUN(config_rejects_bad_values_naming_the_variable);
    RUN(config_messages_name_the_unit);
    RUN(config_reads_only_listed_settings);
    RUN(names_that_look_like_misspelt_settings);
    RUN(config_requires_ttl_above_critical_section);
    RUN(config_never_echoes_a_redis_password);
    RUN(redis_url_forms_parse);
    RUN(sentinels_parse);
    RUN(sentinels_need_a_tcp_redis_url);
    RUN(sentinel_password);
    RUN(redis_url_rejects_malformed);
}
