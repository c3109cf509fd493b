/*
 * frameblast: a 32-bit length-prefixed echo load generator that checks every
 * echoed byte.
 *
 * Built by bench/frames.py with the system compiler (cc -O2). One thread,
 * epoll, loopback only. The frames are what Twisted's Int32StringReceiver
 * speaks: a 4-byte unsigned big-endian length, then that many bytes.
 *
 *   frameblast -p PORT [-c CONNS] [-k INFLIGHT] [-s SIZE] [-w WARMUP] [-d SECONDS]
 *              [-P SERVER_PID] [-T DEADLINE] [-H ADDR]
 *       CONNS connections, each keeping INFLIGHT frames of SIZE payload bytes
 *       in flight: every time a whole echoed frame is back and verified, the
 *       next one is sent. Frames are counted over SECONDS after WARMUP
 *       seconds.
 *
 * With -P PID, the result also gives the CPU time process PID (the server)
 * used during the measuring window, in cores (server_cpu=), and how busy the
 * whole machine was over the same window (machine_cpu=, steal_cpu=, in
 * cores, from /proc/stat), read at the instants the window opens and closes;
 * client_cpu= is this program's own CPU time over the window, which shows
 * whether the client could have been the bottleneck.
 *
 * Every frame's payload starts with its sequence number (8 hex digits)
 * followed by filler that depends on the connection, so a byte that is lost,
 * duplicated, reordered or altered (the prefix included), or a frame echoed
 * on the wrong connection, is a mismatch. On a mismatch or an unexpected
 * close the program says where and exits 1; on usage or system errors it
 * exits 2. The result is one line of key=value pairs on stdout.
 *
 * The host is always a loopback address; the program stops by itself after
 * -T seconds (default 900) whatever happens.
 */
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
#include <time.h>
#include <unistd.h>

#define PREFIX 4           /* bytes of the length prefix */
#define STAMP 8            /* hex digits of the sequence number */
#define READ_SIZE 65536
#define MAX_EVENTS 256

struct conn {
    int fd;
    int id;
    int out_armed;          /* EPOLLOUT registered */
    uint32_t send_seq;      /* next frame to send */
    uint32_t recv_seq;      /* frame being received */
    size_t recv_off;        /* bytes of that frame received so far */
    char *expect;           /* the frame being received, as it must come back */
    char *out;              /* bytes not yet accepted by the kernel */
    size_t out_start, out_end, out_cap;
};

static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static int opt_conns = 1;
static int opt_inflight = 1;
static size_t opt_size = 64;
static double opt_warmup = 1.0;
static double opt_duration = 3.0;
static double opt_deadline = 900.0;
static int opt_server_pid = 0;
static size_t frame_len;     /* PREFIX + opt_size */
static struct sockaddr_in server_addr;

static void die(const char *what) {
    fprintf(stderr, "frameblast: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(void) {
    fprintf(stderr,
            "usage: frameblast -p PORT [-H ADDR] [-c CONNS] [-k INFLIGHT] [-s SIZE]\n"
            "                  [-w WARMUP] [-d SECONDS] [-T DEADLINE] [-P SERVER_PID]\n");
    exit(2);
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
    long long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld",
               &utime, &stime) != 2)
        return -1;
    return utime + stime;
}

/* Machine-wide busy and steal clock ticks from /proc/stat; 0, or -1. */
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
    *busy = v[0] + v[1] + v[2] + v[5] + v[6];
    *steal = v[7];
    return 0;
}

/* Frame `seq` of connection `id`: prefix, stamp, filler. */
static void make_frame(char *dst, int id, uint32_t seq) {
    static const char hex[] = "0123456789abcdef";
    uint32_t n = htonl((uint32_t)opt_size);
    memcpy(dst, &n, PREFIX);
    char *payload = dst + PREFIX;
    size_t stamp = opt_size < STAMP ? opt_size : STAMP;
    for (size_t i = 0; i < stamp; i++)
        payload[i] = hex[(seq >> (4 * (STAMP - 1 - i))) & 0xf];
    for (size_t i = stamp; i < opt_size; i++)
        payload[i] = (char)('a' + (unsigned)(id * 7 + (int)i) % 26);
}

/* Only the stamp changes from one frame of a connection to the next. */
static void restamp(char *dst, uint32_t seq) {
    static const char hex[] = "0123456789abcdef";
    size_t stamp = opt_size < STAMP ? opt_size : STAMP;
    for (size_t i = 0; i < stamp; i++)
        dst[PREFIX + i] = hex[(seq >> (4 * (STAMP - 1 - i))) & 0xf];
}

static void conn_init(struct conn *c, int id) {
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->id = id;
    c->expect = malloc(frame_len);
    c->out_cap = (size_t)opt_inflight * 2 * frame_len;
    c->out = malloc(c->out_cap);
    if (!c->expect || !c->out)
        die("malloc");
    make_frame(c->expect, id, 0);
}

