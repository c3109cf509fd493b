/*
 * lineblast: a line-echo load generator that checks every echoed byte.
 *
 * Built by bench/run.py with the system compiler (cc -O2). One thread, epoll,
 * loopback only. Three modes:
 *
 *   lineblast echo  -p PORT [-c CONNS] [-k INFLIGHT] [-s SIZE] [-w WARMUP] [-d SECONDS]
 *                   [-P SERVER_PID]
 *       CONNS connections, each keeping INFLIGHT lines of SIZE payload bytes
 *       plus "\r\n" in flight: every time a whole echoed line is back and
 *       verified, the next line is sent. Lines are counted over SECONDS after
 *       WARMUP seconds.
 *
 *   lineblast churn -p PORT [-c CONCURRENCY] [-s SIZE] [-w WARMUP] [-d SECONDS]
 *                   [-P SERVER_PID]
 *       CONCURRENCY independent loops of: connect, send one line, read the
 *       echo, close. Counts completed connections per second.
 *
 *   lineblast idle  -p PORT -b BATCH[,BATCH...] [-s SIZE] [-W WINDOW]
 *       Opens the connections of each batch, sends one line on each and
 *       waits for its echo, WINDOW connections at a time (default 256), so
 *       that the server has accepted the connection and its
 *       handler is waiting for the next line), prints "ready TOTAL", then
 *       waits for a line on stdin before the next batch. After the last batch
 *       it waits for end of input on stdin, closes everything and exits.
 *
 * With -P PID (echo and churn), the result also gives the CPU time process
 * PID (the server) used during the measuring window, in cores
 * (server_cpu=), and how busy the whole machine was over the same window
 * (machine_cpu=, in cores, from /proc/stat; steal_cpu= is time the
 * hypervisor gave to other guests), so that the driver can tell a saturated
 * server from one starved by other work on the machine. They are read at the
 * exact instants the window opens and closes.
 *
 * Every line carries its sequence number (8 hex digits) followed by filler
 * that depends on the connection, so a byte that is lost, duplicated,
 * reordered or altered, or a line echoed on the wrong connection, is a
 * mismatch. On a mismatch or an unexpected close the program says where and
 * exits 1; on usage or system errors it exits 2. Results are one line of
 * key=value pairs on stdout.
 *
 * The host is always 127.0.0.1 (-H accepts another loopback address); the
 * program stops by itself after -T seconds (default 900) whatever happens.
 * The connections, the echo mode, the checks and the window are shared with
 * frameblast (blast_common.h).
 */
#define BLAST_NAME "lineblast"
#define BLAST_UNIT "line"
#define BLAST_STAMP_AT 0
#define BLAST_DEFAULT_SIZE 16
#include "blast_common.h"

static const char *opt_batches = NULL;
static int opt_window = 256;       /* idle: connections opened before waiting for echoes */

/* Line `seq` of connection `id`: stamp, filler, "\r\n". */
static void make_msg(char *dst, int id, uint32_t seq) {
    write_stamp(dst, seq);
    for (size_t i = opt_size < STAMP ? opt_size : STAMP; i < opt_size; i++)
        dst[i] = filler(id, i);
    dst[opt_size] = '\r';
    dst[opt_size + 1] = '\n';
}

static void usage(void) {
    fprintf(stderr,
            "usage: lineblast echo|churn|idle -p PORT [-H ADDR] [-c CONNS] [-k INFLIGHT]\n"
            "                 [-s SIZE] [-w WARMUP] [-d SECONDS] [-b BATCHES] [-W WINDOW]\n"
            "                 [-T DEADLINE] [-P SERVER_PID]\n");
    exit(2);
}

static int churn_start(int ep, struct conn *c) {
    conn_reset(c);
    c->fd = new_socket(1);
    int r = connect(c->fd, (struct sockaddr *)&server_addr, sizeof server_addr);
    if (r < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "lineblast: connect: %s\n", strerror(errno));
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
    c->out_armed = 1;
    return 0;
}

