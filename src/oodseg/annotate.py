"""Sparse positive-only annotations: simulate what an annotator gives from a dense label map.

An annotator brushes a few short strokes over regions they are sure of (or clicks points), never over
unlabelled pixels. Each stroke keeps an id so that whole strokes, not pixels, can be held out for
threshold calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

AnnotationMode = Literal["strokes", "points"]


@dataclass(frozen=True)
class Annotations:
    """``labels`` (H, W): the annotated class, 0 elsewhere; ``stroke`` (H, W): the stroke id, -1
    elsewhere. A point or a single randomly chosen pixel is a stroke of length one."""

    labels: np.ndarray
    stroke: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.labels > 0

    def select(self, keep: np.ndarray) -> Annotations:
        """The annotations at the pixels where ``keep`` is true."""
        return Annotations(np.where(keep, self.labels, 0), np.where(keep, self.stroke, -1))


def class_budget(n_pixels: int, budget: float, min_pixels: int) -> int:
    """Pixels an annotator marks for a class with ``n_pixels`` pixels: ``budget`` of them, at least
    ``min_pixels`` (so a tiny class still gets a stroke), never more than the class has."""
    return min(n_pixels, max(min_pixels, math.ceil(budget * n_pixels)))


def simulate_annotations(
    labels: np.ndarray,
    *,
    region: np.ndarray | None = None,
    mode: AnnotationMode = "strokes",
    budget: float = 0.05,
    min_pixels: int = 6,
    stroke_length: int = 12,
    seed: int = 0,
) -> Annotations:
    """Sparse annotations of every class of ``labels`` inside ``region`` (default: everywhere).

    ``strokes``: short, gently curving scribbles of 3 to ``stroke_length`` pixels that stay inside one
    class; ``points``: uniformly random pixels (clicks, or "a fraction of each class"). Label 0 is
    never annotated and a class never gets more than :func:`class_budget` pixels.
    """
    if not 0 < budget <= 1:
        raise ValueError(f"annotation budget must be in (0, 1], got {budget}")
    if mode not in ("strokes", "points"):
        raise ValueError(f"unknown annotation mode {mode!r}; choose strokes or points")
    rng = np.random.default_rng(seed)
    region = np.ones(labels.shape, bool) if region is None else region
    out = np.zeros(labels.shape, np.int64)
    stroke = np.full(labels.shape, -1, np.int64)
    next_id = 0
    for c in np.unique(labels[region & (labels > 0)]):
        inside = region & (labels == c)
        target = class_budget(int(inside.sum()), budget, min_pixels)
        if mode == "strokes":
            paths = _strokes(inside, target, stroke_length, rng)
        else:
            candidates = np.argwhere(inside)
            paths = [
                p[None] for p in candidates[rng.choice(len(candidates), target, replace=False)]
            ]
        for path in paths:
            out[path[:, 0], path[:, 1]] = c
            stroke[path[:, 0], path[:, 1]] = next_id
            next_id += 1
    return Annotations(out, stroke)


def _strokes(
    inside: np.ndarray, target: int, max_length: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Random-walk scribbles inside ``inside`` until ``target`` pixels are marked, each starting
    at a uniformly drawn free pixel."""
    free = inside.copy()
    # The n-th free pixel in row-major order is found through the free pixels per row, kept up to
    # date, so that a stroke costs one pass over the rows and one row, not over the whole image.
    per_row = free.sum(1)
    paths: list[np.ndarray] = []
    marked = 0
    while marked < target and (left := int(per_row.sum())):
        n = int(rng.integers(left))
        before = np.cumsum(per_row)
        row = int(np.searchsorted(before, n, side="right"))
        column = int(np.flatnonzero(free[row])[n - (before[row - 1] if row else 0)])
        angle = rng.uniform(0, 2 * math.pi)
        length = min(int(rng.integers(3, max_length + 1)), target - marked)
        path = stroke_at(free, (row, column), length, rng, angle)
        if len(path):
            np.subtract.at(per_row, path[:, 0], 1)
            paths.append(path)
            marked += len(path)
    return paths


def stroke_at(
    free: np.ndarray,
    start: tuple[int, int],
    length: int,
    rng: np.random.Generator,
    angle: float | None = None,
) -> np.ndarray:
    """One gently curving scribble of up to ``length`` pixels from ``start`` (row, column), first
    heading along ``angle`` (default: a random one), that stays where ``free`` is true; its
    pixels are marked taken in ``free``. Returns the (n, 2) pixels (none if ``start`` is not
    free): what an annotator draws at a suggested place."""
    h, w = free.shape
    y, x = float(start[0]), float(start[1])
    angle = rng.uniform(0, 2 * math.pi) if angle is None else angle
    path: list[tuple[int, int]] = []
    while len(path) < length:
        iy, ix = round(y), round(x)
        if not path or (iy, ix) != path[-1]:
            # A stroke ends where it would leave its class or cross another stroke.
            if not (0 <= iy < h and 0 <= ix < w) or not free[iy, ix]:
                break
            free[iy, ix] = False
            path.append((iy, ix))
        angle += rng.normal(0.0, 0.3)
        y, x = y + math.sin(angle), x + math.cos(angle)
    return np.array(path, np.int64).reshape(-1, 2)
