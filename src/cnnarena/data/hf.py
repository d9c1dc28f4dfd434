"""Hugging Face datasets as a source: `hf:NAME[:CONFIG]` (the hub when online, its local cache otherwise, or
`hf:PATH` to a local dataset folder), a folder written by `Dataset.save_to_disk`, or a folder of Parquet files.

The image column (a `datasets.Image` feature) and the label column (a `ClassLabel`, else any column of names or
numbers) are found from the features unless named. The dataset's own splits are kept: train is the pool, test
the official test split, and validation the official validation split beside test (or the test split when there
is no test). Images are decoded once, as folder images are (the same decoder, size and channel rules), into
cnnarena's cache under a key made of each split's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .cache import decode_into_cache, describe_skipped, image_cache_dir, read_entry
from .dataset import ImageSet, Source

log = logging.getLogger(__name__)

PREFIX = "hf:"
CACHE_VERSION = 2  # 2: a split of single-channel images is stored with one channel
VALIDATION_NAMES = ("validation", "valid", "val", "dev")


def is_hf_spec(spec: str) -> bool:
    """hf:..., a save_to_disk folder, or a folder holding Parquet files (and no class folders of images)."""
    if spec.startswith(PREFIX):
        return True
    path = Path(spec).expanduser()
    if not path.is_dir():
        return False
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return True
    return any(path.glob("*.parquet")) or any(path.glob("data/*.parquet"))


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UserError("Hugging Face datasets need the datasets package: pip install 'cnnarena[hf]' "
                        "(or pip install datasets)") from None
    return datasets


def open_dataset(spec: str):
    """The DatasetDict (or Dataset) a spec names."""
    datasets = _datasets()
    if spec.startswith(PREFIX):
        name, _, config = spec[len(PREFIX):].partition(":")
        if not name:
            raise UserError("hf: needs a dataset name, e.g. hf:beans or hf:cifar10 or hf:user/name:config")
        if Path(name).expanduser().is_dir() and not config:
            return open_dataset(str(Path(name).expanduser()))
        try:
            return datasets.load_dataset(name, config or None)
        except Exception as e:  # offline without a cached copy, a typo, a private dataset: one line
            raise UserError(f"cannot load Hugging Face dataset {name!r}{f' ({config})' if config else ''}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (offline, only a "
                            "dataset in the local cache loads; HF_HUB_OFFLINE=1 skips the network)") from None
    path = Path(spec).expanduser()
    try:
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path))  # the Parquet builder, splits from the file names
    except Exception as e:
        if path.is_dir() and not any(path.rglob("*.arrow")) and not any(path.rglob("*.parquet")):
            raise UserError(f"the Hugging Face dataset in {path} holds no images: every split is empty") from None
        raise UserError(f"cannot read the Hugging Face dataset in {path}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None


def find_columns(features, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    datasets = _datasets()
    names = list(features)

    def check(column: str, what: str) -> str:
        if column not in features:
            raise UserError(f"no {what} column {column!r}: the dataset has {', '.join(names)}")
        return column

    if image_column is not None:
        image = check(image_column, "image")
    else:
        found = [n for n, f in features.items() if isinstance(f, datasets.Image)]
        if not found:
            raise UserError(f"no image column (a datasets.Image feature) among {', '.join(names)}: "
                            "name it with --image-column")
        image = found[0]
    if not isinstance(features[image], datasets.Image):
        raise UserError(f"column {image!r} holds {type(features[image]).__name__} values, not images: name the "
                        "image column with --image-column")
    if label_column is not None:
        label = check(label_column, "label")
        if label == image:
            raise UserError(f"--label-column {label!r} is the image column: name another column")
        if not isinstance(features[label], datasets.ClassLabel | datasets.Value) or \
                str(getattr(features[label], "dtype", "int64")).startswith(("float", "binary", "large_binary")):
            raise UserError(f"column {label!r} cannot be a label: it holds {features[label]}; give a column of "
                            "class names or class numbers with --label-column")
        return image, label
    labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if not labels:
        labels = [n for n in ("label", "labels", "class", "category", "target") if n in features]
    if not labels:
        raise UserError(f"no label column (a ClassLabel feature, or one named label) among {', '.join(names)}: "
                        "name it with --label-column")
    return image, labels[0]


def _class_names(splits: dict[str, Any], label: str) -> list[str] | None:
    """A ClassLabel's names (in its order), or None for plain values."""
    datasets = _datasets()
    feature = next(iter(splits.values())).features[label]
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _cache_key(fingerprint: str, image: str, label: str, size: int, grayscale: bool | None) -> str:
    payload = {"version": CACHE_VERSION, "fingerprint": fingerprint, "image": image, "label": label, "size": size,
               "grayscale": grayscale}
    return "hf-" + hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]


