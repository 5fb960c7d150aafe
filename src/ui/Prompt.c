/*
moescope - ui/Prompt.c
The one-line editor (see Prompt.h).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#ifndef _XOPEN_SOURCE_EXTENDED
#define _XOPEN_SOURCE_EXTENDED 1
#endif
#include "ui/Prompt.h"

#include <curses.h>
#include <stdio.h>
#include <string.h>

#include "ui/CRT.h"

void Prompt_open(Prompt *this, int purpose, const char *label, const char *initial) {
    memset(this, 0, sizeof *this);
    this->active = true;
    this->purpose = purpose;
    snprintf(this->label, sizeof this->label, "%s", label);
    const char *p = initial ? initial : "";
    while (*p && this->len < PROMPT_MAX - 1)
        this->text[this->len++] = Cells_decode(&p);
    this->pos = this->len;
}

void Prompt_close(Prompt *this) {
    this->active = false;
}

static void insertAt(Prompt *this, uint32_t ch) {
    if (this->len >= PROMPT_MAX - 1)
        return;
    memmove(&this->text[this->pos + 1], &this->text[this->pos],
            (size_t)(this->len - this->pos) * sizeof(uint32_t));
    this->text[this->pos++] = ch;
    this->len++;
}

static void eraseAt(Prompt *this, int at) {
    if (at < 0 || at >= this->len)
        return;
    memmove(&this->text[at], &this->text[at + 1], (size_t)(this->len - at - 1) * sizeof(uint32_t));
    this->len--;
    if (this->pos > at)
        this->pos--;
}

PromptResult Prompt_key(Prompt *this, int key) {
    switch (key) {
    case '\r':
    case '\n':
    case CRT_FN(KEY_ENTER):
        this->active = false;
        return PROMPT_ACCEPT;
    case 27:
    case 7: /* ^G */
    case 3: /* ^C */
        this->active = false;
        return PROMPT_CANCEL;
    case CRT_FN(KEY_BACKSPACE):
    case 127:
    case 8:
        if (this->pos > 0)
            eraseAt(this, this->pos - 1);
        else if (this->len == 0) {
            this->active = false;
            return PROMPT_CANCEL;
        }
        return PROMPT_EDITING;
    case CRT_FN(KEY_DC):
        eraseAt(this, this->pos);
        return PROMPT_EDITING;
    case CRT_FN(KEY_LEFT):
        if (this->pos > 0)
            this->pos--;
        return PROMPT_EDITING;
    case CRT_FN(KEY_RIGHT):
        if (this->pos < this->len)
            this->pos++;
        return PROMPT_EDITING;
    case CRT_FN(KEY_HOME):
    case 1: /* ^A */
        this->pos = 0;
        return PROMPT_EDITING;
    case CRT_FN(KEY_END):
    case 5: /* ^E */
        this->pos = this->len;
        return PROMPT_EDITING;
    case 21: /* ^U */
        this->len = this->pos = 0;
        return PROMPT_EDITING;
    default:
        break;
    }
    if (key >= 0x20 && key != 0x7F && !(key & 0x40000000) && key != CRT_KEY_RESIZE)
        insertAt(this, (uint32_t)key);
    return PROMPT_EDITING;
}

void Prompt_text(const Prompt *this, char *buf, int size) {
    int n = 0;
    for (int i = 0; i < this->len; i++) {
        uint32_t c = this->text[i];
        char tmp[4];
        int k;
        if (c < 0x80) {
            tmp[0] = (char)c;
            k = 1;
        } else if (c < 0x800) {
            tmp[0] = (char)(0xC0 | (c >> 6));
            tmp[1] = (char)(0x80 | (c & 0x3F));
            k = 2;
        } else if (c < 0x10000) {
            tmp[0] = (char)(0xE0 | (c >> 12));
            tmp[1] = (char)(0x80 | ((c >> 6) & 0x3F));
            tmp[2] = (char)(0x80 | (c & 0x3F));
            k = 3;
        } else {
            tmp[0] = (char)(0xF0 | (c >> 18));
            tmp[1] = (char)(0x80 | ((c >> 12) & 0x3F));
            tmp[2] = (char)(0x80 | ((c >> 6) & 0x3F));
            tmp[3] = (char)(0x80 | (c & 0x3F));
            k = 4;
        }
        if (n + k >= size)
            break;
        memcpy(buf + n, tmp, (size_t)k);
        n += k;
    }
    buf[n] = '\0';
}

void Prompt_render(const Prompt *this, Cells *c, int y) {
    Cells_box(c, 0, y, c->w, 1, ROLE_STATUS);
    int x = Cells_text(c, 0, y, c->w, ROLE_KNOB_VALUE, this->label);
    int room = c->w - x - 1;
    int first = this->pos >= room ? this->pos - room + 1 : 0;
    for (int i = first; i < this->len && x + i - first < c->w; i++)
        Cells_set(c, x + i - first, y, this->text[i], ROLE_NORMAL);
    int cx = x + this->pos - first;
    const Cell *under = Cells_at(c, cx, y);
    Cells_set(c, cx, y, under && this->pos < this->len ? under->ch : ' ', ROLE_CURSOR);
}
