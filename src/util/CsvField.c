/*
moescope - util/CsvField.c
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "util/CsvField.h"

#include <string.h>

void CsvField_write(FILE *fp, const char *s) {
    if (!s)
        return;
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, fp);
        return;
    }
    fputc('"', fp);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', fp);
        fputc(*s, fp);
    }
    fputc('"', fp);
}
