"""Training: patch-based, cross-entropy on annotated pixels only (unlabelled pixels give no loss).

Lightning runs the loop (progress bar, checkpoints, devices); patches are drawn around annotated pixels
so that every batch carries a loss however sparse the strokes are.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from torch.utils.data import DataLoader, Dataset

from oodseg.config import TrainConfig
from oodseg.model import Segmenter
from oodseg.runtime import reuse_freed_memory

IGNORE = -1  # an unlabelled pixel: no class loss (a known-vs-unknown head sees it as unlabelled)
PAD = -2  # not a pixel of the image (padding): no loss at all
PU_UNIFORM_SHARE = 0.5  # with a PU head, this share of patches is placed uniformly in the images


class PatchDataset(Dataset):
    """Random square patches of N images (of any sizes), each centred near an annotated pixel, with
    random flips and 90-degree rotations; a share ``uniform`` of them is instead placed uniformly
    over the images (an unbiased sample of the unlabelled pixels, for a PU head). ``images[n]``
    gives image n as a (C, H, W) float tensor and its (H, W) target (class indices, ``IGNORE``
    elsewhere); it may read from disk: only the images that fit in ``cache_bytes`` (at least one)
    are held at a time, so the training images need not fit in memory together. ``counts[n]``:
    image n's annotated pixels (counted here if not given); ``areas[n]``: its pixel count (for
    uniform patches; equal areas if not given). An anchor is drawn uniformly over all annotated
    pixels, as if they were listed image by image in row-major order."""

    def __init__(
        self,
        images: Sequence[tuple[torch.Tensor, torch.Tensor]],
        patch: int,
        length: int,
        seed: int,
        counts: Sequence[int] | None = None,
        cache_bytes: int = 512 * 2**20,
        uniform: float = 0.0,
        areas: Sequence[int] | None = None,
    ):
        if counts is None:
            counts = [int((images[n][1] >= 0).sum()) for n in range(len(images))]
        self.ends = np.cumsum(np.asarray(counts, np.int64))
        if not len(self.ends) or self.ends[-1] == 0:
            raise ValueError("no annotated pixel to train on")
        self.images, self.patch, self.length, self.seed = images, patch, length, seed
        self.cache_bytes, self.uniform = cache_bytes, uniform
        self.area_ends = np.cumsum(np.asarray(areas or [1] * len(images), np.int64))
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = (
            OrderedDict()
        )
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def release(self) -> None:
        """Drop the cached images (training is over)."""
        self._cache.clear()

    def _image(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image n padded to a patch as an (H, W, C) array (a patch's pixels are then contiguous
        runs of channels: copying it from a (C, H, W) image took a sixth of a training step), its
        target, and its annotated pixels' flat indices."""
        if n not in self._cache:
            image, target = _pad_to(*self.images[n], self.patch)
            annotated = torch.nonzero(target.flatten() >= 0)[:, 0]
            self._cache[n] = (image.float().permute(1, 2, 0).contiguous(), target, annotated)
            size = sum(i.nbytes + t.nbytes + a.nbytes for i, t, a in self._cache.values())
            while len(self._cache) > 1 and size > self.cache_bytes:
                _, (i, t, a) = self._cache.popitem(last=False)
                size -= i.nbytes + t.nbytes + a.nbytes
        self._cache.move_to_end(n)
        return self._cache[n]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * self.length + i)
        if self.uniform and torch.rand(1, generator=g) < self.uniform:
            r = int(torch.randint(int(self.area_ends[-1]), (1,), generator=g))
            image, target, _ = self._image(int(np.searchsorted(self.area_ends, r, side="right")))
            h, w = target.shape
            y, x = (
                int(torch.randint(h, (1,), generator=g)),
                int(torch.randint(w, (1,), generator=g)),
            )
        else:
            r = int(torch.randint(int(self.ends[-1]), (1,), generator=g))
            n = int(np.searchsorted(self.ends, r, side="right"))
            image, target, annotated = self._image(n)
            h, w = target.shape
            y, x = divmod(int(annotated[r - (self.ends[n - 1] if n else 0)]), w)
        p = self.patch
        y0 = int(np.clip(y - torch.randint(p, (1,), generator=g).item(), 0, h - p))
        x0 = int(np.clip(x - torch.randint(p, (1,), generator=g).item(), 0, w - p))
        # The patch is cut, turned and flipped as numpy views of the (H, W, C) image and copied
        # once; the (C, p, p) patch is a channels-last view of that copy, so that its batch
        # (``_batch``) is channels-last too and the convolutions run NHWC without a transposing
        # copy (torch's rot90 and flip copied the patch twice, and the batch was made NCHW).
        img = image.numpy()[y0 : y0 + p, x0 : x0 + p]
        tgt = target.numpy()[y0 : y0 + p, x0 : x0 + p]
        k = int(torch.randint(4, (1,), generator=g))
        img, tgt = np.rot90(img, k), np.rot90(tgt, k)
        if torch.rand(1, generator=g) < 0.5:
            img, tgt = img[:, ::-1], tgt[:, ::-1]
        patch = torch.from_numpy(np.ascontiguousarray(img, np.float32)).permute(2, 0, 1)
        return patch, torch.from_numpy(tgt.astype(np.int64))


