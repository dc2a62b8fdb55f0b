"""OOD scoring: classification OOD detectors applied per pixel.

Every detector follows scikit-learn's estimator contract: ``fit`` learns what it needs from the
*training annotated* pixels and returns ``self`` (fitted state in trailing-underscore attributes);
``score`` is pure and returns one ID-ness score per pixel, **higher = more in-distribution**.

Pixels are given flattened, as :class:`PixelOutputs` (logits (P, K) and features (P, F)), so one
detector scores a whole image, a batch of images or a sample of pixels alike. As in pytorch-ood,
logit-based detectors read only the logits; feature-based ones read the features and leave the
pipeline unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Self

import torch


@dataclass(frozen=True)
class PixelOutputs:
    """The network's outputs at P pixels: ``logits`` (P, K) and ``features`` (P, F)."""

    logits: torch.Tensor
    features: torch.Tensor

    @classmethod
    def from_maps(
        cls, logits: torch.Tensor, features: torch.Tensor, mask: torch.Tensor | None = None
    ):
        """Flatten (C, H, W) maps, keeping the pixels where ``mask`` (H, W) is true."""
        lg, ft = logits.flatten(1).T, features.flatten(1).T
        if mask is not None:
            m = mask.flatten()
            lg, ft = lg[m], ft[m]
        return cls(lg, ft)


class Detector(ABC):
    """A per-pixel OOD detector."""

    name: ClassVar[str]

    def fit(self, outputs: PixelOutputs, labels: torch.Tensor) -> Self:  # noqa: ARG002
        """Learn from training pixels with class indices ``labels`` (P,); stateless by default."""
        return self

    @abstractmethod
    def score(self, outputs: PixelOutputs) -> torch.Tensor:
        """ID-ness per pixel, shape (P,), float64."""


class LogitDetector(Detector):
    """A detector that reads only the logits."""

    def score(self, outputs: PixelOutputs) -> torch.Tensor:
        return self.score_logits(outputs.logits.double())

    @abstractmethod
    def score_logits(self, logits: torch.Tensor) -> torch.Tensor: ...


DETECTORS: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available by its ``name``."""
    DETECTORS[cls.name] = cls
    return cls


def make_detector(name: str, **params: float) -> Detector:
    """A new, unfitted detector by registered name."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from: {', '.join(DETECTORS)}")
    return DETECTORS[name](**params)


@register
class MSP(LogitDetector):
    """Maximum softmax probability (Hendrycks & Gimpel, 2017)."""

    name = "msp"

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=1).amax(dim=1)


@register
class MaxLogit(LogitDetector):
    """Largest logit (Hendrycks et al., 2022)."""

    name = "maxlogit"

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.amax(dim=1)


@register
class Energy(LogitDetector):
    """Negative free energy, T · logsumexp(logits / T) (Liu et al., 2020)."""

    name = "energy"

    def __init__(self, temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"energy temperature must be positive, got {temperature}")
        self.temperature = temperature

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self.temperature * torch.logsumexp(logits / self.temperature, dim=1)


@register
class Entropy(LogitDetector):
    """Negated Shannon entropy of the softmax (nats)."""

    name = "entropy"

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        logp = logits.log_softmax(dim=1)
        return (logp.exp() * logp).sum(dim=1)
