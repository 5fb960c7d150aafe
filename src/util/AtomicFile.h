/*
moescope - util/AtomicFile.h
A text file written under a temporary name in the target's directory and renamed into
place on commit, so an interrupted run never leaves a half file (STYLE 22).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_ATOMICFILE_H
#define MOESCOPE_ATOMICFILE_H

#include <stdio.h>

#include "util/Status.h"

typedef struct AtomicFile {
    FILE *fp;
    char *path;     /* target */
    char *tmp_path; /* NULL when writing to stdout */
} AtomicFile;

/* path NULL or "-" writes to stdout (nothing to rename). */
MsStatus AtomicFile_open(AtomicFile *this, const char *path, char **cause);

/* Flushes, closes and renames; on any error removes the temporary file. */
MsStatus AtomicFile_commit(AtomicFile *this, char **cause);

/* Closes and removes the temporary file. Safe on a zeroed struct. */
void AtomicFile_abort(AtomicFile *this);

#endif
