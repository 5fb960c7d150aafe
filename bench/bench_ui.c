/*
moescope - bench/bench_ui.c
Key-to-screen latency of the terminal UI while the engine recomputes a T5-base-sized layer
(d_model 768, d_ff 3072, 32768 tokens, from moescope-synth). Runs src/moescope in a
pseudo-terminal (120x40), waits until the layer is loaded and its first numbers are up,
switches to the coact strategy and the mlp router and opens the Estimates screen (MEO
for every k shown, the kernel timing: tens of seconds of work on both cores), then
presses `?` (help on / off: the whole screen changes) every 100 ms and measures, per
key, the time until the terminal receives text only the new screen has (the help's
"Finding and sorting", the Estimates screen's "Cost per token"), and until its first
output byte (which may be a progress redraw). The target is under 50 ms.

  bench/bench_ui [FILE.h5]   (default: $MOESCOPE_BENCH_FILE, else a fresh synth file)
  BENCH_UI_KEYS=N            keys to measure (default 60)
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The screen text seen so far (escape sequences included), for waiting on a phrase. */
static char seen[1 << 16];
static size_t seen_len;

static long drain(int fd, int timeout_ms) {
    long total = 0;
    char buf[65536];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, timeout_ms) > 0) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        total += n;
        for (ssize_t i = 0; i < n; i++) {
            if (seen_len == sizeof seen - 1) {
                memmove(seen, seen + sizeof seen / 2, sizeof seen / 2);
                seen_len -= sizeof seen / 2;
            }
            seen[seen_len++] = buf[i];
        }
        seen[seen_len] = '\0';
        timeout_ms = 0;
    }
    return total;
}

static bool waitFor(int fd, const char *phrase, double seconds) {
    double end = now() + seconds;
    while (now() < end) {
        if (strstr(seen, phrase))
            return true;
        drain(fd, 100);
    }
    return strstr(seen, phrase) != NULL;
}

static void sendKeys(int fd, const char *keys) {
    size_t n = strlen(keys);
    if (write(fd, keys, n) != (ssize_t)n)
        perror("bench_ui: write");
}

static int cmpDouble(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double cpuSeconds(pid_t pid) {
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    double s = 0;
    if (fgets(line, sizeof line, f)) {
        char *p = strrchr(line, ')');
        unsigned long ut = 0, st = 0;
        /* fields 14 and 15 (utime, stime) after the ")" closing the name */
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                        &st) == 2)
            s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    fclose(f);
    return s;
}

/* The directory of this program, for ../src/moescope. */
static void selfDir(char *out, size_t size) {
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n <= 0) {
        snprintf(out, size, ".");
        return;
    }
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (slash)
        *slash = '\0';
}

