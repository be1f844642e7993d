/* main.c -- a FastCGI responder process: configuration, signals and the
 * accept loop.
 *
 * spawn-fcgi hands us the listening socket as fd 0 and multiwatch runs
 * several of us on it; each process serves one request at a time. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "clock.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "response.h"
#include "route.h"
#include "worker.h"

#define STOCK_VERSION "0.1.0"

static volatile sig_atomic_t stopping;

/* SIGTERM (spawn-fcgi, docker stop), SIGINT (Ctrl-C) and SIGUSR1
 * (multiwatch's graceful stop): finish the request in flight, then exit. */
static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

static int install_signals(sigset_t *stop_signals)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: the wait for a connection must return EINTR so an
     * idle worker stops at once. Installed before FCGX_Init(), which keeps
     * handlers it finds. */
    sa.sa_flags = 0;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
        sigaction(SIGUSR1, &sa, NULL) < 0)
        return -1;
    sigemptyset(stop_signals);
    sigaddset(stop_signals, SIGTERM);
    sigaddset(stop_signals, SIGINT);
    sigaddset(stop_signals, SIGUSR1);
    /* hiredis writes with plain write(): a dead Redis or nginx must give
     * EPIPE, not kill the worker. */
    return signal(SIGPIPE, SIG_IGN) == SIG_ERR ? -1 : 0;
}

/* An epoll instance on the listening socket (fd 0), made non-blocking.
 * EPOLLEXCLUSIVE: a new connection wakes one of the pool's idle workers, as
 * a blocking accept() did, not all of them. -1 on failure. */
static int listen_epoll(void)
{
    int flags = fcntl(0, F_GETFL);
    if (flags < 0 || fcntl(0, F_SETFL, flags | O_NONBLOCK) < 0)
        return -1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = 0};
    if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) {
        close(ep);
        return -1;
    }
    return ep;
}

/* Waits until the listening socket has a connection to accept, with the
 * stop signals unblocked (mask) for that wait only: -1 with errno EINTR
 * when one came. */
static int wait_for_connection(int ep, const sigset_t *mask)
{
    struct epoll_event ev;
    return epoll_pwait(ep, &ev, 1, -1, mask) < 0 ? -1 : 0;
}

static const char *env_lookup(const char *name)
{
    return getenv(name);
}

static void usage(FILE *out)
{
    fputs("usage: stock-fcgi [--help | --version | --check-config]\n"
          "\n"
          "A FastCGI responder for POST /buy/{id}. Run it under spawn-fcgi, which\n"
          "passes the listening socket as file descriptor 0, for example:\n"
          "  spawn-fcgi -n -s /run/stock.sock -M 0660 -- /usr/bin/multiwatch -f 4 -- stock-fcgi\n"
          "\n"
          "  --check-config  validate the environment, connect to PostgreSQL and Redis,\n"
          "                  and exit 0 if all is well (non-zero with the reason if not)\n"
          "\n"
          "Settings, from the environment (see nginx/README.md, Configuration):\n",
          out);
    config_usage(out);
}

/* Each environment variable that looks like a misspelt setting, which would
 * otherwise be ignored without a word, told to say(). */
static void warn_misspelt(void (*say)(const char *msg))
{
    extern char **environ;
    char msg[CONFIG_ERR_MAX];
    for (char **e = environ; *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq != NULL ? (size_t)(eq - *e) : strlen(*e);
        if (config_classify_name(*e, len, msg, sizeof msg) == CONFIG_NAME_SUSPECT)
            say(msg);
    }
}

static void say_on_stderr(const char *msg)
{
    fprintf(stderr, "stock-fcgi: warning: %s\n", msg);
}

static void say_in_log(const char *msg)
{
    log_warn("%s", msg);
}

/* Where this process would take requests from: fd 0, as spawn-fcgi passes
 * it ("unix:/run/stock-api/app.sock", "tcp:10.0.0.2:9000"), or why not.
 * FastCGI has no authentication, so a TCP socket is flagged unless
 * FCGI_WEB_SERVER_ADDRS (libfcgi's allow list of web servers) is set. */
