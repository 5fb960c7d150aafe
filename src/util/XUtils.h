/*
moescope - util/XUtils.h
Checked allocation and string helpers (after htop's XUtils). The x* allocators are for
internal, small memory: on failure they run the fail hook (which restores the terminal)
and abort. Input-sized buffers use tryMallocArray and report MS_ERR_NOMEM instead.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_XUTILS_H
#define MOESCOPE_XUTILS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

/* Called before abort() on allocation failure; the UI sets one that ends curses. */
void XUtils_setFailHook(void (*hook)(void));

_Noreturn void XUtils_fail(void);

void *xMalloc(size_t size);
void *xMallocArray(size_t nmemb, size_t size);
void *xCalloc(size_t nmemb, size_t size);
void *xReallocArray(void *ptr, size_t nmemb, size_t size);
char *xStrdup(const char *str);

/* malloc'ed printf; aborts on failure like the other x* functions. */
char *xAsprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xVasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* Input-sized allocation: NULL when nmemb*size overflows or memory is short. */
void *tryMallocArray(size_t nmemb, size_t size);
/* tryMallocArray for buffers of many MiB that are scanned over and over (a layer's x and
   h): asks the kernel for transparent huge pages, which saves a page fault per 4 KiB
   when they are filled and TLB misses when they are read. */
void *tryMallocLarge(size_t nmemb, size_t size);
void *tryCallocArray(size_t nmemb, size_t size);

/* Sets *cause (when cause is not NULL) to a new formatted message; frees any old one. */
void setCause(char **cause, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes an existing *cause with "prefix: "; no-op when cause or *cause is NULL. */
void prefixCause(char **cause, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Monotonic clock in seconds, for progress and benchmarks. */
double XUtils_now(void);

#endif
