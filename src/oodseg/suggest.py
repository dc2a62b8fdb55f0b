"""Where to draw the next stroke: ranked regions of an image where the model is unsure.

The acquisition score of a pixel, in [0, 1], is the larger of two uncertainties:

* ``class``: ``1 - (p1 - p2)``, one minus the softmax margin between the two most probable known
  classes, on the pixels the K+1 map keeps as ID (a stroke there says which class it is);
* ``threshold``: ``1 - |s - t| / (WIDTH * spread)`` (clipped at 0), where ``s`` is the pixel's
  ID-ness score, ``t`` the threshold and ``spread`` the distance between the 5th and 95th
  percentiles of the image's scores: the pixels within 10 % of the image's range of scores from
  the threshold, where ID and OOD are decided by a hair (a stroke there says it is known; leaving
  it says it is not). Measured in score, not in rank: an image whose scores leave a gap at the
  threshold has no such pixels.

Candidate pixels have a score of at least ``LEVEL`` and lie farther than ``gap`` pixels from any
annotation. A region is a connected set (8-connectivity) of candidates of one arg-max class inside
one square cell of side ``cell`` (so that a weak model's doubt over half the image still comes in
pieces one stroke can settle); regions of at least ``min_area`` pixels are ranked by their summed
acquisition score: the amount of doubt a stroke there could settle. Each region says why (the
uncertainty with the larger sum), and gives an ``anchor``: its pixel farthest from the region's
edge, where a stroke would start.

Ranking connected regions, not pixels, is what an annotator can act on: MONAI Label's active
learning ranks whole images, and nothing in pytorch-ood ranks pixels, so this is written here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

WIDTH = 0.1  # the threshold band: this share of the image's score spread on either side of it
LEVEL = 0.5  # acquisition score a pixel needs to belong to a suggested region
REASONS = ("class", "threshold")


@dataclass(frozen=True)
class Region:
    """One suggested region of one image (pixel coordinates: row ``y``, column ``x``)."""

    image: str
    rank: int  # 1 = most worth a stroke, per image
    score: float  # summed acquisition score over the region
    area: int
    centroid: tuple[float, float]  # (y, x)
    anchor: tuple[int, int]  # (y, x): the region's pixel farthest from its edge
    bbox: tuple[int, int, int, int]  # (y0, x0, y1, x1), end-exclusive
    predicted: str  # the class the network gives most of the region
    ood_share: float  # share of the region the K+1 map flags as OOD
    reason: str  # "class" (between known classes) or "threshold" (between ID and OOD)


def class_margin(probabilities: np.ndarray) -> np.ndarray:
    """The softmax margin (H, W) between the two most probable of the classes (K, H, W); 1 with
    a single class."""
    if probabilities.shape[0] < 2:
        return np.ones(probabilities.shape[1:], np.float32)
    top2 = np.partition(probabilities, -2, axis=0)[-2:]
    return (top2[1] - top2[0]).astype(np.float32)


def acquisition(
    margin: np.ndarray, scores: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """The per-pixel acquisition score (H, W) in [0, 1] and the reason (H, W) (0 = class, 1 =
    threshold) of the larger uncertainty, from the class ``margin`` (H, W, see
    :func:`class_margin`) and the ID-ness ``scores`` (H, W) with their ``threshold``."""
    if margin.shape != scores.shape:
        raise ValueError(f"margin {margin.shape} and scores {scores.shape} differ in size")
    kept = scores >= threshold
    between_classes = np.where(kept, 1.0 - margin, 0.0)
    lo, hi = np.percentile(scores, [5, 95])
    band = WIDTH * (hi - lo) if hi > lo else 1.0
    near_threshold = np.clip(1.0 - np.abs(scores - threshold) / band, 0.0, 1.0)
    reason = (near_threshold > between_classes).astype(np.uint8)
    return np.maximum(between_classes, near_threshold).astype(np.float32), reason


def suggest_regions(
    name: str,
    classes: np.ndarray,
    margin: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    class_names: tuple[str, ...],
    *,
    annotated: np.ndarray | None = None,
    top: int = 10,
    min_area: int = 9,
    gap: int = 2,
    cell: int = 32,
) -> list[Region]:
    """The ``top`` regions of one image most worth a stroke (see the module's docstring), never
    within ``gap`` pixels of an ``annotated`` pixel (H, W, true where annotated). ``classes``
    (H, W) is the arg-max class of each pixel, 1..K (``class_names[k - 1]``)."""
    if top < 1 or min_area < 1 or gap < 0 or cell < 2:
        raise ValueError(
            f"top and min_area must be at least 1, gap not negative and cell at least 2, got "
            f"{top}, {min_area}, {gap}, {cell}"
        )
    score, reason = acquisition(margin, scores, threshold)
    candidate = score >= LEVEL
    if annotated is not None:
        if annotated.shape != scores.shape:
            raise ValueError(
                f"{name}: annotation mask {annotated.shape} differs from the image {scores.shape}"
            )
        near = annotated.astype(bool)
        if gap:
            near = ndimage.binary_dilation(near, iterations=gap)
        candidate &= ~near
    regions, n = _pieces(candidate, classes, cell)
    if not n:
        return []
    index = np.arange(1, n + 1)
    area = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    mass = ndimage.sum_labels(score, regions, index)
    threshold_mass = ndimage.sum_labels(score * (reason == 1), regions, index)
    order = [i for i in np.argsort(-mass, kind="stable") if area[i] >= min_area][:top]
    flagged = scores < threshold
    slices = ndimage.find_objects(regions)
    out = []
    for rank, i in enumerate(order, start=1):
        box = slices[i]
        inside = regions[box] == i + 1
        depth = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        ay, ax = np.unravel_index(np.argmax(depth), inside.shape)
        ys, xs = np.nonzero(inside)
        counts = np.bincount(classes[box][inside], minlength=len(class_names) + 1)[1:]
        out.append(
            Region(
                name,
                rank,
                float(mass[i]),
                int(area[i]),
                (float(ys.mean() + box[0].start), float(xs.mean() + box[1].start)),
                (int(ay + box[0].start), int(ax + box[1].start)),
                (box[0].start, box[1].start, box[0].stop, box[1].stop),
                class_names[int(counts.argmax())],
                float(flagged[box][inside].mean()),
                REASONS[int(threshold_mass[i] > mass[i] / 2)],
            )
        )
    return out


def _pieces(candidate: np.ndarray, classes: np.ndarray, cell: int) -> tuple[np.ndarray, int]:
    """Region ids (H, W) (0: none) of the connected candidates of one class in one cell."""
    out = np.zeros(candidate.shape, np.int32)
    n = 0
    eight = np.ones((3, 3), bool)
    for y in range(0, candidate.shape[0], cell):
        for x in range(0, candidate.shape[1], cell):
            box = (slice(y, y + cell), slice(x, x + cell))
            here = candidate[box]
            if not here.any():
                continue
            for c in np.unique(classes[box][here]):
                parts, m = ndimage.label(here & (classes[box] == c), structure=eight)
                out[box][parts > 0] = parts[parts > 0] + n
                n += m
    return out, n


CSV_FIELDS = ("image", "rank", "score", "area", "centroid_y", "centroid_x", "anchor_y",
              "anchor_x", "y0", "x0", "y1", "x1", "predicted", "ood_share", "reason")  # fmt: skip


def regions_csv(regions: list[Region]) -> str:
    """The regions as CSV, one row each (coordinates in separate columns)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_FIELDS)
    for r in regions:
        writer.writerow(
            [r.image, r.rank, f"{r.score:.6g}", r.area, f"{r.centroid[0]:.1f}",
             f"{r.centroid[1]:.1f}", *r.anchor, *r.bbox, r.predicted, f"{r.ood_share:.3f}",
             r.reason]
        )  # fmt: skip
    return buf.getvalue()


def regions_json(regions: list[Region]) -> list[dict]:
    """The regions as JSON-ready dicts."""
    return [asdict(r) for r in regions]
