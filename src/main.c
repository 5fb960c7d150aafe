/*
moescope - main.c
Command line entry point.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdio.h>

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    puts("moescope: not yet");
    return 0;
}
