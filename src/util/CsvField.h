/*
moescope - util/CsvField.h
One text cell of a CSV file (RFC 4180): written as is, or quoted with doubled quotes
when it holds a comma, a quote or a line break. Shared by the tidy CSV export and the
figures' sidecar data files.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_CSVFIELD_H
#define MOESCOPE_CSVFIELD_H

#include <stdio.h>

/* Writes s as one CSV cell; NULL writes an empty cell. */
void CsvField_write(FILE *fp, const char *s);

#endif
