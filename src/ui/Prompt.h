/*
moescope - ui/Prompt.h
A one-line editor on the message line, for `/` search, `:` knob assignments and typing a
knob's value in the knob panel: printable characters, Backspace, Delete, Left/Right,
Home/End, ^U clears, Enter accepts, Esc (or ^G) cancels.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_PROMPT_H
#define MOESCOPE_PROMPT_H

#include <stdbool.h>

#include "views/Cells.h"

enum { PROMPT_MAX = 128 };

typedef enum PromptResult {
    PROMPT_EDITING = 0,
    PROMPT_ACCEPT,
    PROMPT_CANCEL,
} PromptResult;

typedef struct Prompt {
    bool active;
    int purpose;           /* the caller's tag */
    char label[64];        /* "/", ":", "E = " */
    uint32_t text[PROMPT_MAX];
    int len, pos;
} Prompt;

void Prompt_open(Prompt *this, int purpose, const char *label, const char *initial);
void Prompt_close(Prompt *this);

/* Handles one key (CRT key codes); returns what happened. */
PromptResult Prompt_key(Prompt *this, int key);

/* The text as UTF-8 into buf. */
void Prompt_text(const Prompt *this, char *buf, int size);

/* Draws the label, the text and a cursor block on row y of c. */
void Prompt_render(const Prompt *this, Cells *c, int y);

#endif