int main(int argc, char **argv) {
    char dir[PATH_MAX], exe[PATH_MAX + 32], synth[PATH_MAX + 32];
    selfDir(dir, sizeof dir);
    snprintf(exe, sizeof exe, "%s/../src/moescope", dir);
    snprintf(synth, sizeof synth, "%s/../src/moescope-synth", dir);
    const char *file = argc > 1 ? argv[1] : getenv("MOESCOPE_BENCH_FILE");
    char tmpdir[] = "/tmp/moescope-bench-ui.XXXXXX";
    char made[PATH_MAX + 32] = "";
    if (!file) {
        if (!mkdtemp(tmpdir)) {
            perror("bench_ui: mkdtemp");
            return 1;
        }
        snprintf(made, sizeof made, "%s/t5.h5", tmpdir);
        char cmd[3 * PATH_MAX];
        snprintf(cmd, sizeof cmd, "'%s' -o '%s' --layers 1", synth, made);
        printf("bench_ui: making a T5-base-sized layer: %s\n", cmd);
        fflush(stdout);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench_ui: moescope-synth failed\n");
            return 1;
        }
        file = made;
    }
    int keys = getenv("BENCH_UI_KEYS") ? atoi(getenv("BENCH_UI_KEYS")) : 60;
    if (keys < 1)
        keys = 60;

    struct winsize ws = {.ws_row = 40, .ws_col = 120};
    int master = -1;
    double t_start = now();
    pid_t pid = forkpty(&master, NULL, NULL, &ws);
    if (pid < 0) {
        perror("bench_ui: forkpty");
        return 1;
    }
    if (pid == 0) {
        setenv("TERM", "xterm-256color", 1);
        setenv("LANG", "C.UTF-8", 1);
        execl(exe, exe, file, (char *)NULL);
        _exit(127);
    }
    int status = 1;
    if (!waitFor(master, "moescope", 5)) {
        fprintf(stderr, "bench_ui: no screen from %s\n", exe);
        goto done;
    }
    printf("bench_ui: first screen after %.0f ms\n", (now() - t_start) * 1e3);
    if (!waitFor(master, "idle: up to date", 600)) {
        fprintf(stderr, "bench_ui: the first numbers never came\n");
        goto done;
    }
    printf("bench_ui: layer loaded and first numbers up after %.1f s\n", now() - t_start);
    /* Heavy work for both workers: co-activation counts and METIS, and mlp training. */
    sendKeys(master, ":strategy=coact\r");
    drain(master, 50);
    sendKeys(master, ":router=mlp\r");
    drain(master, 50);
    /* The Estimates screen adds MEO for every k on screen and the kernel timing. */
    sendKeys(master, "5");
    drain(master, 300);
    seen_len = 0;
    seen[0] = '\0';

    double *first = calloc((size_t)keys, sizeof(double));
    double *full = calloc((size_t)keys, sizeof(double));
    int got = 0;
    double cpu0 = cpuSeconds(pid), w0 = now();
    for (int i = 0; i < keys; i++) {
        drain(master, 0);
        seen_len = 0;
        seen[0] = '\0';
        /* Odd keys open the help, even ones close it; the marker is text only the new
           screen has, so a progress redraw in between is not taken for the answer. */
        const char *marker = i % 2 == 0 ? "Finding and sorting" : "Cost per token";
        sendKeys(master, "?");
        double t0 = now(), t_first = 0, t_marker = 0;
        while (now() - t0 < 5 && !t_marker) {
            if (drain(master, 5) > 0 && !t_first)
                t_first = now();
            if (strstr(seen, marker))
                t_marker = now();
        }
        if (!t_marker) {
            fprintf(stderr, "bench_ui: key %d: the new screen did not come within 5 s\n", i);
            break;
        }
        first[got] = (t_first - t0) * 1e3;
        full[got] = (t_marker - t0) * 1e3;
        got++;
        double until = now() + 0.1;
        while (now() < until)
            drain(master, 10);
    }
    double busy = (cpuSeconds(pid) - cpu0) / (now() - w0);
    /* ^L redraws everything: is work still under way at the end? */
    drain(master, 0);
    seen_len = 0;
    seen[0] = '\0';
    sendKeys(master, "\014");
    drain(master, 200);
    bool still = strstr(seen, "computing") != NULL;
    if (got > 0) {
        qsort(first, (size_t)got, sizeof(double), cmpDouble);
        qsort(full, (size_t)got, sizeof(double), cmpDouble);
        printf("bench_ui: %d keys while recomputing (the UI process used %.2f cores; work %s)\n",
               got, busy, still ? "still running at the end" : "ended before the last key");
        printf("bench_ui: key to first output: median %.1f ms  p90 %.1f ms  max %.1f ms\n",
               first[got / 2], first[got * 9 / 10], first[got - 1]);
        printf("bench_ui: key to new screen: median %.1f ms  p90 %.1f ms  max %.1f ms"
               "   (target < 50 ms: %s)\n",
               full[got / 2], full[got * 9 / 10], full[got - 1],
               full[got * 9 / 10] < 50 ? "met" : "NOT met");
        status = 0;
    }
    free(first);
    free(full);
done:
    sendKeys(master, "Q");
    drain(master, 200);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            pid = 0;
            break;
        }
        drain(master, 100);
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    close(master);
    if (made[0]) {
        unlink(made);
        rmdir(tmpdir);
    }
    return status;
}
