"""The demo's attention figures: one heatmap, and a grid of every layer and head.

Follows the two views of BertViz (Vig, 2019): one head's query-by-key matrix, and a grid of small
multiples with a thumbnail per layer and head. The figures are Plotly, because Gradio ships plotly.js:
they hover and zoom without any script from the network.

Shapes: L layers, nh heads, P readable pieces (queries and keys alike).
"""

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORSCALE = "Blues"
# A thumbnail of more cells than this per side is pooled: 16 heads of 256 x 256 would be a million
# values for the browser to draw, and a thumbnail shows the pattern, not the cells.
GRID_MAX_CELLS = 48
# Above this many pieces, only every k-th axis label is written so that the labels stay legible.
MAX_AXIS_LABELS = 48


def visible(text: str) -> str:
    """The piece with its whitespace made visible, so that a space or a newline can be told apart."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def axis_labels(pieces: Sequence[str]) -> list[str]:
    """``"index piece"``: unique even when a piece repeats, so Plotly keeps one row per position."""
    return [f"{i} {visible(piece)}" for i, piece in enumerate(pieces)]


def _axis(labels: list[str], title: str) -> dict:
    step = max(1, math.ceil(len(labels) / MAX_AXIS_LABELS))
    return dict(
        title=title,
        type="category",
        tickmode="array",
        tickvals=labels[::step],
        ticktext=labels[::step],
        tickfont=dict(size=10),
    )


def color_max(weights: np.ndarray) -> float:
    """The top of the colour scale: the 99th percentile of the non-zero weights.

    Not 1: over a long text a head's weights are spread thin (1/256 on average), and the few large
    ones (the first token, which collects attention regardless of content) would leave the rest white.
    """
    values = weights[weights > 0]
    return max(float(np.quantile(values, 0.99)), 1e-6) if values.size else 1.0


def heatmap_figure(pieces: Sequence[str], weights: np.ndarray, title: str) -> go.Figure:
    """One attention matrix (P, P) with queries down and keys across; hover names both pieces."""
    labels = axis_labels(pieces)
    weights = np.asarray(weights, dtype=np.float32)
    figure = go.Figure(
        go.Heatmap(
            z=weights,
            x=labels,
            y=labels,
            colorscale=COLORSCALE,
            zmin=0.0,
            zmax=color_max(weights),
            colorbar=dict(title=dict(text="weight"), thickness=12),
            hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>",
        )
    )
    yaxis = _axis(labels, "query (attending)")
    yaxis["autorange"] = "reversed"  # the first query on top, as the text reads
    figure.update_layout(
        title=dict(text=title, font=dict(size=14)),
        xaxis=_axis(labels, "key (attended to)"),
        yaxis=yaxis,
        height=max(420, min(900, 160 + 14 * len(labels))),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return figure


def pool(weights: np.ndarray, max_cells: int) -> tuple[np.ndarray, int]:
    """Averages (..., P, P) over blocks of ``ceil(P / max_cells)`` pieces; returns it and the block size."""
    size = weights.shape[-1]
    block = max(1, math.ceil(size / max_cells))
    if block == 1:
        return weights, 1
    cells = math.ceil(size / block)
    padded = np.zeros((*weights.shape[:-2], cells * block, cells * block), dtype=weights.dtype)
    padded[..., :size, :size] = weights
    counts = np.zeros((cells * block,), dtype=np.float32)
    counts[:size] = 1
    blocks = padded.reshape(*weights.shape[:-2], cells, block, cells, block).sum(axis=(-1, -3))
    area = np.outer(counts.reshape(cells, block).sum(-1), counts.reshape(cells, block).sum(-1))
    return blocks / area, block


def grid_figure(pieces: Sequence[str], weights: np.ndarray) -> go.Figure:
    """Small multiples of (L, nh, P, P): one thumbnail per layer (row) and head (column)."""
    num_layers, num_heads, size, _ = weights.shape
    pooled, block = pool(np.asarray(weights, dtype=np.float32), GRID_MAX_CELLS)
    figure = make_subplots(
        rows=num_layers,
        cols=num_heads,
        subplot_titles=[
            f"layer {layer} · head {head}" for layer in range(num_layers) for head in range(num_heads)
        ],
        horizontal_spacing=0.02,
        vertical_spacing=min(0.08, 0.35 / num_layers),
    )
    if block == 1:
        labels = axis_labels(pieces)
    else:  # the range of pieces that each cell averages
        labels = [f"{start}-{min(start + block, size) - 1}" for start in range(0, size, block)]
    for layer in range(num_layers):
        for head in range(num_heads):
            figure.add_trace(
                go.Heatmap(
                    z=pooled[layer, head],
                    x=labels,
                    y=labels,
                    coloraxis="coloraxis",
                    hovertemplate=(
                        f"layer {layer} · head {head}<br>query %{{y}}<br>key %{{x}}"
                        "<br>weight %{z:.4f}<extra></extra>"
                    ),
                ),
                row=layer + 1,
                col=head + 1,
            )
    figure.update_xaxes(showticklabels=False, type="category")
    figure.update_yaxes(showticklabels=False, type="category", autorange="reversed")
    figure.update_annotations(font_size=10)
    note = "" if block == 1 else f" (each cell averages {block} x {block} pieces)"
    figure.update_layout(
        title=dict(text=f"All layers x heads{note}", font=dict(size=14)),
        coloraxis=dict(colorscale=COLORSCALE, cmin=0.0, cmax=color_max(pooled), colorbar=dict(thickness=12)),
        height=80 + 150 * num_layers,
        margin=dict(l=10, r=10, t=60, b=10),
    )
    return figure


def attention_figures(result) -> tuple[go.Figure, go.Figure]:
    """The heatmap of ``result.selected`` and the grid of every layer and head, for an ``AttentionResult``."""
    return heatmap_figure(result.pieces, result.selected, result.title), grid_figure(
        result.pieces, result.weights
    )