static void listening_on(char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN];
    memset(&ss, 0, sizeof ss);
    if (getsockname(0, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(out, cap, "nothing: fd 0 is not a socket (spawn-fcgi passes one)");
        return;
    }
    if (ss.ss_family == AF_UNIX) {
        snprintf(out, cap, "unix:%s", ((struct sockaddr_un *)&ss)->sun_path);
        return;
    }
    const void *addr = &((struct sockaddr_in *)&ss)->sin_addr;
    in_port_t port = ((struct sockaddr_in *)&ss)->sin_port;
    if (ss.ss_family == AF_INET6) {
        addr = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        port = ((struct sockaddr_in6 *)&ss)->sin6_port;
    }
    if (inet_ntop(ss.ss_family, addr, host, sizeof host) == NULL)
        snprintf(host, sizeof host, "?");
    const char *allowed = getenv("FCGI_WEB_SERVER_ADDRS");
    snprintf(out, cap, "tcp:%s:%u%s", host, (unsigned)ntohs(port),
             allowed != NULL && allowed[0] != '\0'
                 ? ""
                 : " (no FCGI_WEB_SERVER_ADDRS: anyone who reaches it can send requests)");
}

/* --check-config: everything a worker does at start, then report. Its
 * answer is the report; the connections' own "connected" lines would only
 * repeat it on the caller's terminal. */
static int check_config(const struct config *cfg)
{
    struct store st;
    struct lock_client lc;
    log_set_level(LOG_WARN);
    warn_misspelt(say_on_stderr);
    int pg = store_open(&st, cfg), redis = lock_client_open(&lc, cfg);
    if (pg < 0)
        fprintf(stderr, "stock-fcgi: %s\n", st.pg.err);
    if (redis < 0)
        fprintf(stderr, "stock-fcgi: %s\n", lc.redis.err);
    store_close(&st);
    lock_client_close(&lc);
    if (pg < 0 || redis < 0)
        return 1;
    char listen[160];
    listening_on(listen, sizeof listen);
    printf("stock-fcgi: configuration ok; PostgreSQL and Redis answer; listening on %s\n", listen);
    return 0;
}

/* Where the metrics live: METRICS_FILE, else "metrics" beside the FastCGI
 * socket spawn-fcgi gave us (fd 0), a directory both pools share. Empty
 * when neither exists (a TCP socket): the worker then counts alone. */
static void metrics_path(const struct config *cfg, char *out, size_t cap)
{
    struct sockaddr_un sa;
    socklen_t len = sizeof sa;
    out[0] = '\0';
    if (cfg->metrics_file[0] != '\0') {
        snprintf(out, cap, "%s", cfg->metrics_file);
        return;
    }
    memset(&sa, 0, sizeof sa);
    if (getsockname(0, (struct sockaddr *)&sa, &len) < 0 || sa.sun_family != AF_UNIX ||
        sa.sun_path[0] != '/')
        return;
    char *slash = strrchr(sa.sun_path, '/');
    snprintf(out, cap, "%.*s/metrics", (int)(slash - sa.sun_path), sa.sun_path);
}

static void serve(struct worker *w, FCGX_Request *fcgi)
{
    struct http_request req;
    struct response res;
    int64_t start = clock_us();

    http_request_init(&req, fcgi);
    log_debug("%s %s: accepted", req.method, req.path ? req.path : "-");
    response_init(&res);
    route_handle(w, &req, &res);
    http_discard_input(&req);
    if (http_send(fcgi->out, &res) < 0)
        log_info("%s %s: client went away before the answer was sent", req.method,
                 req.path ? req.path : "-");
    const struct trace *t = &w->trace;
    struct log_request line = {
        .request_id = req.request_id,
        .method = req.method,
        .path = req.path,
        .status = res.status,
        .code = res.reason == PROBLEM_NONE ? "ok" : problem_info(res.reason)->code,
        .product = t->product,
        .amount = t->amount,
        .lock_wait_us = t->lock_wait_us,
        .total_us = clock_us() - start,
    };
    log_request(worker_log_level(w, &res), &line);
    response_free(&res);
}

