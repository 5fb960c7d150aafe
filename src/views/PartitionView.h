/*
moescope - views/PartitionView.h
The Partition screen of one layer: the co-activation matrix as a heatmap with neurons
ordered by expert (block structure shows as bright diagonal blocks), expert sizes and load
bars at k, the intra-expert co-activation, and random, param and coact side by side for
the same E.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_PARTITIONVIEW_H
#define MOESCOPE_PARTITIONVIEW_H

#include "views/View.h"

/* Draws layer ctx->layer into the rectangle, scrolled by scroll->top. */
void PartitionView_render(ViewScroll *scroll, const ViewContext *ctx, Cells *c, int x, int y,
                        int w, int h);

#endif
