/*
moescope - util/XUtils.c
Checked allocation and string helpers.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "util/XUtils.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static void (*failHook)(void);

void XUtils_setFailHook(void (*hook)(void)) {
    failHook = hook;
}

void XUtils_fail(void) {
    if (failHook)
        failHook();
    fputs("moescope: out of memory\n", stderr);
    abort();
}

static bool overflows(size_t nmemb, size_t size) {
    return size != 0 && nmemb > SIZE_MAX / size;
}

void *xMalloc(size_t size) {
    void *p = malloc(size ? size : 1);
    if (!p)
        XUtils_fail();
    return p;
}

void *xMallocArray(size_t nmemb, size_t size) {
    if (overflows(nmemb, size))
        XUtils_fail();
    return xMalloc(nmemb * size);
}

void *xCalloc(size_t nmemb, size_t size) {
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        XUtils_fail();
    return p;
}

void *xReallocArray(void *ptr, size_t nmemb, size_t size) {
    if (overflows(nmemb, size))
        XUtils_fail();
    size_t bytes = nmemb * size;
    void *p = realloc(ptr, bytes ? bytes : 1);
    if (!p)
        XUtils_fail();
    return p;
}

char *xStrdup(const char *str) {
    char *p = strdup(str);
    if (!p)
        XUtils_fail();
    return p;
}

char *xVasprintf(const char *fmt, va_list ap) {
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        XUtils_fail();
    return s;
}

char *xAsprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = xVasprintf(fmt, ap);
    va_end(ap);
    return s;
}

void *tryMallocArray(size_t nmemb, size_t size) {
    if (overflows(nmemb, size))
        return NULL;
    size_t bytes = nmemb * size;
    return malloc(bytes ? bytes : 1);
}

void *tryMallocLarge(size_t nmemb, size_t size) {
    enum { HUGE_PAGE = 2u << 20 };
    void *p = tryMallocArray(nmemb, size);
#ifdef MADV_HUGEPAGE
    size_t bytes = nmemb * size;
    if (p && bytes >= 2 * HUGE_PAGE) {
        uintptr_t a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
        uintptr_t b = ((uintptr_t)p + bytes) & ~(uintptr_t)(HUGE_PAGE - 1);
        if (b > a)
            (void)madvise((void *)a, b - a, MADV_HUGEPAGE); /* a hint: failure is harmless */
    }
#endif
    return p;
}

void *tryCallocArray(size_t nmemb, size_t size) {
    if (overflows(nmemb, size))
        return NULL;
    return calloc(nmemb ? nmemb : 1, size ? size : 1);
}

void setCause(char **cause, const char *fmt, ...) {
    if (!cause)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *s = xVasprintf(fmt, ap);
    va_end(ap);
    free(*cause);
    *cause = s;
}

void prefixCause(char **cause, const char *fmt, ...) {
    if (!cause || !*cause)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *prefix = xVasprintf(fmt, ap);
    va_end(ap);
    char *s = xAsprintf("%s: %s", prefix, *cause);
    free(prefix);
    free(*cause);
    *cause = s;
}

double XUtils_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