int main(int argc, char **argv)
{
    const char *opt = argc > 1 ? argv[1] : "";
    if (strcmp(opt, "--version") == 0) {
        puts("stock-fcgi " STOCK_VERSION);
        return 0;
    }
    if (strcmp(opt, "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (argc > 2 || (opt[0] != '\0' && strcmp(opt, "--check-config") != 0)) {
        usage(stderr);
        return 2;
    }

    struct config cfg;
    char err[CONFIG_ERR_MAX];
    if (config_load(&cfg, env_lookup, err, sizeof err) < 0) {
        fprintf(stderr, "stock-fcgi: %s\n", err);
        return 2;
    }
    log_set_level(cfg.log_level);
    if (opt[0] != '\0')
        return check_config(&cfg);

    sigset_t stop_signals;
    if (install_signals(&stop_signals) < 0 || FCGX_Init() != 0) {
        fprintf(stderr, "stock-fcgi: cannot initialise signals or libfcgi\n");
        return 1;
    }
    if (FCGX_IsCGI()) {
        usage(stderr);
        return 2;
    }

    struct worker w;
    char metrics[sizeof cfg.metrics_file];
    metrics_path(&cfg, metrics, sizeof metrics);
    if (worker_open(&w, &cfg, metrics) < 0) {
        log_error("out of memory at start");
        return 1;
    }
    /* The settings, for whoever reads the log after an incident; the URLs
     * are left out, since they may carry passwords. */
    char listen[160];
    listening_on(listen, sizeof listen);
    log_info("worker ready: lock_ttl_ms=%d lock_wait_ms=%d statement_timeout_ms=%d "
             "redis_timeout_ms=%d listen=%s version=" STOCK_VERSION,
             cfg.lock_ttl_ms, cfg.lock_wait_ms, cfg.statement_timeout_ms, cfg.redis_timeout_ms,
             listen);
    warn_misspelt(say_in_log);

    FCGX_Request fcgi;
    if (FCGX_InitRequest(&fcgi, 0, 0) != 0) {
        log_error("cannot initialise the FastCGI request");
        worker_close(&w);
        return 1;
    }
    /* The stop signals may interrupt only the wait for a connection, in
     * epoll_pwait(); everything else runs with them blocked, and one that
     * arrives meanwhile is held until the answer is finished, and ends the
     * loop at the next wait. libfcgi 2.4.2 does not retry a read or write
     * that a signal interrupts, hiredis fails a connect that one
     * interrupts, and libfcgi's own accept loop, interrupted while it waits
     * for a new connection's first bytes (is_af_unix_keeper), closes it and
     * then, once a shutdown is pending, spins forever on the closed
     * descriptor: a worker at 100 % CPU that never stops (seen under load in
     * fault: sigterm-pool). So libfcgi never sees a signal, nor a pending
     * shutdown. The listening socket is non-blocking: when another worker
     * of the pool accepts the connection first, FCGX_Accept_r() answers
     * -EAGAIN instead of blocking with the signals held, and we wait again.
     * (What this costs: on a TCP socket, which has no keeper check, a peer
     * that connects and sends nothing holds the worker until it hangs up,
     * and a stop signal waits for that. The pools listen on unix sockets
     * that only nginx can reach.) */
    int rc = 0;
    sigset_t waiting;
    sigprocmask(SIG_BLOCK, &stop_signals, &waiting);
    sigdelset(&waiting, SIGTERM);
    sigdelset(&waiting, SIGINT);
    sigdelset(&waiting, SIGUSR1);
    int ep = listen_epoll();
    if (ep < 0) {
        log_error("cannot wait on the listening socket (fd 0): %s", strerror(errno));
        FCGX_Free(&fcgi, 1);
        worker_close(&w);
        return 1;
    }
    while (!stopping) {
        if (wait_for_connection(ep, &waiting) < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        rc = FCGX_Accept_r(&fcgi);
        if (rc == -EAGAIN || rc == -EWOULDBLOCK)
            continue; /* another worker took it */
        if (rc < 0)
            break;
        serve(&w, &fcgi);
        FCGX_Finish_r(&fcgi); /* now, not inside the next FCGX_Accept_r() */
    }
    close(ep);
    FCGX_Free(&fcgi, 1);
    worker_close(&w);

    if (!stopping) { /* not a signal: the socket failed (fd 0 closed, say) */
        log_error("accept failed (%d); exiting so the supervisor starts a fresh worker", rc);
        return 1;
    }
    log_info("worker stopped");
    return 0;
}
