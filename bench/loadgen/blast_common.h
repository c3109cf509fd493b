/*
 * blast_common.h: what lineblast.c and frameblast.c share. Both are echo load
 * generators that keep K messages in flight on each of N connections, check
 * every echoed byte, and report counts and CPU times over a measuring window;
 * they differ only in the message (a line ending in "\r\n", or a frame after
 * a 4-byte length) and in lineblast's extra modes (churn, idle).
 *
 * Header-only (static functions), one per program; every function here is
 * used by both programs, so `cc -O2 -Wall` has nothing to warn about. Before
 * including it, the program defines:
 *
 *   BLAST_NAME          its name for messages, e.g. "lineblast"
 *   BLAST_UNIT          what a message is called in messages, e.g. "line"
 *   BLAST_STAMP_AT      offset of the sequence number in a message
 *   BLAST_DEFAULT_SIZE  default payload size (-s)
 *
 * and after including it defines make_msg() (declared below), which writes
 * message `seq` of connection `id`: BLAST_STAMP_AT bytes of header, the
 * sequence number as STAMP hex digits (fewer if the payload is shorter), then
 * filler that depends on the connection, so that a byte lost, duplicated,
 * reordered or altered, or echoed on the wrong connection, is a mismatch.
 * msg_len must be set (from opt_size) before any connection is set up.
 */
#ifndef BLAST_COMMON_H
#define BLAST_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define STAMP 8            /* hex digits of the sequence number */
#define READ_SIZE 65536
#define MAX_EVENTS 256

struct conn {
    int fd;
    int id;
    int connected;
    int out_armed;          /* EPOLLOUT registered */
    uint32_t send_seq;      /* next message to send */
    uint32_t recv_seq;      /* message being received */
    size_t recv_off;        /* bytes of that message received so far */
    char *expect;           /* the message being received, as it must come back */
    char *out;              /* bytes not yet accepted by the kernel */
    size_t out_start, out_end, out_cap;
};

/* The options both programs take (-H -p -c -k -s -w -d -T -P). */
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static int opt_conns = 1;
static int opt_inflight = 1;
static size_t opt_size = BLAST_DEFAULT_SIZE;
static double opt_warmup = 1.0;
static double opt_duration = 3.0;
static double opt_deadline = 900.0;
static int opt_server_pid = 0;     /* -P: whose CPU time to report over the window */
static size_t msg_len;             /* bytes of one message, header and all */
static struct sockaddr_in server_addr;

static void make_msg(char *dst, int id, uint32_t seq);

static void die(const char *what) {
    fprintf(stderr, BLAST_NAME ": %s: %s\n", what, strerror(errno));
    exit(2);
}

/*
 * Take option `opt` with argument `arg` if it is one of the common ones;
 * returns 1 if it was, 0 if the program must handle it.
 */
static int common_option(int opt, const char *arg) {
    switch (opt) {
    case 'H': opt_host = arg; return 1;
    case 'p': opt_port = atoi(arg); return 1;
    case 'c': opt_conns = atoi(arg); return 1;
    case 'k': opt_inflight = atoi(arg); return 1;
    case 's': opt_size = (size_t)atol(arg); return 1;
    case 'w': opt_warmup = atof(arg); return 1;
    case 'd': opt_duration = atof(arg); return 1;
    case 'T': opt_deadline = atof(arg); return 1;
    case 'P': opt_server_pid = atoi(arg); return 1;
    default: return 0;
    }
}

/*
 * Set server_addr from -H and -p, refusing any host outside 127.0.0.0/8,
 * ignore SIGPIPE, arm the -T deadline and raise the open files limit.
 * Returns 0, or 2 (the exit status) after saying why.
 */
static int common_setup(void) {
    memset(&server_addr, 0, sizeof server_addr);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &server_addr.sin_addr) != 1 ||
        (ntohl(server_addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, BLAST_NAME ": -H must be a loopback address (127.0.0.0/8)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)opt_deadline); /* stop by ourselves whatever happens */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Clock ticks of CPU time (user + system) used so far by process `pid`, or -1. */
static long long proc_ticks(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (!p)
        return -1;
    /* After ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt
       majflt cmajflt utime(14) stime(15). */
    long long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld",
               &utime, &stime) != 2)
        return -1;
    return utime + stime;
}

/* Machine-wide clock ticks from /proc/stat: busy (all but idle and iowait)
   and steal, summed over all CPUs. Returns 0, or -1 if unreadable. */
