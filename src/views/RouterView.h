/*
moescope - views/RouterView.h
The Router screen of one layer: mass recall@k for k = 1..E of the oracle and every router,
and the output error against k with the top-K neuron bound, as terminal plots (braille, or
ASCII).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_ROUTERVIEW_H
#define MOESCOPE_ROUTERVIEW_H

#include "views/View.h"

/* Draws layer ctx->layer into the rectangle, scrolled by scroll->top. */
void RouterView_render(ViewScroll *scroll, const ViewContext *ctx, Cells *c, int x, int y,
                        int w, int h);

#endif
