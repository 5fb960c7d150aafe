/*
moescope - util/Status.c
Names and exit codes of MsStatus values.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "util/Status.h"

const char *Status_name(MsStatus status) {
    switch (status) {
    case MS_OK: return "ok";
    case MS_ERR_IO: return "i/o error";
    case MS_ERR_FORMAT: return "format error";
    case MS_ERR_RANGE: return "value out of range";
    case MS_ERR_NOMEM: return "out of memory";
    case MS_ERR_CANCELED: return "canceled";
    }
    return "unknown status";
}

int Status_exitCode(MsStatus status) {
    switch (status) {
    case MS_OK: return 0;
    case MS_ERR_IO:
    case MS_ERR_FORMAT:
    case MS_ERR_RANGE: return 2;
    default: return 1;
    }
}
