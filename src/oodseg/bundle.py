"""The model bundle: train once on your images, save, load anywhere, predict K+1 maps.

A bundle is a folder: ``model.safetensors`` (the network), ``detector.safetensors`` (the fitted
detector's tensors) and ``bundle.json`` (class names, band count, normalisation, network preset,
detector name, parameters and numbers, threshold and its target TPR, versions). Loading never
unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from safetensors.torch import load_file, save_file
from scipy import ndimage

from oodseg.crossval import package_versions, torch_device
from oodseg.datasets import BandNormaliser
from oodseg.detectors import DETECTORS, Detector, InputDetector, PixelOutputs, make_detector
from oodseg.distributed import broadcast_module, gather_by_image, my_images
from oodseg.io import write_folder
from oodseg.manifest import ImageDataset, Sample, read_all
from oodseg.model import PRESETS, Segmenter, build_network
from oodseg.threshold import calibrate_threshold
from oodseg.training import IGNORE, PRECISIONS, TrainConfig, fit

FORMAT_VERSION = 1
OOD_LABEL = 0  # in predicted label maps: 0 = OOD / unknown, 1..K = the classes


@dataclass(frozen=True)
class Inference:
    """How a bundle runs: device, window side (``tile``), bf16 autocast, channels-last memory."""

    device: str = "cpu"
    tile: int = 1024
    precision: str = "32"  # or "bf16-mixed"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}"
            )

    @property
    def torch_device(self) -> torch.device:
        return torch_device(self.device)


@dataclass
class Bundle:
    """A trained network, its fitted detector and threshold, and what prediction needs."""

    net: Segmenter
    detector: Detector
    class_names: tuple[str, ...]
    normaliser: BandNormaliser
    threshold: float
    tpr: float
    preset: str
    features: str
    info: dict = field(default_factory=dict)  # training set-up and data description

    @property
    def bands(self) -> int:
        return len(self.normaliser.mean)

    def predict(
        self,
        image: np.ndarray,
        *,
        device: str = "cpu",
        tile: int = 1024,
        precision: str = "32",
        channels_last: bool = False,
        source: str = "image",
    ) -> tuple[np.ndarray, np.ndarray]:
        """K+1 labels (H, W) (0 = OOD, 1..K the classes) and ID-ness scores (H, W) float32 of an
        (H, W, bands) image. The image is read in strips of ``tile`` rows (plus a margin of
        ``tile // 16`` on each side, dropped afterwards), so a memory-mapped cube larger than
        memory works; each strip goes through MONAI's sliding window in windows as tall as the
        strip and at most ``tile`` wide (overlapping by a quarter only where the strip is wider).
        ``precision="bf16-mixed"`` and ``channels_last`` are for GPUs."""
        run = Inference(device, tile, precision, channels_last)
        if image.ndim != 3 or image.shape[-1] != self.bands:
            raise ValueError(
                f"{source}: expected (H, W, {self.bands}) for this model, got shape {image.shape}"
            )
        h, w, _ = image.shape
        labels = np.zeros((h, w), np.uint8 if len(self.class_names) < 256 else np.uint16)
        scores = np.zeros((h, w), np.float32)
        margin = tile // 16
        for y0 in range(0, h, tile):
            a, b = max(0, y0 - margin), min(h, y0 + tile + margin)
            logits, score = self._score(image[a:b], run, source=source, first_row=a)
            keep = slice(y0 - a, y0 - a + min(tile, h - y0))
            pred = np.where(score >= self.threshold, logits.argmax(0) + 1, OOD_LABEL)
            labels[y0 : y0 + tile] = pred[keep]
            scores[y0 : y0 + tile] = score[keep]
        return labels, scores

    def _window(self, x: torch.Tensor, predictor, run: Inference):
        """MONAI's sliding window over a strip: windows as tall as the strip, at most
        ``run.tile`` wide, sides rounded up to the network's divisor."""
        d = PRESETS[self.preset].divisor
        h, w = x.shape[-2:]
        roi = (-(-h // d) * d, -(-min(w, run.tile) // d) * d)
        fmt = torch.channels_last if run.channels_last else torch.contiguous_format
        self.net.to(device=x.device, memory_format=fmt).eval()
        bf16 = run.precision == "bf16-mixed"
        with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
            return sliding_window_inference(
                x.contiguous(memory_format=fmt), roi, 1, predictor, overlap=0.25, mode="gaussian"
            )

    def _input(
        self, image: np.ndarray, device: torch.device, source: str = "image", first_row: int = 0
    ) -> torch.Tensor:
        """The normalised (1, C, H, W) float32 network input of a raw (H, W, C) image (a memory
        map is read here, row by row). Converted, checked, normalised and transposed one row at a
        time: a whole-image transposing copy of a 200-band cube thrashes the cache and cost 3x as
        much (as much as the small network's forward)."""
        mean = torch.as_tensor(self.normaliser.mean, dtype=torch.float32)
        std = torch.as_tensor(self.normaliser.std, dtype=torch.float32)
        h, w, c = image.shape
        check = not np.issubdtype(image.dtype, np.integer)
        x = torch.empty(c, h, w)
        for r in range(h):
            row = torch.from_numpy(np.array(image[r], np.float32))  # a copy: memmaps are read-only
            if check and not torch.isfinite(row).all():
                raise ValueError(f"{source}: NaN or Inf values in row {first_row + r}")
            x[:, r] = ((row - mean) / std).T
        return x[None].to(device)

    def _forward(self, image: np.ndarray, run: Inference, **where) -> tuple[torch.Tensor, ...]:
        """The normalised input, logits (K, H, W) and features (F, H, W) of a raw image."""
        x = self._input(image, run.torch_device, **where)
        logits, features = self._window(x, self.net, run)
        return x, logits[0].float().cpu(), features[0].float().cpu()

    def _score(self, image: np.ndarray, run: Inference, **where) -> tuple[np.ndarray, np.ndarray]:
        """Logits (K, H, W) and the detector's score map (H, W) of a raw image; ``where``
        (source, first_row) names the place of a bad value in errors."""
        x, logits, features = self._forward(image, run, **where)
        if isinstance(self.detector, InputDetector):
            score = self._window(
                x, lambda t: self.detector.score_image(self.net, t)[:, None].float(), run
            )[0, 0]
        else:
            outputs = PixelOutputs.from_maps(logits, features, head=self.net.head)
            score = self.detector.score(outputs).reshape(logits.shape[1:])
        return logits.numpy(), score.float().cpu().numpy()

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the bundle folder atomically: a sibling temporary folder renamed into place."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; choose a new folder or pass --overwrite")
        write_folder(path, self._write)
        return path

    def _write(self, folder: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, folder / "model.safetensors")
        tensors, numbers = self.detector.fitted_state()
        save_file(
            {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
            folder / "detector.safetensors",
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "class_names": list(self.class_names),
            "bands": self.bands,
            "normalisation": {
                "mean": self.normaliser.mean.tolist(),
                "std": self.normaliser.std.tolist(),
            },
            "preset": self.preset,
            "features": self.features,
            "detector": {"name": self.detector.name, "params": self.detector.params()},
            "detector_numbers": numbers,
            "threshold": self.threshold,
            "tpr": self.tpr,
            "info": self.info,
            "versions": package_versions(),
        }
        (folder / "bundle.json").write_text(json.dumps(meta, indent=2))


def load_bundle(path: str | Path) -> Bundle:
    """A bundle saved by :meth:`Bundle.save`: JSON and safetensors only, nothing unpickled."""
    path = Path(path)
    meta_path = path / "bundle.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: not a model bundle (no bundle.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: corrupt bundle description: {e}") from None
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{meta_path}: not a model bundle description (no format_version)")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: bundle format {version} is newer than this oodseg reads "
            f"({FORMAT_VERSION}); upgrade oodseg"
        )
    try:
        name = meta["detector"]["name"]
        if name not in DETECTORS:
            raise ValueError(f"{meta_path}: unknown detector {name!r} (a plug-in not imported?)")
        torch.manual_seed(0)
        net = build_network(
            meta["preset"], meta["bands"], len(meta["class_names"]), features=meta["features"]
        )
        net.load_state_dict(_tensors(path / "model.safetensors"))
        detector = DETECTORS[name].restore(
            meta["detector"]["params"],
            _tensors(path / "detector.safetensors"),
            meta["detector_numbers"],
        )
        normaliser = BandNormaliser(
            np.asarray(meta["normalisation"]["mean"]), np.asarray(meta["normalisation"]["std"])
        )
        return Bundle(
            net.eval(),
            detector,
            tuple(meta["class_names"]),
            normaliser,
            float(meta["threshold"]),
            float(meta["tpr"]),
            meta["preset"],
            meta["features"],
            meta.get("info", {}),
        )
    except KeyError as e:
        raise ValueError(f"{meta_path}: the bundle description lacks {e}") from None


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the bundle")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path}: corrupt or truncated weights: {e}") from None


