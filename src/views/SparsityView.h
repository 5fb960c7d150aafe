/*
moescope - views/SparsityView.h
The Sparsity screen of one layer: per-neuron activation frequency histogram (dead and
always-on neurons counted apart), the distribution of active neurons per token, and the
tau -> sparsity curve with the current tau marked.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_SPARSITYVIEW_H
#define MOESCOPE_SPARSITYVIEW_H

#include "views/View.h"

/* Draws layer ctx->layer into the rectangle, scrolled by scroll->top. */
void SparsityView_render(ViewScroll *scroll, const ViewContext *ctx, Cells *c, int x, int y,
                        int w, int h);

#endif