static int machine_ticks(long long *busy, long long *steal) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    long long v[10] = {0};
    int got = fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld", &v[0],
                     &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (got < 8)
        return -1;
    /* user nice system idle iowait irq softirq steal (guest time is already
       counted in user). */
    *busy = v[0] + v[1] + v[2] + v[5] + v[6];
    *steal = v[7];
    return 0;
}

/* Write the sequence number `seq` at `dst`, as make_msg does. */
static void write_stamp(char *dst, uint32_t seq) {
    static const char hex[] = "0123456789abcdef";
    size_t stamp = opt_size < STAMP ? opt_size : STAMP;
    for (size_t i = 0; i < stamp; i++)
        dst[i] = hex[(seq >> (4 * (STAMP - 1 - i))) & 0xf];
}

/* Filler byte `i` of the payload of connection `id`'s messages. */
static char filler(int id, size_t i) {
    return (char)('a' + (unsigned)(id * 7 + (int)i) % 26);
}

/* Room for `out_msgs` messages waiting to be sent, and the expected one. */
static void conn_init(struct conn *c, int id, size_t out_msgs) {
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->id = id;
    c->expect = malloc(msg_len);
    c->out_cap = out_msgs * msg_len;
    c->out = malloc(c->out_cap);
    if (!c->expect || !c->out)
        die("malloc");
}

/* Back to message 0, nothing queued, not connected. */
static void conn_reset(struct conn *c) {
    c->send_seq = c->recv_seq = 0;
    c->recv_off = 0;
    c->out_start = c->out_end = 0;
    c->out_armed = 0;
    c->connected = 0;
    make_msg(c->expect, c->id, 0);
}

static int new_socket(int nonblocking) {
    int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Queue `n` new messages on `c` (the buffer always has room: see callers). */
static void queue_msgs(struct conn *c, unsigned n) {
    if (c->out_end + n * msg_len > c->out_cap) {
        size_t pending = c->out_end - c->out_start;
        memmove(c->out, c->out + c->out_start, pending);
        c->out_start = 0;
        c->out_end = pending;
    }
    if (c->out_end + n * msg_len > c->out_cap) {
        fprintf(stderr, BLAST_NAME ": internal error: send buffer overflow\n");
        exit(2);
    }
    for (unsigned i = 0; i < n; i++) {
        make_msg(c->out + c->out_end, c->id, c->send_seq++);
        c->out_end += msg_len;
    }
}

static void set_out(int ep, struct conn *c, int want) {
    if (c->out_armed == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
    c->out_armed = want;
}

/* Send what is queued; returns -1 if the connection is broken. */
static int flush(int ep, struct conn *c) {
    while (c->out_start < c->out_end) {
        ssize_t w = send(c->fd, c->out + c->out_start, c->out_end - c->out_start,
                         MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out(ep, c, 1);
                return 0;
            }
            if (errno == EINTR)
                continue;
            return -1;
        }
        c->out_start += (size_t)w;
    }
    c->out_start = c->out_end = 0;
    set_out(ep, c, 0);
    return 0;
}

/*
 * Check received bytes against what was sent. Returns the number of messages
 * completed, or -1 on a mismatch (after reporting it).
 */
static long verify(struct conn *c, const char *data, size_t n) {
    long done = 0;
    while (n) {
        size_t want = msg_len - c->recv_off;
        size_t take = n < want ? n : want;
        if (memcmp(data, c->expect + c->recv_off, take) != 0) {
            size_t i = 0;
            while (data[i] == c->expect[c->recv_off + i])
                i++;
            fprintf(stderr,
                    BLAST_NAME ": MISMATCH on connection %d, " BLAST_UNIT " %u, byte %zu: "
                    "got 0x%02x, expected 0x%02x\n",
                    c->id, c->recv_seq, c->recv_off + i, (unsigned char)data[i],
                    (unsigned char)c->expect[c->recv_off + i]);
            return -1;
        }
        data += take;
        n -= take;
        c->recv_off += take;
        if (c->recv_off == msg_len) {
            c->recv_off = 0;
            c->recv_seq++;
            /* Only the stamp changes from one message of a connection to the next. */
            write_stamp(c->expect + BLAST_STAMP_AT, c->recv_seq);
            done++;
        }
    }
    return done;
}

/* The measuring window: warm-up, then a fixed duration. */
struct window {
    double start, t0, t1;
    long c0, c1;
    double cpu0, cpu1;
    long long server0, server1;       /* -P process's ticks */
    long long busy0, busy1, steal0, steal1; /* machine-wide ticks */
    int phase; /* 0 warm-up, 1 measuring, 2 done */
};

/* Read every clock at one instant: the window's edge. */
static void window_edge(double *t, double *cpu, long long *server, long long *busy,
                        long long *steal) {
    *server = opt_server_pid ? proc_ticks(opt_server_pid) : -1;
    if (machine_ticks(busy, steal) < 0)
        *busy = *steal = -1;
    *cpu = cpu_seconds();
    *t = now();
}

static void window_tick(struct window *w, long count) {
    double t = now();
    if (w->phase == 0 && t >= w->start + opt_warmup) {
        w->phase = 1;
        w->c0 = count;
        window_edge(&w->t0, &w->cpu0, &w->server0, &w->busy0, &w->steal0);
    } else if (w->phase == 1 && t >= w->t0 + opt_duration) {
        w->phase = 2;
        w->c1 = count;
        window_edge(&w->t1, &w->cpu1, &w->server1, &w->busy1, &w->steal1);
    }
}

/* The result: one line of key=value pairs on stdout. */
static void print_result(const char *mode, const struct window *w, long total) {
    double secs = w->t1 - w->t0;
    long counted = w->c1 - w->c0;
    double tick = (double)sysconf(_SC_CLK_TCK);
    printf("mode=%s conns=%d inflight=%d size=%zu count=%ld seconds=%.6f "
           "per_sec=%.1f total=%ld client_cpu=%.3f",
           mode, opt_conns, opt_inflight, opt_size, counted, secs,
           secs > 0 ? (double)counted / secs : 0.0, total,
           secs > 0 ? (w->cpu1 - w->cpu0) / secs : 0.0);
    if (secs > 0 && w->server0 >= 0 && w->server1 >= 0)
        printf(" server_cpu=%.3f", (double)(w->server1 - w->server0) / tick / secs);
    if (secs > 0 && w->busy0 >= 0 && w->busy1 >= 0)
        printf(" machine_cpu=%.3f steal_cpu=%.3f",
               (double)(w->busy1 - w->busy0) / tick / secs,
               (double)(w->steal1 - w->steal0) / tick / secs);
    printf("\n");
    fflush(stdout);
}

/* epoll_wait for up to 100 ms (so the window is checked), retrying on EINTR. */
static int wait_events(int ep, struct epoll_event *events) {
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 100);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            die("epoll_wait");
    }
}

