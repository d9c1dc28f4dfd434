"""The front door: one `load_source(spec)` for built-in datasets, class folders, CSV files and CIFAR dirs."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .cache import describe_skipped, load_or_decode
from .cifar import find_cifar_dir, load_cifar10, read_cifar_dir
from .class_map import check_names, load_class_map, remap_source
from .csv_table import list_csv
from .dataset import ImageSet, Source
from .digits import load_digits_source
from .folder import Listing, list_class_folders
from .hf import is_hf_spec
from .idx import load_fashion_mnist

log = logging.getLogger(__name__)

BUILTIN = ("digits", "fashion-mnist", "cifar10")
FILE_IMAGE_SIZE = 64  # folder/CSV images come in any size; one is needed for one tensor
_CHUNK = 4096  # images per tensor op when converting array datasets, to bound memory


def load_data(cfg: Any) -> Source:
    """The source a run config names (its data, data_dir, image_size, grayscale, class_map, strict), decoded once
    per process: a study's runs, its report and a re-evaluation share the same in-memory source."""
    args = (cfg.data, cfg.data_dir, cfg.image_size, cfg.grayscale, cfg.class_map, cfg.strict, cfg.image_column,
            cfg.label_column)
    if cfg.curation:
        from .curation import read_curation

        return _curated_source(args, read_curation(cfg.curation))
    return _cached_source(*args)


@lru_cache(maxsize=2)
def _curated_source(args: tuple, curation) -> Source:
    """The decoded source with a curation applied: the data as given and as curated share one decoding."""
    from .curation import apply_curation

    return apply_curation(_cached_source(*args), curation)


@lru_cache(maxsize=4)
def _cached_source(spec: str, data_dir: str | None, image_size: int | None, grayscale: bool | None,
                   class_map: str | None, strict: bool, image_column: str | None = None,
                   label_column: str | None = None) -> Source:
    return load_source(spec, data_dir=Path(data_dir) if data_dir else None, image_size=image_size,
                       grayscale=grayscale, class_map=Path(class_map) if class_map else None, strict=strict,
                       image_column=image_column, label_column=label_column)


def load_source(spec: str, *, data_dir: Path | None = None, image_size: int | None = None,
                grayscale: bool | None = None, class_map: Path | None = None, strict: bool = False,
                cache_dir: Path | None = None, download: bool = True, image_column: str | None = None,
                label_column: str | None = None) -> Source:
    """Load a dataset as uint8 tensors of one size.

    spec: digits | fashion-mnist | cifar10 | a class-per-subfolder directory | a .csv of path,label
    | a cifar-10-batches-py directory | a Hugging Face dataset (hf:NAME[:CONFIG], a save_to_disk folder, a folder
    of Parquet files; image_column/label_column name its columns when they cannot be found from its features).
    image_size: side of the square images; None keeps built-ins native and gives files 64.
    grayscale: True → 1 channel, False → 3, None → 1 only when every image is single-channel.
    class_map: YAML/JSON file renaming or merging classes.
    strict: unreadable files are an error instead of a warning.
    cache_dir: where decoded files are cached (default $CNNARENA_CACHE or ~/.cache/cnnarena/images).
    download: fetch a missing built-in dataset into ~/.cache/cnnarena.
    """
    if image_size is not None and image_size < 1:
        raise UserError(f"image size must be a positive number of pixels, got {image_size}")
    mapping = load_class_map(class_map) if class_map is not None else None
    path = Path(spec).expanduser()
    if spec == "digits":
        source = load_digits_source()
    elif spec == "fashion-mnist":
        source = load_fashion_mnist(data_dir, download)
    elif spec == "cifar10":
        source = load_cifar10(data_dir, download)
    elif is_hf_spec(spec):
        from .hf import load_hf_source

        source = load_hf_source(spec, image_size=image_size or FILE_IMAGE_SIZE, grayscale=grayscale,
                                image_column=image_column, label_column=label_column, cache_dir=cache_dir,
                                strict=strict)
        if mapping:
            source = remap_source(source, mapping)
        return source
    elif path.is_dir() and (cifar_dir := find_cifar_dir(path)) is not None:
        source = read_cifar_dir(cifar_dir)
    elif path.is_dir():
        return _files_source(path.name, list_class_folders(path), mapping, image_size, grayscale, strict, cache_dir)
    elif path.is_file() and path.suffix.lower() == ".csv":
        return _files_source(path.stem, list_csv(path), mapping, image_size, grayscale, strict, cache_dir,
                             one_class_hint="the CSV's label column has one value")
    else:
        raise UserError(f"unknown dataset {spec!r}: expected {', '.join(BUILTIN)}, a class-folder directory, "
                        "a CSV file, a cifar-10-batches-py directory or a Hugging Face dataset (hf:NAME)")
    if mapping:
        source = remap_source(source, mapping)
    return _adapt(source, image_size, grayscale)


