"""Training: patch-based, cross-entropy on annotated pixels only (unlabelled pixels give no loss).

Lightning runs the loop (progress bar, checkpoints, devices); patches are drawn around annotated pixels
so that every batch carries a loss however sparse the strokes are.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from torch.utils.data import DataLoader, Dataset

from oodseg.model import Segmenter

IGNORE = -1
LOSSES = ("ce", "logitnorm")


@dataclass(frozen=True)
class TrainConfig:
    """How a network is trained; ``epochs`` x ``patches_per_epoch`` patches are seen in all."""

    epochs: int = 30
    patches_per_epoch: int = 64
    batch_size: int = 8
    patch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    loss: str = "ce"  # "ce" or "logitnorm"
    logitnorm_temperature: float = 0.04

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if self.logitnorm_temperature <= 0:
            raise ValueError(
                f"LogitNorm temperature must be positive, got {self.logitnorm_temperature}"
            )


class PatchDataset(Dataset):
    """Random square patches of a (C, H, W) image, each centred near an annotated pixel, with random
    flips and 90-degree rotations; ``target`` holds class indices and ``IGNORE`` elsewhere."""

    def __init__(
        self, image: torch.Tensor, target: torch.Tensor, patch: int, length: int, seed: int
    ):
        if not (target != IGNORE).any():
            raise ValueError("no annotated pixel to train on")
        self.image, self.target = _pad_to(image, target, patch)
        self.anchors = torch.nonzero(self.target != IGNORE)
        self.patch, self.length, self.seed = patch, length, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * self.length + i)
        y, x = self.anchors[torch.randint(len(self.anchors), (1,), generator=g)][0].tolist()
        _, h, w = self.image.shape
        p = self.patch
        y0 = int(np.clip(y - torch.randint(p, (1,), generator=g).item(), 0, h - p))
        x0 = int(np.clip(x - torch.randint(p, (1,), generator=g).item(), 0, w - p))
        img = self.image[:, y0 : y0 + p, x0 : x0 + p]
        tgt = self.target[y0 : y0 + p, x0 : x0 + p]
        k = int(torch.randint(4, (1,), generator=g))
        img, tgt = torch.rot90(img, k, (1, 2)), torch.rot90(tgt, k, (0, 1))
        if torch.rand(1, generator=g) < 0.5:
            img, tgt = img.flip(2), tgt.flip(1)
        return img.contiguous(), tgt.contiguous()


def _pad_to(
    image: torch.Tensor, target: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reflect-pad an image smaller than one patch (targets padded with IGNORE)."""
    _, h, w = image.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = F.pad(image[None], (0, pw, 0, ph), mode="replicate")[0]
        target = F.pad(target, (0, pw, 0, ph), value=IGNORE)
    return image, target


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, loss: str = "ce", temperature: float = 0.04
) -> torch.Tensor:
    """K-way cross-entropy over the annotated pixels only. ``logitnorm`` (Wei et al., 2022) first
    divides each pixel's logit vector by temperature x its L2 norm, so training cannot lower the loss
    by inflating logits, which keeps OOD pixels' logits small."""
    if loss == "logitnorm":
        logits = logits / (temperature * (logits.norm(dim=1, keepdim=True) + 1e-7))
    return F.cross_entropy(logits, target, ignore_index=IGNORE)


class SparseSegmentation(L.LightningModule):
    """Lightning wrapper: the training step of the method."""

    def __init__(self, net: Segmenter, config: TrainConfig):
        super().__init__()
        self.net, self.config = net, config

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        image, target = batch
        logits, _ = self.net(image)
        loss = segmentation_loss(
            logits, target, self.config.loss, self.config.logitnorm_temperature
        )
        self.log("loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(image))
        return loss

    def on_train_epoch_start(self) -> None:
        self.trainer.train_dataloader.dataset.epoch = self.current_epoch

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return [opt], [sched]


def fit(
    net: Segmenter,
    image: np.ndarray,
    target: np.ndarray,
    config: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> Segmenter:
    """Train ``net`` on an (H, W, C) image whose ``target`` (H, W) holds class indices 0..K-1 at the
    annotated pixels and ``IGNORE`` elsewhere. Seeded: the same call gives the same weights."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = PatchDataset(
        torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        torch.from_numpy(target.astype(np.int64)),
        config.patch,
        config.patches_per_epoch,
        config.seed,
    )
    callbacks: list[L.Callback] = []
    if progress:
        callbacks.append(RichProgressBar(leave=False))
    if checkpoint_dir is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=checkpoint_dir, filename="last", save_top_k=0, save_last=True)
        )
    module = SparseSegmentation(net, config)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=False, num_workers=0)
    with _quiet_lightning():
        trainer = L.Trainer(
            max_epochs=config.epochs,
            accelerator=config.device,
            devices=1,
            logger=False,
            callbacks=callbacks,
            enable_checkpointing=checkpoint_dir is not None,
            enable_progress_bar=progress,
            enable_model_summary=False,
            deterministic=True,
            default_root_dir=checkpoint_dir,
        )
        trainer.fit(module, loader)
    return net.eval()


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up banners and its hint about data loader workers (patches are cut
    from a tensor in memory: worker processes would only add start-up time)."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def network_input(
    image: np.ndarray, divisor: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """A (1, C, H', W') tensor of an (H, W, C) image, edge-padded to sides that are multiples of
    ``divisor`` (what the U-Net's down-sampling needs); crop outputs back to (H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % divisor, 0, -h % divisor), mode="replicate").to(device)


@torch.no_grad()
def infer(
    net: Segmenter, x: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (K, H, W) and features (F, H, W) on the CPU of a :func:`network_input` cropped to
    ``size``."""
    h, w = size
    logits, features = net.to(x.device).eval()(x)
    return logits[0, :, :h, :w].float().cpu(), features[0, :, :h, :w].float().cpu()