/*
 * The echo mode: opt_conns connections, each keeping opt_inflight messages
 * in flight, the next one sent as soon as a whole echoed one is back and
 * verified; messages counted over the window. Returns the exit status.
 */
static int run_echo(void) {
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct conn *conns = calloc((size_t)opt_conns, sizeof *conns);
    if (!conns)
        die("calloc");
    for (int i = 0; i < opt_conns; i++) {
        struct conn *c = &conns[i];
        conn_init(c, i, (size_t)opt_inflight * 2);
        conn_reset(c);
        c->fd = new_socket(0);
        if (connect(c->fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0)
            die("connect");
        int fl = fcntl(c->fd, F_GETFL);
        fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
        c->connected = 1;
    }
    for (int i = 0; i < opt_conns; i++) {
        queue_msgs(&conns[i], (unsigned)opt_inflight);
        if (flush(ep, &conns[i]) < 0)
            die("send");
    }
    static char buf[READ_SIZE];
    struct epoll_event events[MAX_EVENTS];
    long count = 0;
    struct window w = {.start = now()};
    while (w.phase != 2) {
        int n = wait_events(ep, events);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (events[i].events & EPOLLOUT) {
                if (flush(ep, c) < 0) {
                    fprintf(stderr, BLAST_NAME ": connection %d broken while sending: %s\n",
                            c->id, strerror(errno));
                    return 1;
                }
            }
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                if (r <= 0) {
                    fprintf(stderr,
                            BLAST_NAME ": server closed connection %d after %u " BLAST_UNIT
                            "s (%s)\n",
                            c->id, c->recv_seq, r == 0 ? "end of stream" : strerror(errno));
                    return 1;
                }
                long done = verify(c, buf, (size_t)r);
                if (done < 0)
                    return 1;
                if (done) {
                    count += done;
                    queue_msgs(c, (unsigned)done);
                    if (flush(ep, c) < 0) {
                        fprintf(stderr, BLAST_NAME ": connection %d broken: %s\n", c->id,
                                strerror(errno));
                        return 1;
                    }
                }
            }
        }
        window_tick(&w, count);
    }
    print_result("echo", &w, count);
    return 0;
}

#endif