def file_listing(spec: str) -> Listing | None:
    """The image files of a class-folder directory or a CSV file (None for built-in, CIFAR and Hugging Face data:
    their images come in one size)."""
    path = Path(spec).expanduser()
    if spec in BUILTIN or is_hf_spec(spec):
        return None
    if path.is_dir() and find_cifar_dir(path) is None:
        return list_class_folders(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return list_csv(path)
    return None


def _files_source(name: str, listing: Listing, mapping: dict[str, str] | None, image_size: int | None,
                  grayscale: bool | None, strict: bool, cache_dir: Path | None, *,
                  one_class_hint: str = "point at the folder whose subfolders are the classes") -> Source:
    labels = listing.labels
    if mapping:
        check_names(mapping, sorted(set(labels)))
        labels = [mapping.get(label, label) for label in labels]
    classes = sorted(set(labels))
    if len(classes) < 2:  # checked before decoding: no point decoding a dataset that cannot be used
        raise UserError(f"only one class ({classes[0]!r}) in {listing.root}: a classifier needs at least two "
                        f"({one_class_hint})")
    decoded = load_or_decode(listing.root, listing.ids, labels, image_size=image_size or FILE_IMAGE_SIZE,
                             grayscale=grayscale, class_map=mapping, cache_dir=cache_dir)
    skipped = listing.skipped + decoded.skipped
    if skipped and strict:
        raise UserError(f"{len(skipped)} unreadable file{'s' * (len(skipped) > 1)} in {listing.root} "
                        f"(--strict): {describe_skipped(skipped)}")
    lost = sorted(set(classes) - set(decoded.labels))
    if lost:
        raise UserError(f"class{'es' * (len(lost) > 1)} {', '.join(map(repr, lost))} in {listing.root} "
                        f"{'have' if len(lost) > 1 else 'has'} no readable images: {describe_skipped(skipped)}")
    if skipped:
        log.warning(f"warning: skipped {len(skipped)} unreadable file{'s' * (len(skipped) > 1)} "
                    f"(see `inspect` for the list): {describe_skipped(skipped)}")
    _, index = np.unique(np.asarray(decoded.labels), return_inverse=True)  # sorted like `classes`
    pool = ImageSet(torch.from_numpy(decoded.images), torch.from_numpy(index.astype(np.int64)), classes,
                    decoded.ids)
    return Source(name, pool, None, skipped, decoded.original_sizes, listing.root)


def _adapt(source: Source, image_size: int | None, grayscale: bool | None) -> Source:
    """Array datasets to the requested channels and size (None: leave as they are)."""

    def convert(s: ImageSet) -> ImageSet:
        images = s.images
        if grayscale and images.shape[1] == 3:
            images = _chunked(images, _luma)
        if image_size is not None and tuple(images.shape[2:]) != (image_size, image_size):
            images = _chunked(images, lambda x: _resize(x, image_size))
        if grayscale is False and images.shape[1] == 1:  # last: resizing one channel is 3× cheaper
            images = images.expand(-1, 3, -1, -1).contiguous()
        return s if images is s.images else ImageSet(images, s.labels, s.classes, s.ids)

    test = convert(source.test) if source.test is not None else None
    val = convert(source.val) if source.val is not None else None
    return Source(source.name, convert(source.pool), test, source.skipped, source.original_sizes, source.root, val)


def _chunked(images: torch.Tensor, fn) -> torch.Tensor:
    return torch.cat([fn(images[i:i + _CHUNK].float()).round_().clamp_(0, 255).to(torch.uint8)
                      for i in range(0, len(images), _CHUNK)])


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, the weights PIL's convert('L') uses, so files and arrays agree."""
    return (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
