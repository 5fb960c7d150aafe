/*
moescope - views/Glyphs.c
The UTF-8 and ASCII glyph tables.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/Glyphs.h"

static const Glyphs utf8Glyphs = {
    .utf8 = true,
    .braille = true,
    .hline = "─",
    .vline = "│",
    .tl = "┌",
    .tr = "┐",
    .bl = "└",
    .br = "┘",
    .cross_bottom = "└",
    .hblocks = {" ", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█"},
    .vblocks = {" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"},
    .shades = {" ", "░", "▒", "▓", "█"},
    .up = "▲",
    .down = "▼",
    .ellipsis = "…",
    .stale = "~",
    .pending = "·",
    .spinner = {"⠋", "⠙", "⠸", "⠴"},
    .dot = "·",
    .tau_mark = "┃",
    .bullet = "•",
    .times = "×",
};

static const Glyphs asciiGlyphs = {
    .utf8 = false,
    .braille = false,
    .hline = "-",
    .vline = "|",
    .tl = "+",
    .tr = "+",
    .bl = "+",
    .br = "+",
    .cross_bottom = "+",
    .hblocks = {" ", "-", "-", "-", "=", "=", "=", "#", "#"},
    .vblocks = {" ", ".", ".", ".", ":", ":", ":", "#", "#"},
    .shades = {" ", ".", ":", "*", "#"},
    .up = "^",
    .down = "v",
    .ellipsis = ">", /* not ~: that marks stale values */
    .stale = "~",
    .pending = ".",
    .spinner = {"|", "/", "-", "\\"},
    .dot = ".",
    .tau_mark = "|",
    .bullet = "*",
    .times = "x",
};

const Glyphs *Glyphs_get(bool utf8) {
    return utf8 ? &utf8Glyphs : &asciiGlyphs;
}
