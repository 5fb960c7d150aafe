/*
moescope - views/Csv.h
The tidy CSV of SPEC §6: one header line, then one row per number. Columns, in order:
layer,layer_name,strategy,router,E,k,tau,split,metric,value,file
(`file`, the dump file the layer's x came from, is appended after SPEC's ten columns).
Floats are printed with 9 significant digits ("%.9g"), NaN as "NaN"; E and k of 0 and
NULL strings are empty cells; strings holding a comma, quote or newline are quoted.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_CSV_H
#define MOESCOPE_CSV_H

#include "util/AtomicFile.h"
#include "util/Status.h"

typedef struct CsvRow {
    int layer;
    const char *layer_name;
    const char *strategy; /* NULL: empty */
    const char *router;   /* NULL: empty */
    int E;                /* 0: empty */
    int k;                /* 0: empty */
    double tau;
    const char *split;
    const char *metric;
    double value;
    const char *file;
} CsvRow;

typedef struct Csv {
    AtomicFile out;
    long rows;
} Csv;

/* Opens path (NULL or "-": stdout) and writes the header. */
MsStatus Csv_open(Csv *this, const char *path, char **cause);

void Csv_row(Csv *this, const CsvRow *row);

/* Commits the file (rename into place). */
MsStatus Csv_close(Csv *this, char **cause);

/* Drops a half-written file. */
void Csv_abort(Csv *this);

#endif
