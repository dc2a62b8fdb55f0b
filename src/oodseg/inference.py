"""Inference: a trained network's logits and features on an image of any size, and every
detector's score map from them, whatever the detector's kind.

:class:`Predictor` turns a raw (H, W, C) image into the network's outputs (normalised row by row,
padded to the network's divisor, one forward or MONAI's sliding window when wider than a window);
:class:`Scorer` holds the predictor and the detectors, so a caller never branches on whether a
detector reads the outputs or re-runs the network (ODIN).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from oodseg.config import PRECISIONS, PRESETS, ScoringConfig, TrainConfig
from oodseg.datasets import BandNormaliser
from oodseg.detectors import Detector, InputDetector, PixelOutputs, StreamingDetector
from oodseg.model import Ensemble, Segmenter
from oodseg.runtime import torch_device
from oodseg.suggest import class_margin

# Window side of the network at inference. On the 2-core CPU, the small network's windows of 512
# ran a 2,048 x 2,048 RGB image 1.8x faster than windows of 1,024, and on 60 frames of mixed sizes
# up to 2,500 px a cross-validation's peak memory fell from 3.3 to 2.2 GB
# (docs/benchmarks.md, "Memory on large collections").
WINDOW = 512


@dataclass(frozen=True)
class Inference:
    """How a network runs and its maps are smoothed: device, window side (``tile``), bf16
    autocast, channels-last memory (always on the CPU, see :attr:`memory_format`; on a GPU where
    asked), and the Gaussian smoothing of the score maps and class probabilities."""

    device: str = "cpu"
    tile: int = WINDOW
    precision: str = "32"  # or "bf16-mixed"
    channels_last: bool = False
    smooth: float = 0.0  # score maps Gaussian-filtered with this standard deviation (pixels)
    smooth_classes: float = 0.0  # class probabilities alike, before the arg-max (pixels)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}"
            )
        if self.tile < 16:
            raise ValueError(f"the window side must be at least 16 pixels, got {self.tile}")

    @classmethod
    def of(cls, config: TrainConfig, scoring: ScoringConfig) -> Inference:
        """How a training set-up's network runs at inference, scored as ``scoring`` says."""
        return cls(
            config.device,
            precision=config.precision,
            channels_last=config.channels_last,
            smooth=scoring.smooth,
            smooth_classes=scoring.smooth_classes,
        )

    @property
    def torch_device(self) -> torch.device:
        return torch_device(self.device)

    @property
    def context(self) -> int:
        """Rows of context computed on either side of a strip (:meth:`Predictor.strips`) and
        dropped: a sixteenth of a window, and at least the smoothing's reach (scipy truncates
        the Gaussian at 4 sigma), so that a strip's maps equal the whole image's."""
        return max(self.tile // 16, int(np.ceil(4 * max(self.smooth, self.smooth_classes))))

    @property
    def memory_format(self) -> torch.memory_format:
        """The network's memory format at inference. Channels-last on the CPU whatever was asked:
        there the forward of a 1024 x 1024 x 200 cube ran 1.3x (small) and 1.5x (reference)
        faster in NHWC, and the input is laid out so without a transposing copy."""
        nhwc = self.channels_last or self.torch_device.type == "cpu"
        return torch.channels_last if nhwc else torch.contiguous_format


def smooth_planes(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Each (H, W) plane of ``maps`` (N, H, W) Gaussian-filtered with standard deviation
    ``sigma`` pixels, edges extended. The planes are shared between threads: scipy's filters
    release the GIL, and one call over the stack runs on one core."""
    out = np.empty_like(maps)

    def plane(i: int) -> None:
        ndimage.gaussian_filter(maps[i], sigma, mode="nearest", output=out[i])

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        list(pool.map(plane, range(len(maps))))
    return out


@dataclass(frozen=True)
class Forward:
    """One image through the network: its normalised, padded input ``x`` (1, C, H', W') and the
    logits (K, H, W), features (F, H, W) and, where the network has that head, known-vs-unknown
    logits (H, W), float32 on the CPU, cropped to the image."""

    x: torch.Tensor
    logits: torch.Tensor
    features: torch.Tensor
    known: torch.Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.logits.shape[1:])  # type: ignore[return-value]

    @cached_property
    def probabilities(self) -> np.ndarray:
        """The class probabilities (K, H, W), computed once for the class map and the margin;
        plane by plane in memory (channels-last outputs would leave each plane strided, and its
        filter twice as slow)."""
        return np.ascontiguousarray(self.logits.softmax(0).numpy())

    def classes(self, smooth: float = 0.0) -> np.ndarray:
        """Each pixel's likeliest class (an index into the logits); with ``smooth``, that of its
        class probabilities Gaussian-filtered with this standard deviation in pixels, since
        neighbouring pixels mostly share their class."""
        if not smooth:
            return self.logits.argmax(0).numpy()
        return smooth_planes(self.probabilities, smooth).argmax(0)

    def pixels(self, head: torch.nn.Conv2d, mask: np.ndarray | None = None) -> PixelOutputs:
        """The outputs at the pixels where ``mask`` (H, W) is true (every pixel without one)."""
        m = None if mask is None else torch.from_numpy(np.asarray(mask, bool))
        return PixelOutputs.from_maps(self.logits, self.features, m, head=head, known=self.known)


@dataclass
class Predictor:
    """A trained network with its input normalisation and divisor."""

    net: Segmenter | Ensemble
    normaliser: BandNormaliser
    preset: str
    run: Inference = Inference()

    def input(self, image: np.ndarray, source: str = "image", first_row: int = 0) -> torch.Tensor:
        """The normalised (1, C, H', W') float32 input of a raw (H, W, C) image, edge-padded to
        sides that are multiples of the network's divisor, in the run's memory format. A memory
        map is read here row by row: each row is converted, checked, normalised (and projected
        onto the principal components, if any) into an (H', W', C) tensor, the image's own
        layout: channels-last as it is (transposing each row to (C, H, W) cost 4x the rest)."""
        mean = torch.as_tensor(self.normaliser.mean, dtype=torch.float32)
        std = torch.as_tensor(self.normaliser.std, dtype=torch.float32)
        p = self.normaliser.projection
        projection = None if p is None else torch.as_tensor(p.T, dtype=torch.float32)
        h, w, _ = image.shape
        d = PRESETS[self.preset].divisor
        check = not np.issubdtype(image.dtype, np.integer)
        x = torch.empty(h + -h % d, w + -w % d, self.normaliser.channels)
        for r in range(h):
            row = torch.from_numpy(np.array(image[r], np.float32))  # a copy: memmaps are read-only
            if check and not torch.isfinite(row).all():
                raise ValueError(f"{source}: NaN or Inf values in row {first_row + r}")
            z = row.sub_(mean).div_(std)  # in place: a row's temporaries cost as much again
            x[r, :w] = z if projection is None else z @ projection
        x[:h, w:] = x[:h, w - 1 : w]  # the edges replicated, the corner from the padded last row
        x[h:] = x[h - 1]
        x = x.permute(2, 0, 1)[None].to(self.run.torch_device)
        return x.contiguous(memory_format=self.run.memory_format)

    def window(
        self, x: torch.Tensor, predictor: Callable, tile: int | None = None
    ) -> tuple[torch.Tensor, ...]:
        """``predictor`` over a padded input: one call when it fits a square window of side
        ``tile`` (default ``run.tile``), else MONAI's sliding window of such windows (overlapping
        by a quarter, Gaussian-weighted), so that memory follows the window, not the image."""
        fmt = self.run.memory_format
        self.net.to(device=x.device, memory_format=fmt).eval()
        x = x.contiguous(memory_format=fmt)
        bf16 = self.run.precision == "bf16-mixed"
        with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
            h, w = x.shape[-2:]
            d = PRESETS[self.preset].divisor
            side = max(d, (tile or self.run.tile) // d * d)
            if h <= side and w <= side:
                out = predictor(x)
                return out if isinstance(out, tuple) else (out,)
            roi = (min(h, side), min(w, side))
            out = sliding_window_inference(x, roi, 1, predictor, overlap=0.25, mode="gaussian")
            return out if isinstance(out, tuple) else (out,)

    def forward(self, image: np.ndarray, source: str = "image", first_row: int = 0) -> Forward:
        """The network's outputs on a raw (H, W, C) image; ``source`` and ``first_row`` name the
        place of a bad value in errors."""
        h, w = image.shape[:2]
        x = self.input(image, source, first_row)
        outputs = self.window(x, self._outputs)
        crop = (0, slice(None), slice(0, h), slice(0, w))
        logits, features, *known = (o[crop].float().cpu() for o in outputs)
        return Forward(x, logits, features, known[0][0] if known else None)

    def strips(
        self, image: np.ndarray, source: str = "image"
    ) -> Iterator[tuple[slice, Forward, slice]]:
        """The network's outputs strip of rows by strip, each strip with ``run.context`` rows of
        context on either side, so that memory follows the strip, not the image (a memory-mapped
        cube is read strip by strip too). Yields (the strip's rows in the image, its forward
        pass, those rows in the forward's maps). A strip and its context fill one window of side
        ``run.tile``: an image of at most ``run.tile - 2 * run.context`` rows is one strip."""
        h, pad = image.shape[0], self.run.context
        d = PRESETS[self.preset].divisor
        rows = max(d, (self.run.tile - 2 * pad) // d * d)
        for y0 in range(0, h, rows):
            a, b = max(0, y0 - pad), min(h, y0 + rows + pad)
            forward = self.forward(image[a:b], source, first_row=a)
            yield slice(y0, min(h, y0 + rows)), forward, slice(y0 - a, min(h, y0 + rows) - a)

    def pixels(self, image: np.ndarray, mask: np.ndarray, source: str = "image") -> PixelOutputs:
        """The outputs at the pixels where ``mask`` (H, W) is true, in row-major order, computed
        strip by strip (:meth:`strips`)."""
        parts = []
        for rows, forward, keep in self.strips(image, source):
            m = np.zeros(forward.size, bool)
            m[keep] = mask[rows]
            parts.append(forward.pixels(self.net.head, m))
        return PixelOutputs.concat(parts)

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits, features and, where the network has that head, the known-vs-unknown logit."""
        logits, features = self.net(x)
        if self.net.known_head is None:
            return logits, features
        return logits, features, self.net.known_head(features)


SCORE_CHUNK = 1 << 18  # pixels a detector scores at a time
# Window side of a detector that re-runs the network with its gradient (ODIN): the backward pass
# holds every activation of the window, several times what a forward pass needs.
INPUT_TILE = 512


class Scorer:
    """A predictor and its detectors: fits them on training pixels and gives every detector's
    (H, W) score map of an image, re-running the network for a detector that needs it (ODIN)."""

    def __init__(self, predictor: Predictor, detectors: Mapping[str, Detector]):
        self.predictor, self.detectors = predictor, dict(detectors)
        self.seconds = dict.fromkeys(self.detectors, 0.0)  # fitting and scoring, per detector

    @property
    def head(self) -> torch.nn.Conv2d:
        return self.predictor.net.head

    def fit(self, batches: Iterable[tuple[PixelOutputs, torch.Tensor]]) -> Scorer:
        """Fit every detector on batches of training pixels (outputs, class indices): streamed
        (``partial_fit``) where a detector streams, gathered once for any other that learns
        (one that keeps ``Detector.fit``, e.g. a logit detector, has nothing to learn)."""
        streaming = {n: d for n, d in self.detectors.items() if isinstance(d, StreamingDetector)}
        others = {
            n: d
            for n, d in self.detectors.items()
            if not isinstance(d, StreamingDetector) and type(d).fit is not Detector.fit
        }
        for d in streaming.values():
            d._start()
        gathered: list[tuple[PixelOutputs, torch.Tensor]] = []
        for outputs, labels in batches:
            for name, d in streaming.items():
                with self._timed(name):
                    d.partial_fit(outputs, labels)
            if others:
                gathered.append((outputs, labels))
        if (others and not gathered) or any(not d.n_seen_ for d in streaming.values()):
            raise ValueError("no training pixel to fit the detectors on")
        if others:
            outputs = PixelOutputs.concat([o for o, _ in gathered])
            labels = torch.cat([lab for _, lab in gathered])
            for name, d in others.items():
                with self._timed(name):
                    d.fit(outputs, labels)
        return self

    @property
    def needs_calibration(self) -> bool:
        """Whether a detector learns from the calibration ID pixels (see :meth:`calibrate`)."""
        return any(d.needs_calibration for d in self.detectors.values())

    def calibrate(self, batches: Iterable[PixelOutputs]) -> Scorer:
        """Pass batches of calibration ID pixels to the detectors that learn from them."""
        for outputs in batches:
            for name, d in self.detectors.items():
                if d.needs_calibration:
                    with self._timed(name):
                        d.calibrate(outputs)
        return self

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - start

    def image_maps(
        self,
        image: np.ndarray,
        source: str = "image",
        *,
        classes: bool = True,
        margin: bool = False,
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
        """Each detector's (H, W) score map of a raw image and, with ``classes``, its (smoothed)
        arg-max classes and, with ``margin``, the softmax margin between its two likeliest
        classes: computed strip by strip (:meth:`Predictor.strips`), equal to the whole
        image's."""
        smooth = self.predictor.run.smooth_classes
        h, w = image.shape[:2]
        maps = {name: np.zeros((h, w), np.float32) for name in self.detectors}
        argmax = np.zeros((h, w), np.int64) if classes else None
        margins = np.zeros((h, w), np.float32) if margin else None
        for rows, forward, keep in self.predictor.strips(image, source):
            for name, smap in self.score_maps(forward).items():
                maps[name][rows] = smap[keep]
            if argmax is not None:
                argmax[rows] = forward.classes(smooth)[keep]
            if margins is not None:
                margins[rows] = class_margin(forward.probabilities[:, keep])
        return maps, argmax, margins

    def score_maps(
        self, forward: Forward, only: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Each detector's (H, W) score map of one image's forward pass, in float32: what a user
        gets in a score file, what thresholds are calibrated on and compared with everywhere.
        With the run's ``smooth``, each map is Gaussian-filtered (that standard deviation, in
        pixels): an unknown object or tissue covers a region, not scattered pixels."""
        h, w = forward.size
        every = forward.pixels(self.head)
        maps = {}
        for name in only or self.detectors:
            det = self.detectors[name]
            with self._timed(name):
                if isinstance(det, InputDetector):
                    net = self.predictor.net
                    (smap,) = self.predictor.window(
                        forward.x,
                        lambda t, det=det, net=net: det.score_image(net, t)[:, None],
                        tile=INPUT_TILE,
                    )
                    maps[name] = smap[0, 0, :h, :w].float().cpu().numpy()
                else:
                    # Scored in slices: a detector's float64 work space stays bounded however
                    # large the image (a full-resolution frame's hypercolumn is 0.2 GB as is).
                    parts = [det.score(c).float() for c in every.chunks(SCORE_CHUNK)]
                    maps[name] = torch.cat(parts).reshape(h, w).numpy()
                if self.predictor.run.smooth:
                    maps[name] = ndimage.gaussian_filter(
                        maps[name], self.predictor.run.smooth, mode="nearest"
                    )
        return maps