def _decode_split(ds, image: str, label: str, size: int, grayscale: bool | None, directory: Path, split: str,
                  where: str):
    """(uint8 N×C×S×S memory map, metadata: raw labels, ids, skipped, original sizes, single-channel flags), from the
    cache when this split was decoded before; decoded as folders are (cache.decode_into_cache), the rows' encoded
    bytes read a chunk at a time."""
    key = _cache_key(ds._fingerprint, image, label, size, grayscale)
    cached = read_entry(directory, key)
    if cached is None:
        raw = ds.select_columns([image, label]).cast_column(image, _datasets().Image(decode=False))

        def encoded(start: int, stop: int) -> list:
            values = raw[start:stop][image]  # {"bytes", "path"} per row: encoded, not decoded
            return [None if not v else v["bytes"] if v.get("bytes") is not None else v.get("path") for v in values]

        labels = raw.select_columns([label])[:][label]  # one list: indexing a column reads a row at a time
        decode_into_cache(directory, key, [f"{split}/{i}" for i in range(len(raw))], labels, encoded,
                          image_size=size, grayscale=grayscale, where=f"{where}'s {split} split")
        cached = read_entry(directory, key)
    assert cached is not None, key
    return cached


def _labelled(decoded: dict[str, tuple[Any, dict]], names: list[str] | None, spec: str) -> dict[str, tuple]:
    """The rows that have a label: a ClassLabel's -1 (and a missing value) means "no label" (a competition's test
    split), not a class named -1. A split with no labelled row is left out; the training split must have some."""
    out = {}
    for part, (pixels, meta) in decoded.items():
        keep = [i for i, v in enumerate(meta["labels"]) if v is not None and not (names is not None and v == -1)]
        if len(keep) == len(meta["labels"]):
            out[part] = (pixels, meta)
            continue
        what = {"pool": "training", "test": "test", "val": "validation"}[part]
        if not keep:
            if part == "pool":
                raise UserError(f"{spec}: no image of its {what} split has a label (all are -1 or empty)")
            log.warning(f"warning: {spec}'s {what} split has no labels (-1): left out")
            continue
        log.warning(f"warning: {len(meta['labels']) - len(keep)} image(s) of {spec}'s {what} split have no label "
                    "(-1): left out")
        chosen = {k: [v[i] for i in keep] for k, v in meta.items() if k in ("labels", "ids", "original_sizes",
                                                                             "single")}
        out[part] = (pixels[keep], {**meta, **chosen})
    return out


def load_hf_source(spec: str, *, image_size: int, grayscale: bool | None, image_column: str | None = None,
                   label_column: str | None = None, cache_dir: Path | None = None, strict: bool = False) -> Source:
    opened = open_dataset(spec)
    splits = dict(opened) if hasattr(opened, "keys") else {"train": opened}
    splits = {name: split for name, split in splits.items() if len(split)}  # an empty split is no split
    if not splits:
        raise UserError(f"{spec} holds no images")
    train_name = "train" if "train" in splits else next(iter(splits))
    test_name = "test" if "test" in splits else None
    val_name = next((n for n in VALIDATION_NAMES if n in splits), None)
    if test_name is None and val_name is not None:  # train + validation only: validation is what is held out
        test_name, val_name = val_name, None
    chosen = {"pool": train_name, "test": test_name, "val": val_name}
    image, label = find_columns(splits[train_name].features, image_column, label_column)
    names = _class_names(splits, label)
    directory = image_cache_dir(cache_dir)
    decoded = _labelled({part: _decode_split(splits[name], image, label, image_size, grayscale, directory, name,
                                             spec) for part, name in chosen.items() if name is not None}, names, spec)
    raw_labels = [v for _, meta in decoded.values() for v in meta["labels"]]
    if names is not None:
        to_name = [names[v] if isinstance(v, int) and 0 <= v < len(names) else str(v) for v in raw_labels]
    else:
        to_name = [str(v) for v in raw_labels]
    classes = sorted(set(to_name), key=lambda c: (names.index(c) if names and c in names else len(names or []), c))
    if len(classes) < 2:
        raise UserError(f"only one class in {spec}'s column {label!r}: a classifier needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    # as one folder: one channel only when every image of every split is single-channel
    channels = 1 if grayscale or (grayscale is None and all(all(m["single"]) for _, m in decoded.values())) else 3
    sets, start, skipped, sizes = {}, 0, [], []
    for part, (pixels, meta) in decoded.items():
        n = len(meta["ids"])
        part_labels = torch.tensor([index[c] for c in to_name[start:start + n]], dtype=torch.long)
        start += n
        tensor = torch.from_numpy(pixels)  # the cache's memory map: nothing read until used
        if tensor.shape[1] != channels:  # a gray split beside colour ones: its gray copied into R, G and B
            tensor = tensor.expand(-1, channels, -1, -1).contiguous()
        sets[part] = ImageSet(tensor, part_labels, classes, meta["ids"])
        skipped += [tuple(s) for s in meta["skipped"]]
        sizes += [tuple(s) for s in meta["original_sizes"]]
    if skipped and strict:
        raise UserError(f"{len(skipped)} unreadable image{'s' * (len(skipped) > 1)} in {spec} (--strict): "
                        f"{describe_skipped(skipped)}")
    if skipped:
        log.warning(f"warning: skipped {len(skipped)} undecodable image(s) in {spec} (first: {skipped[0][0]}, "
                    f"{skipped[0][1]})")
    log.info(f"{spec}: splits {', '.join(f'{n} -> {p}' for p, n in chosen.items() if n)}; image column {image!r}, "
             f"label column {label!r}")
    name = spec[len(PREFIX):] if spec.startswith(PREFIX) else Path(spec).name
    return Source(name.replace("/", "_").replace(":", "_"), sets["pool"], sets.get("test"), skipped, sizes,
                  None, sets.get("val"))
