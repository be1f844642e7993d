/* fcgi_request.c -- a strict FastCGI client for the tests.
 *
 *   fcgi-request [--body-after FILE] SOCKET [NAME=VALUE...] < body
 *
 * Sends one responder request over a unix socket (the NAME=VALUE pairs as
 * its parameters, standard input as its body), prints the STDOUT stream (the
 * CGI answer) and exits 0 only if the application ended the request properly
 * with FCGI_END_REQUEST. cgi-fcgi treats a connection closed early as a
 * complete answer; a worker that forgets FCGX_Finish_r must fail a test.
 *
 * --body-after FILE sends the parameters, then waits until FILE exists
 * before it sends the body: the worker is then provably inside the request,
 * reading, for as long as the test needs (a signal test, say).
 *
 * Exit status: 0 complete, 3 closed without END_REQUEST, 4 no answer within
 * 30 s (a hung worker must fail a test, not hang it), 2 usage or I/O error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { BEGIN_REQUEST = 1, END_REQUEST = 3, PARAMS = 4, STDIN = 5, STDOUT = 6, STDERR = 7 };

#define BODY_MAX 65535 /* one STDIN record */

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* 0 on success, 1 at a clean end of file, -1 on error. */
static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return got == 0 ? 1 : -1;
        got += (size_t)n;
    }
    return 0;
}

static int record(int fd, int type, const void *content, size_t len)
{
    unsigned char head[8] = {
        1, (unsigned char)type, 0, 1, (unsigned char)(len >> 8), (unsigned char)len, 0, 0};
    return write_all(fd, head, sizeof head) < 0 || write_all(fd, content, len) < 0 ? -1 : 0;
}

static size_t put_length(unsigned char *out, size_t n)
{
    if (n < 128) {
        out[0] = (unsigned char)n;
        return 1;
    }
    out[0] = (unsigned char)(0x80 | n >> 24), out[1] = (unsigned char)(n >> 16);
    out[2] = (unsigned char)(n >> 8), out[3] = (unsigned char)n;
    return 4;
}

/* The NAME=VALUE arguments, encoded as one PARAMS record. */
static int send_params(int fd, int argc, char **argv)
{
    static unsigned char buf[65535];
    size_t used = 0;
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (eq == NULL)
            return -1;
        size_t nlen = (size_t)(eq - argv[i]), vlen = strlen(eq + 1);
        if (used + 8 + nlen + vlen > sizeof buf)
            return -1;
        used += put_length(buf + used, nlen);
        used += put_length(buf + used, vlen);
        memcpy(buf + used, argv[i], nlen);
        memcpy(buf + used + nlen, eq + 1, vlen);
        used += nlen + vlen;
    }
    return record(fd, PARAMS, buf, used) < 0 || record(fd, PARAMS, "", 0) < 0 ? -1 : 0;
}

/* Waits up to 30 s for path to exist. */
static void wait_for(const char *path)
{
    struct timespec tick = {.tv_nsec = 10 * 1000 * 1000};
    for (int i = 0; i < 3000 && access(path, F_OK) != 0; i++)
        nanosleep(&tick, NULL);
}

static int send_body(int fd)
{
    static char body[BODY_MAX];
    size_t len = fread(body, 1, sizeof body, stdin);
    if (len > 0 && record(fd, STDIN, body, len) < 0)
        return -1;
    return record(fd, STDIN, "", 0);
}

/* Copies STDOUT to stdout until END_REQUEST: 0, or 3 if the peer closed
 * first, or 2 on a read error or a malformed record. */
static int read_answer(int fd)
{
    static unsigned char content[65535 + 255];
    for (;;) {
        unsigned char h[8];
        int rc = read_all(fd, h, sizeof h);
        if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            fprintf(stderr, "fcgi-request: no answer within 30 s\n");
            return 4;
        }
        if (rc == 1) {
            fprintf(stderr, "fcgi-request: connection closed without FCGI_END_REQUEST\n");
            return 3;
        }
        size_t len = (size_t)h[4] << 8 | h[5], total = len + h[6];
        if (rc < 0 || h[0] != 1 || read_all(fd, content, total) != 0) {
            fprintf(stderr, "fcgi-request: malformed or truncated record\n");
            return 2;
        }
        if (h[1] == STDOUT && len > 0)
            fwrite(content, 1, len, stdout);
        else if (h[1] == STDERR && len > 0)
            fwrite(content, 1, len, stderr);
        else if (h[1] == END_REQUEST)
            return len >= 8 && content[4] == 0 ? 0 : 2; /* protocolStatus REQUEST_COMPLETE */
    }
}

int main(int argc, char **argv)
{
    const char *body_after = NULL;
    if (argc > 2 && strcmp(argv[1], "--body-after") == 0) {
        body_after = argv[2];
        argc -= 2;
        argv += 2;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: fcgi-request [--body-after FILE] SOCKET [NAME=VALUE...] < body\n");
        return 2;
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof addr.sun_path)
        return 2;
    strcpy(addr.sun_path, argv[1]);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct timeval limit = {.tv_sec = 30};
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) < 0) {
        perror("fcgi-request: connect");
        return 2;
    }
    static const unsigned char begin[8] = {0, 1 /* RESPONDER */, 0, 0, 0, 0, 0, 0};
    if (record(fd, BEGIN_REQUEST, begin, sizeof begin) < 0 ||
        send_params(fd, argc - 2, argv + 2) < 0) {
        fprintf(stderr, "fcgi-request: cannot send the request\n");
        return 2;
    }
    if (body_after != NULL)
        wait_for(body_after);
    if (send_body(fd) < 0) {
        fprintf(stderr, "fcgi-request: cannot send the body\n");
        return 2;
    }
    int rc = read_answer(fd);
    close(fd);
    return rc;
}