static int new_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Queue `n` new frames on `c` (the buffer always has room: see callers). */
static void queue_frames(struct conn *c, unsigned n) {
    if (c->out_end + n * frame_len > c->out_cap) {
        size_t pending = c->out_end - c->out_start;
        memmove(c->out, c->out + c->out_start, pending);
        c->out_start = 0;
        c->out_end = pending;
    }
    if (c->out_end + n * frame_len > c->out_cap) {
        fprintf(stderr, "frameblast: internal error: send buffer overflow\n");
        exit(2);
    }
    for (unsigned i = 0; i < n; i++) {
        make_frame(c->out + c->out_end, c->id, c->send_seq++);
        c->out_end += frame_len;
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
 * Check received bytes against what was sent. Returns the number of frames
 * completed, or -1 on a mismatch (after reporting it).
 */
static long verify(struct conn *c, const char *data, size_t n) {
    long frames = 0;
    while (n) {
        size_t want = frame_len - c->recv_off;
        size_t take = n < want ? n : want;
        if (memcmp(data, c->expect + c->recv_off, take) != 0) {
            size_t i = 0;
            while (data[i] == c->expect[c->recv_off + i])
                i++;
            fprintf(stderr,
                    "frameblast: MISMATCH on connection %d, frame %u, byte %zu: "
                    "got 0x%02x, expected 0x%02x\n",
                    c->id, c->recv_seq, c->recv_off + i, (unsigned char)data[i],
                    (unsigned char)c->expect[c->recv_off + i]);
            return -1;
        }
        data += take;
        n -= take;
        c->recv_off += take;
        if (c->recv_off == frame_len) {
            c->recv_off = 0;
            c->recv_seq++;
            restamp(c->expect, c->recv_seq);
            frames++;
        }
    }
    return frames;
}

/* The measuring window: warm-up, then a fixed duration. */
struct window {
    double start, t0, t1;
    long c0, c1;
    double cpu0, cpu1;
    long long server0, server1;
    long long busy0, busy1, steal0, steal1;
    int phase; /* 0 warm-up, 1 measuring, 2 done */
};

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

static void print_result(const struct window *w, long total) {
    double secs = w->t1 - w->t0;
    long counted = w->c1 - w->c0;
    double tick = (double)sysconf(_SC_CLK_TCK);
    printf("mode=echo conns=%d inflight=%d size=%zu count=%ld seconds=%.6f "
           "per_sec=%.1f total=%ld client_cpu=%.3f",
           opt_conns, opt_inflight, opt_size, counted, secs,
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

static int run_echo(void) {
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct conn *conns = calloc((size_t)opt_conns, sizeof *conns);
    if (!conns)
        die("calloc");
    for (int i = 0; i < opt_conns; i++) {
        struct conn *c = &conns[i];
        conn_init(c, i);
        c->fd = new_socket();
        if (connect(c->fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0)
            die("connect");
        int fl = fcntl(c->fd, F_GETFL);
        fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
    }
    for (int i = 0; i < opt_conns; i++) {
        queue_frames(&conns[i], (unsigned)opt_inflight);
        if (flush(ep, &conns[i]) < 0)
            die("send");
    }
    static char buf[READ_SIZE];
    struct epoll_event events[MAX_EVENTS];
    long count = 0;
    struct window w = {.start = now()};
    while (w.phase != 2) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 100);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (events[i].events & EPOLLOUT) {
                if (flush(ep, c) < 0) {
                    fprintf(stderr, "frameblast: connection %d broken while sending: %s\n",
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
                            "frameblast: server closed connection %d after %u frames (%s)\n",
                            c->id, c->recv_seq, r == 0 ? "end of stream" : strerror(errno));
                    return 1;
                }
                long frames = verify(c, buf, (size_t)r);
                if (frames < 0)
                    return 1;
                if (frames) {
                    count += frames;
                    queue_frames(c, (unsigned)frames);
                    if (flush(ep, c) < 0) {
                        fprintf(stderr, "frameblast: connection %d broken: %s\n", c->id,
                                strerror(errno));
                        return 1;
                    }
                }
            }
        }
        window_tick(&w, count);
    }
    print_result(&w, count);
    return 0;
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "H:p:c:k:s:w:d:T:P:")) != -1) {
        switch (opt) {
        case 'H': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'c': opt_conns = atoi(optarg); break;
        case 'k': opt_inflight = atoi(optarg); break;
        case 's': opt_size = (size_t)atol(optarg); break;
        case 'w': opt_warmup = atof(optarg); break;
        case 'd': opt_duration = atof(optarg); break;
        case 'T': opt_deadline = atof(optarg); break;
        case 'P': opt_server_pid = atoi(optarg); break;
        default: usage();
        }
    }
    if (opt_port <= 0 || opt_conns <= 0 || opt_inflight <= 0 || opt_size < 1 ||
        opt_size > 0x7fffffff)
        usage();
    memset(&server_addr, 0, sizeof server_addr);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &server_addr.sin_addr) != 1 ||
        (ntohl(server_addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "frameblast: -H must be a loopback address (127.0.0.0/8)\n");
        return 2;
    }
    frame_len = PREFIX + opt_size;
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)opt_deadline); /* stop by ourselves whatever happens */
    return run_echo();
}
