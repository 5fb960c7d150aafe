/*
moescope - tests/test_Cells.c
The cell buffer the views draw into and the plots: UTF-8 decoding, clipping, alignment,
ellipsis, the text dump; bar heights in eighths; line plots put each series' letter at
its data points and braille dots only in UTF-8; ASCII glyph tables are ASCII.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "views/Cells.h"
#include "views/Glyphs.h"
#include "views/Plot.h"

static void test_text(void **state) {
    (void)state;
    Cells c;
    Cells_init(&c, 10, 3);
    assert_int_equal(Cells_text(&c, 0, 0, -1, ROLE_HEADER, "h\xC3\xA9llo \xE2\xA0\x8B!"), 8);
    assert_int_equal(Cells_at(&c, 1, 0)->ch, 0xE9);
    assert_int_equal(Cells_at(&c, 6, 0)->ch, 0x280B);
    assert_int_equal(Cells_at(&c, 0, 0)->role, ROLE_HEADER);
    /* clipped at the right edge, and by maxw */
    assert_int_equal(Cells_text(&c, 7, 1, -1, ROLE_NORMAL, "abcdef"), 3);
    assert_int_equal(Cells_text(&c, 0, 2, 2, ROLE_NORMAL, "xyz"), 2);
    assert_null(Cells_at(&c, 10, 0));
    Cells_set(&c, -1, 0, 'q', 0); /* ignored */
    Cells_set(&c, 0, 5, 'q', 0);
    char *t = Cells_toText(&c);
    assert_string_equal(t, "h\xC3\xA9llo \xE2\xA0\x8B!\n       abc\nxy\n");
    free(t);
    Cells_clear(&c);
    assert_int_equal(Cells_textRight(&c, 0, 0, 10, ROLE_NORMAL, "42"), 8);
    assert_int_equal(Cells_at(&c, 9, 0)->ch, '2');
    assert_int_equal(Cells_textFit(&c, 0, 1, 5, ROLE_NORMAL, "abcdefgh", "~"), 5);
    t = Cells_toText(&c);
    assert_string_equal(t, "        42\nabcd~\n\n");
    free(t);
    /* control characters never reach the terminal */
    Cells_text(&c, 0, 2, -1, ROLE_NORMAL, "a\x1b[31mb");
    assert_int_equal(Cells_at(&c, 1, 2)->ch, '?');
    /* invalid UTF-8 decodes to U+FFFD and moves on */
    const char *bad = "\xFF" "a";
    assert_int_equal(Cells_decode(&bad), 0xFFFD);
    assert_int_equal(*bad, 'a');
    assert_int_equal(Cells_width("\xE2\x94\x80\xE2\x94\x80x"), 3);
    Cells_paint(&c, 0, 2, 3, ROLE_CURSOR);
    assert_int_equal(Cells_at(&c, 2, 2)->role, ROLE_CURSOR);
    assert_int_equal(Cells_at(&c, 3, 2)->role, ROLE_NORMAL);
    Cells_resize(&c, 4, 1);
    assert_int_equal(c.w, 4);
    t = Cells_toText(&c);
    assert_string_equal(t, "\n");
    free(t);
    Cells_done(&c);
}

static bool asciiOnly(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s > 0x7E || (unsigned char)*s < 0x20)
            return false;
    return true;
}

static void test_ascii_glyphs(void **state) {
    (void)state;
    const Glyphs *g = Glyphs_get(false);
    assert_false(g->utf8);
    assert_false(g->braille);
    const char *all[] = {g->hline, g->vline, g->tl, g->tr, g->bl, g->br, g->cross_bottom,
                         g->up, g->down, g->ellipsis, g->stale, g->pending, g->dot,
                         g->tau_mark, g->bullet, g->times};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        assert_true(asciiOnly(all[i]));
    for (int i = 0; i < 9; i++)
        assert_true(asciiOnly(g->hblocks[i]) && asciiOnly(g->vblocks[i]));
    for (int i = 0; i < 5; i++)
        assert_true(asciiOnly(g->shades[i]));
    for (int i = 0; i < 4; i++)
        assert_true(asciiOnly(g->spinner[i]));
    /* levels stay distinguishable */
    assert_string_not_equal(g->shades[1], g->shades[4]);
    assert_true(Glyphs_get(true)->utf8);
}

static void test_bars(void **state) {
    (void)state;
    const Glyphs *g = Glyphs_get(true);
    Cells c;
    Cells_init(&c, 4, 4);
    const double v[4] = {0, 1, 2, 4};
    Plot_bars(&c, 0, 0, 1, 4, v, 4, 4, ROLE_BAR, g);
    /* bar i has v[i] rows of full blocks (4 rows for 4 of 4) */
    const uint32_t full = 0x2588;
    int rows[4] = {0};
    for (int x = 0; x < 4; x++)
        for (int y = 0; y < 4; y++)
            rows[x] += Cells_at(&c, x, y)->ch == full;
    assert_int_equal(rows[0], 0);
    assert_int_equal(rows[1], 1);
    assert_int_equal(rows[2], 2);
    assert_int_equal(rows[3], 4);
    assert_int_equal(Cells_at(&c, 1, 3)->role, ROLE_BAR);
    /* a tiny nonzero value stays visible */
    Cells_clear(&c);
    const double tiny[1] = {0.001};
    Plot_bars(&c, 0, 0, 1, 4, tiny, 1, 100, ROLE_BAR, g);
    assert_int_not_equal(Cells_at(&c, 0, 3)->ch, ' ');
    Cells_done(&c);
}

static void test_line_plot(void **state) {
    (void)state;
    for (int utf8 = 0; utf8 < 2; utf8++) {
        Cells c;
        Cells_init(&c, 40, 12);
        const double x[3] = {1, 2, 3}, y1[3] = {0, 0.5, 1}, y2[3] = {1, NAN, 1};
        PlotSeries s[2] = {{"up", 'u', ROLE_SERIES1, x, y1, 3},
                           {"flat", 'f', ROLE_SERIES2, x, y2, 3}};
        Plot p = {.title = "T", .xlabel = "k", .xmin = 1, .xmax = 3, .ymin = 0, .ymax = 1,
                  .series = s, .n_series = 2, .vline = NAN, .marks = true};
        Plot_draw(&c, 0, 0, 40, 12, &p, Glyphs_get(utf8));
        char *t = Cells_toText(&c);
        /* legend names both series */
        assert_non_null(strstr(t, "u up"));
        assert_non_null(strstr(t, "f flat"));
        /* plot area: columns 8..39, rows 1..9; (1, 0) bottom left, (3, 1) top right */
        int ox = 8, top = 1, bottom = 9;
        assert_int_equal(Cells_at(&c, ox, bottom)->ch, 'u');
        assert_true(Cells_at(&c, 39, top)->ch == 'u' || Cells_at(&c, 39, top)->ch == 'f');
        assert_int_equal(Cells_at(&c, ox, top)->ch, 'f');
        bool braille = false;
        for (int i = 0; i < c.w * c.h; i++)
            braille = braille || (c.cells[i].ch >= 0x2800 && c.cells[i].ch <= 0x28FF);
        assert_int_equal(braille, utf8);
        if (!utf8)
            assert_true(asciiOnly(strtok(t, "\n")));
        free(t);
        Cells_done(&c);
    }
    char buf[32];
    Plot_si(66048, buf, sizeof buf);
    assert_string_equal(buf, "66k");
    Plot_si(1.5e9, buf, sizeof buf);
    assert_string_equal(buf, "1.5G");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_ascii_glyphs),
        cmocka_unit_test(test_bars),
        cmocka_unit_test(test_line_plot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
