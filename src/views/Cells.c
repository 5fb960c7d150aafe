/*
moescope - views/Cells.c
The cell grid views draw into (see Cells.h). Plain memory, no terminal calls.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/Cells.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/XUtils.h"

void Cells_init(Cells *this, int w, int h) {
    this->w = this->h = 0;
    this->cells = NULL;
    Cells_resize(this, w, h);
}

void Cells_done(Cells *this) {
    free(this->cells);
    this->cells = NULL;
    this->w = this->h = 0;
}

void Cells_resize(Cells *this, int w, int h) {
    if (w < 0)
        w = 0;
    if (h < 0)
        h = 0;
    free(this->cells);
    this->w = w;
    this->h = h;
    this->cells = xMallocArray((size_t)w * (size_t)h + 1, sizeof(Cell));
    Cells_clear(this);
}

void Cells_clear(Cells *this) {
    for (int i = 0; i < this->w * this->h; i++)
        this->cells[i] = (Cell){' ', ROLE_NORMAL};
}

void Cells_set(Cells *this, int x, int y, uint32_t ch, int role) {
    if (x < 0 || y < 0 || x >= this->w || y >= this->h)
        return;
    this->cells[y * this->w + x] = (Cell){ch, (uint8_t)role};
}

const Cell *Cells_at(const Cells *this, int x, int y) {
    if (x < 0 || y < 0 || x >= this->w || y >= this->h)
        return NULL;
    return &this->cells[y * this->w + x];
}

uint32_t Cells_decode(const char **s) {
    const unsigned char *p = (const unsigned char *)*s;
    uint32_t c = p[0];
    int len = 1;
    if (c < 0x80) {
        len = 1;
    } else if ((c & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) {
        c = ((c & 0x1F) << 6) | (p[1] & 0x3F);
        len = 2;
    } else if ((c & 0xF0) == 0xE0 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80) {
        c = ((c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        len = 3;
    } else if ((c & 0xF8) == 0xF0 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80 &&
               (p[3] & 0xC0) == 0x80) {
        c = ((c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
            ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
        len = 4;
    } else {
        c = 0xFFFD;
    }
    *s += len;
    return c;
}

int Cells_width(const char *utf8) {
    int n = 0;
    while (*utf8) {
        Cells_decode(&utf8);
        n++;
    }
    return n;
}

int Cells_text(Cells *this, int x, int y, int maxw, int role, const char *utf8) {
    if (maxw < 0)
        maxw = this->w - x;
    int n = 0;
    while (*utf8 && n < maxw) {
        uint32_t c = Cells_decode(&utf8);
        if (c < 0x20 || c == 0x7F || (c >= 0x80 && c < 0xA0))
            c = '?';
        Cells_set(this, x + n, y, c, role);
        n++;
    }
    return n;
}

int Cells_printf(Cells *this, int x, int y, int maxw, int role, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return Cells_text(this, x, y, maxw, role, buf);
}

int Cells_textRight(Cells *this, int x, int y, int w, int role, const char *utf8) {
    int n = Cells_width(utf8);
    if (n > w) {
        Cells_text(this, x, y, w, role, utf8);
        return x;
    }
    Cells_text(this, x + w - n, y, n, role, utf8);
    return x + w - n;
}

int Cells_textFit(Cells *this, int x, int y, int maxw, int role, const char *utf8,
                  const char *ellipsis) {
    if (maxw <= 0)
        return 0;
    int n = Cells_width(utf8);
    if (n <= maxw)
        return Cells_text(this, x, y, maxw, role, utf8);
    int w = Cells_text(this, x, y, maxw - 1, role, utf8);
    Cells_text(this, x + w, y, 1, role, ellipsis);
    return w + 1;
}

void Cells_fill(Cells *this, int x, int y, int n, const char *glyph, int role) {
    const char *p = glyph;
    uint32_t c = *glyph ? Cells_decode(&p) : ' ';
    for (int i = 0; i < n; i++)
        Cells_set(this, x + i, y, c, role);
}

void Cells_paint(Cells *this, int x, int y, int n, int role) {
    for (int i = 0; i < n; i++) {
        if (x + i < 0 || x + i >= this->w || y < 0 || y >= this->h)
            continue;
        this->cells[y * this->w + x + i].role = (uint8_t)role;
    }
}

void Cells_box(Cells *this, int x, int y, int w, int h, int role) {
    for (int r = 0; r < h; r++)
        Cells_fill(this, x, y + r, w, " ", role);
}

static int putUtf8(char *out, uint32_t c) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

char *Cells_toText(const Cells *this) {
    size_t cap = (size_t)this->h * ((size_t)this->w * 4 + 1) + 1;
    char *out = xMalloc(cap);
    size_t n = 0;
    for (int y = 0; y < this->h; y++) {
        size_t line = n;
        size_t keep = n;
        for (int x = 0; x < this->w; x++) {
            uint32_t c = this->cells[y * this->w + x].ch;
            n += (size_t)putUtf8(out + n, c);
            if (c != ' ')
                keep = n;
        }
        (void)line;
        n = keep;
        out[n++] = '\n';
    }
    out[n] = '\0';
    return out;
}
