/*
moescope - views/Csv.c
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/Csv.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util/CsvField.h"

static void writeNumber(FILE *fp, double v) {
    if (isnan(v))
        fputs("NaN", fp);
    else if (isinf(v))
        fputs(v > 0 ? "Inf" : "-Inf", fp);
    else
        fprintf(fp, "%.9g", v);
}

MsStatus Csv_open(Csv *this, const char *path, char **cause) {
    this->rows = 0;
    MsStatus st = AtomicFile_open(&this->out, path, cause);
    if (st == MS_OK)
        fputs("layer,layer_name,strategy,router,E,k,tau,split,metric,value,file\n", this->out.fp);
    return st;
}

void Csv_row(Csv *this, const CsvRow *r) {
    FILE *fp = this->out.fp;
    fprintf(fp, "%d,", r->layer);
    CsvField_write(fp, r->layer_name);
    fputc(',', fp);
    CsvField_write(fp, r->strategy);
    fputc(',', fp);
    CsvField_write(fp, r->router);
    fputc(',', fp);
    if (r->E > 0)
        fprintf(fp, "%d", r->E);
    fputc(',', fp);
    if (r->k > 0)
        fprintf(fp, "%d", r->k);
    fputc(',', fp);
    writeNumber(fp, r->tau);
    fputc(',', fp);
    CsvField_write(fp, r->split);
    fputc(',', fp);
    CsvField_write(fp, r->metric);
    fputc(',', fp);
    writeNumber(fp, r->value);
    fputc(',', fp);
    CsvField_write(fp, r->file);
    fputc('\n', fp);
    this->rows++;
}

MsStatus Csv_close(Csv *this, char **cause) {
    return AtomicFile_commit(&this->out, cause);
}

void Csv_abort(Csv *this) {
    AtomicFile_abort(&this->out);
}