def _batch(
    samples: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches stacked into a channels-last (B, C, p, p) batch (as they are laid out) and targets."""
    images, targets = zip(*samples, strict=True)
    stacked = torch.stack([i.permute(1, 2, 0) for i in images]).permute(0, 3, 1, 2)
    return stacked, torch.stack(targets)


class _Tensors(Sequence):
    """(H, W, C) images and (H, W) targets, read on demand, as (C, H, W) float32 / int16 tensors
    (class indices fit int16; a cached image's target costs 2 bytes a pixel)."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.pairs[n]
        return (
            torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1),  # a view, no copy
            torch.from_numpy(np.asarray(target, np.int16)),
        )


def _pad_to(
    image: torch.Tensor, target: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge-pad a (C, H, W) image smaller than one patch (its target padded with PAD)."""
    h, w = image.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = F.pad(image.float()[None], (0, pw, 0, ph), mode="replicate")[0]
        target = F.pad(target, (0, pw, 0, ph), value=PAD)
    return image, target


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, loss: str = "ce", temperature: float = 0.04
) -> torch.Tensor:
    """K-way cross-entropy over the annotated pixels only. ``logitnorm`` (Wei et al., 2022) first
    divides each pixel's logit vector by temperature x its L2 norm, so training cannot lower the loss
    by inflating logits, which keeps OOD pixels' logits small."""
    if loss == "logitnorm":
        logits = logits / (temperature * (logits.norm(dim=1, keepdim=True) + 1e-7))
    return F.cross_entropy(logits, target.clamp_min(IGNORE), ignore_index=IGNORE)


def nnpu_risk(
    known: torch.Tensor,
    target: torch.Tensor,
    prior: float,
    *,
    beta: float = 0.0,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-negative PU risk (Kiryo, Niu, du Plessis, Sugiyama, NeurIPS 2017) of per-pixel
    known-vs-unknown logits ``known``: annotated pixels (``target`` >= 0) are the positives, the
    unlabelled ones (``IGNORE``) a mixture with a share ``prior`` of positives; padding (``PAD``)
    is left out. With the sigmoid loss l(z) = sigmoid(-z): risk = prior * R_p(+) + max(0, R_u(-)
    - prior * R_p(-)). Returns (the loss to minimise, the risk): where the negative part falls
    below -beta, the loss is -gamma times it, which pushes it back up (the paper's defitting
    step)."""
    g = known.flatten()
    t = target.flatten()
    gp, gu = g[t >= 0], g[t == IGNORE]
    if not len(gp) or not len(gu):
        zero = g.sum() * 0.0
        return zero, zero.detach()
    positive = torch.sigmoid(-gp).mean()
    negative = torch.sigmoid(gu).mean() - prior * torch.sigmoid(gp).mean()
    risk = prior * positive + negative.clamp_min(0)
    loss = -gamma * negative if negative < -beta else prior * positive + negative
    return loss, risk.detach()


class SparseSegmentation(L.LightningModule):
    """Lightning wrapper: the training step of the method."""

    def __init__(self, net: Segmenter, config: TrainConfig):
        super().__init__()
        self.net, self.config = net, config

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        image, target = batch
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        logits, features = self.net(image)
        loss = segmentation_loss(
            logits, target, self.config.loss, self.config.logitnorm_temperature
        )
        n = len(image)
        if self.config.known_head:
            pu_loss, risk = nnpu_risk(self.net.known_head(features), target, self.config.pu_prior)
            self.log("pu_risk", risk, prog_bar=True, on_step=False, on_epoch=True, batch_size=n)
            loss = loss + self.config.pu_weight * pu_loss
        self.log(
            "loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=n, sync_dist=True
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
    images: Sequence[tuple[np.ndarray, np.ndarray]],
    config: TrainConfig,
    *,
    patch: int,
    counts: Sequence[int] | None = None,
    areas: Sequence[int] | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    resume: bool = False,
) -> Segmenter:
    """Train ``net`` on (normalised (H, W, C) image, (H, W) target) pairs of any sizes, targets
    holding class indices 0..K-1 at the annotated pixels and ``IGNORE`` elsewhere, on square
    patches of side ``patch``. ``images`` may read each pair from disk when indexed (see
    :class:`PatchDataset`; ``counts``: annotated pixels per image, to spare a first pass;
    ``areas``: pixels per image, where uniform patches feed a known-vs-unknown head).
    Seeded: the same call gives the same weights. A checkpoint is written to
    ``checkpoint_dir/last.ckpt`` after every epoch; ``resume`` continues from it (an interrupted
    run then ends with the same weights as an uninterrupted one: patches are drawn from a
    generator seeded by seed, epoch and index, not from a global state). With
    ``unlabelled="auto"``, a network built with the known-vs-unknown head trains it by nnPU."""
    if config.unlabelled == "auto":  # the network says: built with the PU head or not
        config = replace(config, unlabelled="nnpu" if net.known_head is not None else "ignore")
    L.seed_everything(config.seed, workers=True, verbose=False)
    reuse_freed_memory()
    data = PatchDataset(
        _Tensors(images),
        patch,
        config.patches_per_epoch,
        config.seed,
        counts=counts,
        uniform=PU_UNIFORM_SHARE if config.known_head else 0.0,
        areas=areas,
    )
    callbacks: list[L.Callback] = []
    if progress:
        callbacks.append(RichProgressBar(leave=False))
    if checkpoint_dir is not None:
        # No monitored metric: the one checkpoint kept is the latest, rewritten every epoch.
        callbacks.append(
            _AtomicCheckpoint(
                dirpath=checkpoint_dir, filename="last", save_top_k=1, every_n_epochs=1
            )
        )
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    module = SparseSegmentation(net, config)
    loader = DataLoader(
        data, batch_size=config.batch_size, shuffle=False, num_workers=0, collate_fn=_batch
    )
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
        try:
            trainer.fit(module, loader, ckpt_path=last if resume and last.is_file() else None)
        finally:
            # Lightning's trainer, module and loader hold one another, so they (and the cached
            # training images) would wait for the cycle collector: up to the cache's size held
            # through the scoring that follows.
            data.release()
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
