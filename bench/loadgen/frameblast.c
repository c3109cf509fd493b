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
 * -T seconds (default 900) whatever happens. The connections, the echo loop,
 * the checks and the window are shared with lineblast (blast_common.h).
 */
#define BLAST_NAME "frameblast"
#define BLAST_UNIT "frame"
#define PREFIX 4           /* bytes of the length prefix */
#define BLAST_STAMP_AT PREFIX
#define BLAST_DEFAULT_SIZE 64
#include "blast_common.h"

/* Frame `seq` of connection `id`: prefix, stamp, filler. */
static void make_msg(char *dst, int id, uint32_t seq) {
    uint32_t n = htonl((uint32_t)opt_size);
    memcpy(dst, &n, PREFIX);
    write_stamp(dst + PREFIX, seq);
    for (size_t i = opt_size < STAMP ? opt_size : STAMP; i < opt_size; i++)
        dst[PREFIX + i] = filler(id, i);
}

static void usage(void) {
    fprintf(stderr,
            "usage: frameblast -p PORT [-H ADDR] [-c CONNS] [-k INFLIGHT] [-s SIZE]\n"
            "                  [-w WARMUP] [-d SECONDS] [-T DEADLINE] [-P SERVER_PID]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "H:p:c:k:s:w:d:T:P:")) != -1) {
        if (!common_option(opt, optarg))
            usage();
    }
    if (opt_port <= 0 || opt_conns <= 0 || opt_inflight <= 0 || opt_size < 1 ||
        opt_size > 0x7fffffff)
        usage();
    if (common_setup() != 0)
        return 2;
    msg_len = PREFIX + opt_size;
    return run_echo();
}