static int run_churn(void) {
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct conn *conns = calloc((size_t)opt_conns, sizeof *conns);
    if (!conns)
        die("calloc");
    for (int i = 0; i < opt_conns; i++) {
        conn_init(&conns[i], i, 2);
        if (churn_start(ep, &conns[i]) < 0)
            return 1;
    }
    static char buf[READ_SIZE];
    struct epoll_event events[MAX_EVENTS];
    long count = 0;
    struct window w = {.start = now()};
    while (w.phase != 2) {
        int n = wait_events(ep, events);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c->connected) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    fprintf(stderr, "lineblast: connect failed after %ld connections: %s\n",
                            count, strerror(err));
                    return 1;
                }
                c->connected = 1;
                queue_msgs(c, 1);
                if (flush(ep, c) < 0) {
                    fprintf(stderr, "lineblast: send: %s\n", strerror(errno));
                    return 1;
                }
                continue;
            }
            if (events[i].events & EPOLLOUT) {
                if (flush(ep, c) < 0) {
                    fprintf(stderr, "lineblast: send: %s\n", strerror(errno));
                    return 1;
                }
            }
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                if (r <= 0) {
                    fprintf(stderr, "lineblast: server closed a connection before the echo (%s)\n",
                            r == 0 ? "end of stream" : strerror(errno));
                    return 1;
                }
                if (c->recv_off + (size_t)r > msg_len) {
                    fprintf(stderr, "lineblast: MISMATCH: more bytes echoed than sent\n");
                    return 1;
                }
                long lines = verify(c, buf, (size_t)r);
                if (lines < 0)
                    return 1;
                if (lines) {
                    /* Close (closing the fd also removes it from epoll). */
                    close(c->fd);
                    count++;
                    if (churn_start(ep, c) < 0)
                        return 1;
                }
            }
        }
        window_tick(&w, count);
    }
    print_result("churn", &w, count);
    return 0;
}

static int run_idle(void) {
    if (!opt_batches)
        usage();
    size_t cap = 0, total = 0;
    struct conn *conns = NULL;
    char *line = malloc(msg_len), *got = malloc(msg_len);
    if (!line || !got)
        die("malloc");
    const char *p = opt_batches;
    struct timeval tv = {.tv_sec = 30};
    while (*p) {
        long batch = strtol(p, (char **)&p, 10);
        if (batch <= 0)
            usage();
        if (*p == ',')
            p++;
        if (total + (size_t)batch > cap) {
            cap = total + (size_t)batch;
            conns = realloc(conns, cap * sizeof *conns);
            if (!conns)
                die("realloc");
        }
        /* In windows of -W connections: connect and send, then wait for each echo. */
        for (size_t start = total; start < total + (size_t)batch; start += (size_t)opt_window) {
            size_t end = start + (size_t)opt_window < total + (size_t)batch ? start + (size_t)opt_window : total + (size_t)batch;
            for (size_t i = start; i < end; i++) {
                struct conn *c = &conns[i];
                c->id = (int)i;
                c->fd = new_socket(0);
                setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
                if (connect(c->fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0) {
                    fprintf(stderr, "lineblast: connect #%zu: %s\n", i, strerror(errno));
                    return 2;
                }
                make_msg(line, c->id, 0);
                if (send(c->fd, line, msg_len, MSG_NOSIGNAL) != (ssize_t)msg_len)
                    die("send");
            }
            for (size_t i = start; i < end; i++) {
                struct conn *c = &conns[i];
                make_msg(line, c->id, 0);
                size_t have = 0;
                while (have < msg_len) {
                    ssize_t r = recv(c->fd, got + have, msg_len - have, 0);
                    if (r <= 0) {
                        fprintf(stderr, "lineblast: no echo on idle connection #%zu (%s)\n", i,
                                r == 0 ? "end of stream" : strerror(errno));
                        return 1;
                    }
                    have += (size_t)r;
                }
                if (memcmp(got, line, msg_len) != 0) {
                    fprintf(stderr, "lineblast: MISMATCH on idle connection #%zu\n", i);
                    return 1;
                }
            }
        }
        total += (size_t)batch;
        printf("ready %zu\n", total);
        fflush(stdout);
        char cmd[64];
        if (!fgets(cmd, sizeof cmd, stdin))
            break; /* end of input: done */
    }
    if (!*p) {
        /* After the last batch, hold the connections until end of input. */
        char cmd[64];
        while (fgets(cmd, sizeof cmd, stdin))
            ;
    }
    for (size_t i = 0; i < total; i++)
        close(conns[i].fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        usage();
    const char *mode = argv[1];
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "H:p:c:k:s:w:d:b:T:W:P:")) != -1) {
        if (common_option(opt, optarg))
            continue;
        switch (opt) {
        case 'b': opt_batches = optarg; break;
        case 'W': opt_window = atoi(optarg); break;
        default: usage();
        }
    }
    if (opt_port <= 0 || opt_conns <= 0 || opt_inflight <= 0 || opt_size < 1 || opt_window < 1)
        usage();
    if (common_setup() != 0)
        return 2;
    msg_len = opt_size + 2;
    if (strcmp(mode, "echo") == 0)
        return run_echo();
    if (strcmp(mode, "churn") == 0)
        return run_churn();
    if (strcmp(mode, "idle") == 0)
        return run_idle();
    usage();
    return 2;
}
