"""Training: patch-based, cross-entropy on annotated pixels only (unlabelled pixels give no loss).

Lightning runs the loop (progress bar, checkpoints, devices); patches are drawn around annotated pixels
so that every batch carries a loss however sparse the strokes are.
"""

from __future__ import annotations

import logging
import os
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
PRECISIONS = ("32", "bf16-mixed")


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
    precision: str = "32"  # or "bf16-mixed": bf16 autocast (GPU), in training and inference
    channels_last: bool = False  # NHWC memory format, faster convolutions on recent GPUs
    devices: int = 1  # processes per node (GPUs, or CPU processes with the gloo backend)
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning's: "ddp" for several devices or nodes

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if self.logitnorm_temperature <= 0:
            raise ValueError(
                f"LogitNorm temperature must be positive, got {self.logitnorm_temperature}"
            )


class PatchDataset(Dataset):
    """Random square patches of N (C, H, W) images, each centred near an annotated pixel, with random
    flips and 90-degree rotations; ``target`` (N, H, W) holds class indices and ``IGNORE`` elsewhere."""

    def __init__(
        self, images: torch.Tensor, target: torch.Tensor, patch: int, length: int, seed: int
    ):
        if not (target != IGNORE).any():
            raise ValueError("no annotated pixel to train on")
        self.images, self.target = _pad_to(images, target, patch)
        self.anchors = torch.nonzero(self.target != IGNORE)  # (n, y, x) rows
        self.patch, self.length, self.seed = patch, length, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * self.length + i)
        n, y, x = self.anchors[torch.randint(len(self.anchors), (1,), generator=g)][0].tolist()
        h, w = self.images.shape[-2:]
        p = self.patch
        y0 = int(np.clip(y - torch.randint(p, (1,), generator=g).item(), 0, h - p))
        x0 = int(np.clip(x - torch.randint(p, (1,), generator=g).item(), 0, w - p))
        img = self.images[n, :, y0 : y0 + p, x0 : x0 + p]
        tgt = self.target[n, y0 : y0 + p, x0 : x0 + p]
        k = int(torch.randint(4, (1,), generator=g))
        img, tgt = torch.rot90(img, k, (1, 2)), torch.rot90(tgt, k, (0, 1))
        if torch.rand(1, generator=g) < 0.5:
            img, tgt = img.flip(2), tgt.flip(1)
        return img.float().contiguous(), tgt.contiguous()


def _pad_to(
    images: torch.Tensor, target: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge-pad images smaller than one patch (targets padded with IGNORE)."""
    h, w = images.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        images = F.pad(images.float(), (0, pw, 0, ph), mode="replicate")
        target = F.pad(target, (0, pw, 0, ph), value=IGNORE)
    return images, target


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
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        logits, _ = self.net(image)
        loss = segmentation_loss(
            logits, target, self.config.loss, self.config.logitnorm_temperature
        )
        self.log(
            "loss",
            loss,
            prog_bar=True,
            on_step=False,
            on_epoch=True,
            batch_size=len(image),
            sync_dist=True,
        )
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
    resume: bool = False,
) -> Segmenter:
    """Train ``net`` on an (H, W, C) image, or N such images stacked as (N, H, W, C), whose
    ``target`` ((H, W) or (N, H, W)) holds class indices 0..K-1 at the annotated pixels and
    ``IGNORE`` elsewhere. Seeded: the same call gives the same weights. A checkpoint is written to
    ``checkpoint_dir/last.ckpt`` after every epoch; ``resume`` continues from it (an interrupted
    run then ends with the same weights as an uninterrupted one: patches are drawn from a
    generator seeded by seed, epoch and index, not from a global state)."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    images = image if image.ndim == 4 else image[None]
    data = PatchDataset(
        torch.from_numpy(images).permute(0, 3, 1, 2),  # a view: (N, C, H, W) without a copy
        torch.from_numpy(target.astype(np.int64).reshape(images.shape[:3])),
        config.patch,
        config.patches_per_epoch,
        config.seed,
    )
    callbacks: list[L.Callback] = []
    if progress:
        callbacks.append(RichProgressBar(leave=False))
    if checkpoint_dir is not None:
        callbacks.append(
            # No monitored metric: the one checkpoint kept is the latest, rewritten every epoch.
            ModelCheckpoint(dirpath=checkpoint_dir, filename="last", save_top_k=1, every_n_epochs=1)
        )
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    module = SparseSegmentation(net, config)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=False, num_workers=0)
    with _quiet_lightning():
        trainer = L.Trainer(
            max_epochs=config.epochs,
            accelerator=config.device,
            devices=config.devices,
            num_nodes=config.num_nodes,
            strategy=config.strategy,
            precision=config.precision,
            logger=False,
            callbacks=callbacks,
            enable_checkpointing=checkpoint_dir is not None,
            enable_progress_bar=progress,
            enable_model_summary=False,
            deterministic=True,
            default_root_dir=checkpoint_dir,
        )
        last = checkpoint_dir / "last.ckpt" if checkpoint_dir is not None else None
        # Our own checkpoint, written by this function: Lightning's loader unpickles its loop state.
        trainer.fit(module, loader, ckpt_path=last if resume and last.is_file() else None)
    return net.eval()


class _AtomicCheckpoint(ModelCheckpoint):
    """A checkpoint written beside its place and renamed into it, so that a process killed while
    saving leaves the previous checkpoint whole (Lightning writes the file in place)."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath


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
    net: Segmenter, x: torch.Tensor, size: tuple[int, int], precision: str = "32"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (K, H, W) and features (F, H, W), float32 on the CPU, of a :func:`network_input`
    cropped to ``size``; ``precision="bf16-mixed"`` runs the network under bf16 autocast."""
    h, w = size
    with torch.autocast(x.device.type, torch.bfloat16, enabled=precision == "bf16-mixed"):
        logits, features = net.to(x.device).eval()(x)
    return logits[0, :, :h, :w].float().cpu(), features[0, :, :h, :w].float().cpu()
