/*
moescope - views/EstimatesView.h
The Estimates screen of one layer: dense and MoE FLOPs per token, ideal and measured
speedup, MEO's sequence-level figures for the current knobs, and a table over k.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_ESTIMATESVIEW_H
#define MOESCOPE_ESTIMATESVIEW_H

#include "views/View.h"

/* Draws layer ctx->layer into the rectangle, scrolled by scroll->top. */
void EstimatesView_render(ViewScroll *scroll, const ViewContext *ctx, Cells *c, int x, int y,
                        int w, int h);

#endif