def train(
    data: ImageDataset,
    *,
    detector: str = "gen",
    preset: str = "small",
    features: str = "last",
    tpr: float = 0.95,
    config: TrainConfig | None = None,
    encoder_weights: str | Path | None = None,
    calibration_share: float = 0.25,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> Bundle:
    """Train a bundle on a data set's training images (sparse masks). The threshold keeps ``tpr``
    of the calibration annotations: the ``val`` images' if the data set has some, else a seeded
    ``calibration_share`` of each class's strokes (connected components), held out of training.
    With ``checkpoint_dir``, training checkpoints every epoch and ``resume`` continues from there."""
    config = config or TrainConfig()
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose from: {', '.join(DETECTORS)}")
    samples = read_all(data, "train")
    bands = samples[0].image.shape[-1]
    if data.split("val"):
        val = read_all(data, "val", bands)
        train_masks, cal_masks = [s.mask for s in samples], [s.mask for s in val]
        cal_samples = val
    else:
        train_masks, cal_masks = _hold_out_strokes(samples, calibration_share, config.seed)
        cal_samples = samples
    if not any((m > 0).any() for m in cal_masks):
        raise ValueError(
            "no annotation left to calibrate the threshold: add a val image or more strokes"
        )
    images, targets = _stack([s.image for s in samples], [m - 1 for m in train_masks])
    valid = np.zeros(images.shape[:3], bool)
    for i, s in enumerate(samples):
        valid[i, : s.image.shape[0], : s.image.shape[1]] = True
    normaliser = BandNormaliser.fit(images, valid)
    k = len(data.class_names)
    torch.manual_seed(config.seed)
    net = build_network(
        preset,
        bands,
        k,
        features=features,
        encoder_weights=Path(encoder_weights) if encoder_weights else None,
    )
    train_config = TrainConfig(**{**asdict(config), "patch": PRESETS[preset].patch})
    fit(
        net,
        normaliser(images),
        targets,
        train_config,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )
    broadcast_module(net)

    bundle = Bundle(
        net.eval(),
        make_detector(detector),
        data.class_names,
        normaliser,
        0.0,
        tpr,
        preset,
        features,
    )
    # After distributed training every process holds the same network: each runs its share of
    # the images and the per-image results are gathered in image order, so the detector and the
    # threshold are exactly what one process would compute.
    run = Inference(config.device, precision=config.precision, channels_last=config.channels_last)
    if not isinstance(bundle.detector, InputDetector):
        width = k + net.feature_channels
        local = {}
        for i in my_images(len(samples)):
            _, logits, feats = bundle._forward(samples[i].image, run)
            mask = torch.from_numpy(train_masks[i] > 0)
            local[i] = torch.cat(
                [logits.flatten(1).T[mask.flatten()], feats.flatten(1).T[mask.flatten()]], 1
            )
        pixels = torch.cat(gather_by_image(local, len(samples), width, torch.float32))
        labels = torch.cat([torch.from_numpy(m[m > 0] - 1) for m in train_masks])
        w, b = net.head.weight.detach()[:, :, 0, 0].cpu(), net.head.bias.detach().cpu()
        outputs = PixelOutputs(pixels[:, :k], pixels[:, k:], w, b)
        bundle.detector.fit(outputs, labels)
    local = {
        i: torch.from_numpy(bundle._score(cal_samples[i].image, run)[1][cal_masks[i] > 0])[:, None]
        for i in my_images(len(cal_samples))
    }
    cal = gather_by_image(local, len(cal_samples), 1, torch.float32)
    bundle.threshold = calibrate_threshold(torch.cat(cal).numpy().ravel(), tpr)
    bundle.info = {
        "train": asdict(train_config),
        "images": {
            "train": [s.name for s in samples],
            "calibration": [s.name for s in cal_samples],
        },
        "annotated_pixels": {
            "train": int(sum((m > 0).sum() for m in train_masks)),
            "calibration": int(sum((m > 0).sum() for m in cal_masks)),
        },
        "calibration": "val images" if data.split("val") else f"{calibration_share:.0%} of strokes",
    }
    return bundle


def _hold_out_strokes(
    samples: list[Sample], share: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each class's connected annotated regions (strokes) into training and calibration
    ones; a class with a single stroke keeps it for training."""
    rng = np.random.default_rng(seed)
    train, cal = [], []
    for s in samples:
        t, c = s.mask.copy(), np.zeros_like(s.mask)
        for cls in np.unique(s.mask[s.mask > 0]):
            regions, n = ndimage.label(s.mask == cls)
            held = rng.permutation(n)[: int(share * n)] + 1
            chosen = np.isin(regions, held)
            c[chosen], t[chosen] = cls, 0
        train.append(t)
        cal.append(c)
    return train, cal


def _stack(images: list[np.ndarray], targets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Images of different sizes padded (edge values; targets IGNORE) to one (N, H, W, C) stack."""
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    out = np.stack(
        [np.pad(i, ((0, h - i.shape[0]), (0, w - i.shape[1]), (0, 0)), mode="edge") for i in images]
    )
    tgt = np.stack(
        [
            np.pad(
                np.where(t >= 0, t, IGNORE),
                ((0, h - t.shape[0]), (0, w - t.shape[1])),
                constant_values=IGNORE,
            )
            for t in targets
        ]
    )
    return out, tgt
