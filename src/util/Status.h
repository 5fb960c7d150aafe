/*
moescope - util/Status.h
Status codes returned by every operation that can fail on bad input or lack of memory.
Failures come with one human-readable sentence in a malloc'ed `char *cause`.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_STATUS_H
#define MOESCOPE_STATUS_H

typedef enum MsStatus {
    MS_OK = 0,
    MS_ERR_IO,       /* file missing, unreadable, not HDF5 */
    MS_ERR_FORMAT,   /* file readable but not the SPEC layout */
    MS_ERR_RANGE,    /* a value outside its allowed range (option or data) */
    MS_ERR_NOMEM,    /* an input-sized allocation failed */
    MS_ERR_CANCELED, /* a worker saw a newer generation and stopped */
} MsStatus;

/* A short lower-case name for a status ("format error"). */
const char *Status_name(MsStatus status);

/* Exit status for a failure: 2 for bad input (IO, FORMAT, RANGE), 1 otherwise. */
int Status_exitCode(MsStatus status);

#endif
