"""Reading users' images and sparse masks, and writing outputs atomically.

Images come as (H, W, C) arrays from ENVI (memory-mapped through ``spectral``), MATLAB v5 (scipy)
and v7.3 (h5py), NumPy ``.npy`` / ``.npz``, multi-page or multi-channel TIFF (tifffile), PNG / JPEG
(Pillow) and HDF5. Every error names the file and the problem.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (
    ".hdr",
    ".mat",
    ".npy",
    ".npz",
    ".tif",
    ".tiff",
    ".png",
    ".jpg",
    ".jpeg",
    ".h5",
    ".hdf5",
)
NAN_POLICIES = ("error", "zero")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image(path: str | Path, variable: str | None = None) -> np.ndarray:
    """An (H, W, C) image; a 2-D image gets one channel. ``variable`` names the array inside a
    ``.mat`` / ``.npz`` / HDF5 file (default: the only, or else the largest, 2-D or 3-D array).
    A PNG or JPEG is read as a viewer shows it (see :func:`read_array` with ``colour``)."""
    array = read_array(Path(path), variable, colour=True)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D or 3-D image, got shape {array.shape}")
    return array


def read_mask(path: str | Path, variable: str | None = None) -> np.ndarray:
    """An (H, W) integer label map (a mask saved with three identical channels is accepted)."""
    array = read_array(Path(path), variable)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if (array[..., :3] != array[..., :1]).any():
            raise ValueError(f"{path}: a mask's colour channels must be identical class ids")
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D label mask, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{path}: mask values must be whole class numbers")
    return np.asarray(array).astype(np.int64)


def check_nan_policy(policy: str) -> str:
    if policy not in NAN_POLICIES:
        raise ValueError(f"unknown NaN policy {policy!r}; choose one of: {', '.join(NAN_POLICIES)}")
    return policy


def check_finite(image: np.ndarray, path: str | Path, policy: str = "error") -> np.ndarray:
    """Refuse NaN / Inf values (``policy="error"``) or replace them by 0 (``"zero"``)."""
    check_nan_policy(policy)
    if not np.issubdtype(image.dtype, np.floating):
        return image
    bad = ~np.isfinite(image)
    if not bad.any():
        return image
    if policy == "error":
        raise ValueError(
            f"{path}: {int(bad.sum())} NaN or Inf values (pass --nan-policy zero to set them to 0)"
        )
    return np.where(bad, 0, image).astype(image.dtype)


def read_array(path: Path, variable: str | None = None, *, colour: bool = False) -> np.ndarray:
    """The array stored in a file of any supported format (errors name the file). A PNG or JPEG
    is turned as its EXIF orientation says (as viewers, and annotation tools, show it) and loses
    its alpha channel; with ``colour`` (an image, or a colour mask) a palette ("P" mode) PNG gives
    its colours and a bilevel one 0 / 255, else (an index mask) its indices and 0 / 1."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    suffix = path.suffix.lower()
    reader = (
        functools.partial(_pillow, colour=True)
        if colour and suffix in PIL_SUFFIXES
        else _READERS.get(suffix)
    )
    if reader is None:
        raise ValueError(
            f"{path}: unsupported file type {suffix!r}; use one of: {', '.join(IMAGE_SUFFIXES)}"
        )
    try:
        return reader(path, variable)
    except (ValueError, FileNotFoundError) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read it: {e}") from None
    except (OSError, EOFError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{path}: cannot read it (corrupt or truncated?): {e}") from None


def _pick(arrays: dict[str, np.ndarray], path: Path, variable: str | None) -> np.ndarray:
    """The array named ``variable``, or the only / largest 2-D or 3-D numeric one."""
    if variable is not None:
        if variable not in arrays:
            raise ValueError(f"{path}: no variable {variable!r}; it holds {', '.join(arrays)}")
        return arrays[variable]
    images = {k: v for k, v in arrays.items() if v.ndim in (2, 3) and v.dtype.kind in "biuf"}
    if not images:
        raise ValueError(f"{path}: no 2-D or 3-D numeric array in it")
    return max(images.values(), key=lambda a: a.size)


def _npy(path: Path, _: str | None) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _npz(path: Path, variable: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        return _pick({k: z[k] for k in z.files}, path, variable)


def _mat(path: Path, variable: str | None) -> np.ndarray:
    import h5py
    import scipy.io

    if h5py.is_hdf5(path):  # MATLAB v7.3: HDF5 storing arrays transposed (column-major)
        return np.ascontiguousarray(_hdf5(path, variable).T)
    data = scipy.io.loadmat(path)
    return _pick({k: v for k, v in data.items() if not k.startswith("__")}, path, variable)


def _hdf5(path: Path, variable: str | None) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        arrays: dict[str, h5py.Dataset] = {}
        f.visititems(
            lambda name, obj: arrays.update({name: obj}) if isinstance(obj, h5py.Dataset) else None
        )
        if variable is not None:
            if variable not in arrays:
                raise ValueError(f"{path}: no dataset {variable!r}; it holds {', '.join(arrays)}")
            dataset = arrays[variable]
        else:
            images = {
                k: d for k, d in arrays.items() if d.ndim in (2, 3) and d.dtype.kind in "biuf"
            }
            if not images:
                raise ValueError(f"{path}: no 2-D or 3-D numeric dataset in it")
            dataset = max(images.values(), key=lambda d: d.size)
        # An uncompressed, unchunked dataset is memory-mapped (a large cube is not read whole).
        offset = dataset.id.get_offset()
        if dataset.chunks is None and offset is not None:
            return np.memmap(path, dataset.dtype, "r", offset, dataset.shape)
        return dataset[()]


def _tiff(path: Path, _: str | None) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = len(tif.pages)
        try:  # uncompressed, contiguous TIFFs are memory-mapped
            array = tifffile.memmap(path, mode="r")
        except ValueError:
            array = tif.asarray()
    # Several pages are bands: (C, H, W) -> (H, W, C); one page keeps its own (H, W[, C]) layout.
    return np.moveaxis(array, 0, -1) if pages > 1 and array.ndim == 3 else array


def _pillow(path: Path, _: str | None, *, colour: bool = False) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode == "1" and not colour:
            return np.asarray(im).astype(np.uint8)  # a bilevel mask: classes 0 and 1
        modes = {"1": "L", "LA": "L", "RGBA": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}
        if colour:
            modes |= {"P": "RGB", "PA": "RGB"}
        return np.asarray(im.convert(modes[im.mode]) if im.mode in modes else im)


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def is_colour_photo(path: Path) -> bool:
    """Whether a PNG / JPEG file holds a colour picture, from its header alone (no decoding)."""
    if path.suffix.lower() not in PIL_SUFFIXES:
        return False
    with Image.open(path) as im:
        return im.mode not in GREY_MODES


def _envi(path: Path, _: str | None) -> np.ndarray:
    import spectral

    try:
        return spectral.open_image(str(path)).open_memmap(writable=False)
    except spectral.io.spyfile.FileNotFoundError as e:
        raise FileNotFoundError(
            f"{path}: ENVI data file not found beside the header: {e}"
        ) from None


_READERS: dict[str, Callable[[Path, str | None], np.ndarray]] = {
    ".npy": _npy,
    ".npz": _npz,
    ".mat": _mat,
    ".h5": _hdf5,
    ".hdf5": _hdf5,
    ".tif": _tiff,
    ".tiff": _tiff,
    **dict.fromkeys(PIL_SUFFIXES, _pillow),
    ".hdr": _envi,
}


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` only if the block ends
    without an error, so a crash never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_folder(out: str | Path, write: Callable[[Path], object]) -> None:
    """Run ``write(tmp)`` into a sibling temporary folder that replaces ``out`` only when it
    returns, so a crash never leaves a half-written folder."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
