"""load_source on real files written here: messy class folders, CSV, CIFAR pickles, idx, downloads."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnarena import runtime
from cnnarena.data import cifar, idx, imageio
from cnnarena.data.sources import load_source
from cnnarena.errors import UserError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def save(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def noise_jpeg(seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=95)
    return out.getvalue()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "images"  # where $CNNARENA_CACHE=tmp_path/cache keeps decoded images


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A class folder with every trap a downloaded dataset has."""
    root = tmp_path / "messy"
    glass, paper = root / "glass bottle", root / "paper"
    save(glass / "red.JPG", Image.new("RGB", (40, 30), RED), quality=95)
    save(glass / "nested" / "deeper" / "blue.png", Image.new("RGB", (8, 8), BLUE))
    save(glass / "gray.bmp", Image.new("L", (9, 7), 100))
    save(glass / "clear.png", Image.new("RGBA", (8, 8), (255, 0, 0, 0)))  # fully transparent red
    save(glass / "cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), quality=95)  # red in ink
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 255, 0] + [255, 0, 0] * 255)
    save(paper / "pal.gif", palette, transparency=1)  # every pixel is the transparent index
    save(paper / "sixteen.png", Image.fromarray(np.full((6, 6), 0x8080, np.uint16)))  # 16-bit mid gray
    save(paper / "bits.tiff", Image.new("1", (8, 8), 1))
    save(paper / "photo.WebP", Image.new("RGB", (8, 8), BLUE))
    rotated = Image.new("RGB", (20, 10), RED)
    rotated.paste(BLUE, (10, 0, 20, 10))  # stored: left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: top red, bottom blue
    save(paper / "rotated.jpeg", rotated, exif=exif.tobytes(), quality=95)
    write(paper / "empty.jpg", b"")
    write(paper / "cut.jpg", noise_jpeg()[:3000])
    write(paper / "notes.jpg", b"not an image, just text\n" * 10)
    write(paper / "readme.txt", b"ignored: not an image name")
    for junk in (paper / ".hidden.jpg", paper / "._rotated.jpeg", paper / ".ipynb_checkpoints" / "x.png",
                 root / "__MACOSX" / "paper" / "x.png", root / ".git" / "y.png"):
        save(junk, Image.new("RGB", (8, 8), RED))
    write(root / ".DS_Store", b"\0\0")
    write(paper / "Thumbs.db", b"\0\0")
    return root


MESSY_IDS = {
    "glass bottle/red.JPG", "glass bottle/nested/deeper/blue.png", "glass bottle/gray.bmp",
    "glass bottle/clear.png", "glass bottle/cmyk.jpg", "paper/pal.gif", "paper/sixteen.png",
    "paper/bits.tiff", "paper/photo.WebP", "paper/rotated.jpeg",
}
MESSY_SKIPPED = {("paper/empty.jpg", "empty file"), ("paper/cut.jpg", "truncated"), ("paper/notes.jpg", "not an image")}


def pixel(source, sample_id: str, y: int = 4, x: int = 4) -> tuple[int, ...]:
    i = source.pool.ids.index(sample_id)
    return tuple(int(v) for v in source.pool.images[i, :, y, x])


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(p - q) <= tol for p, q in zip(a, b, strict=True))


def test_messy_folder_decodes_every_format_and_skips_bad_files(messy: Path, cache: Path, capsys) -> None:
    with runtime.using(console=True):  # the warning goes to the log; on stderr as the CLI shows it
        source = load_source(str(messy), image_size=16, cache_dir=cache)
    assert source.name == "messy" and source.test is None
    assert source.classes == ["glass bottle", "paper"]
    assert set(source.pool.ids) == MESSY_IDS and len(source.pool.ids) == len(MESSY_IDS)
    assert tuple(source.pool.images.shape) == (10, 3, 16, 16) and source.pool.images.dtype == torch.uint8
    assert source.pool.class_counts() == [5, 5]
    assert source.pool.labels[source.pool.ids.index("paper/pal.gif")] == 1
    assert set(source.skipped) == MESSY_SKIPPED
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: skipped 3 unreadable files (see `inspect`")
    assert all(f"{path} ({reason})" in warning[0] for path, reason in MESSY_SKIPPED)

    assert close(pixel(source, "glass bottle/red.JPG"), RED)
    assert close(pixel(source, "glass bottle/cmyk.jpg"), RED)
    assert pixel(source, "glass bottle/clear.png") == WHITE  # alpha composited on white
    assert pixel(source, "paper/pal.gif") == WHITE  # palette transparency too
    assert pixel(source, "glass bottle/gray.bmp") == (100, 100, 100)  # gray replicated into RGB
    assert pixel(source, "paper/sixteen.png") == (128, 128, 128)  # 0x8080 scaled, not clipped to 255
    assert pixel(source, "paper/bits.tiff") == WHITE
    assert close(pixel(source, "paper/photo.WebP"), BLUE)
    # EXIF orientation honoured: the stored left (red) half is shown on top.
    assert close(pixel(source, "paper/rotated.jpeg", 2, 8), RED, 40)
    assert close(pixel(source, "paper/rotated.jpeg", 13, 8), BLUE, 40)

    sizes = dict(zip(source.pool.ids, source.original_sizes, strict=True))
    assert sizes["glass bottle/red.JPG"] == (30, 40) and sizes["paper/rotated.jpeg"] == (20, 10)
    assert sizes["glass bottle/gray.bmp"] == (7, 9)


def test_default_size_is_64_and_grayscale_modes(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "gray"
    save(root / "a" / "l.png", Image.new("L", (30, 20), 50))
    save(root / "a" / "bits.bmp", Image.new("1", (5, 5), 0))
    save(root / "b" / "sixteen.tif", Image.fromarray(np.full((4, 4), 1000, np.uint16)))
    auto = load_source(str(root), cache_dir=cache)
    assert tuple(auto.pool.images.shape) == (3, 1, 64, 64)  # every file single-channel: L
    assert auto.pool.images[auto.pool.ids.index("b/sixteen.tif")].max() == 4  # 1000/257, not clipped to 255
    forced = load_source(str(root), cache_dir=cache, grayscale=False, image_size=8)
    assert tuple(forced.pool.images.shape) == (3, 3, 8, 8)

    save(root / "b" / "red.png", Image.new("RGB", (8, 8), RED))
    assert load_source(str(root), cache_dir=cache, image_size=8).pool.channels == 3  # one color file: RGB
    gray = load_source(str(root), cache_dir=cache, image_size=8, grayscale=True)
    assert gray.pool.channels == 1
    assert int(gray.pool.images[gray.pool.ids.index("b/red.png"), 0, 4, 4]) == 76  # PIL's luma of red


def test_strict_makes_unreadable_files_an_error(messy: Path, cache: Path) -> None:
    with pytest.raises(UserError, match=r"3 unreadable files .*\(--strict\)"):
        load_source(str(messy), image_size=8, cache_dir=cache, strict=True)


@pytest.mark.parametrize("layout, message", [
    ({"a/x.png": True, "b/readme.txt": False}, r"class folder 'b' .* hold no images"),
    ({"only/x.png": True, "only/y.png": True}, r"only one class \('only'\)"),
    ({"a/readme.txt": False}, r"no images found in"),
    ({"a/x.png": True, "b/bad.png": False}, r"class 'b' .* has no readable images"),
])
def test_unusable_folders_are_user_errors(tmp_path: Path, cache: Path, layout: dict, message: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for name, is_image in layout.items():
        if is_image:
            save(root / name, Image.new("RGB", (4, 4), RED))
        else:
            write(root / name, b"text")
    with pytest.raises(UserError, match=message):
        load_source(str(root), cache_dir=cache)


def test_unknown_spec_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown dataset '.*nowhere': expected digits, fashion-mnist, cifar10"):
        load_source(str(tmp_path / "nowhere"))
    write(tmp_path / "x.json", b"{}")
    with pytest.raises(UserError, match="unknown dataset"):
        load_source(str(tmp_path / "x.json"))


def test_csv_with_and_without_header(tmp_path: Path, cache: Path, capsys) -> None:
    save(tmp_path / "imgs" / "r.png", Image.new("RGB", (8, 8), RED))
    save(tmp_path / "imgs" / "b.png", Image.new("RGB", (8, 8), BLUE))
    save(tmp_path / "b2.png", Image.new("RGB", (8, 8), BLUE))
    (tmp_path / "with_header.csv").write_text(
        "id,label,filename\n1,red,imgs/r.png\n2,blue,imgs\\b.png\n3,blue,b2.png\n4,red,imgs/gone.png\n")
    with runtime.using(console=True):
        source = load_source(str(tmp_path / "with_header.csv"), image_size=8, cache_dir=cache)
    assert source.name == "with_header" and source.classes == ["blue", "red"]
    assert source.pool.ids == ["imgs/r.png", "imgs/b.png", "b2.png"] and source.pool.labels.tolist() == [1, 0, 0]
    assert source.skipped == [("imgs/gone.png", "missing")] and "imgs/gone.png (missing)" in capsys.readouterr().err
    assert close(pixel(source, "imgs/r.png"), RED, 0)

    (tmp_path / "plain.csv").write_text("imgs/r.png,red\nimgs/b.png,blue\n")
    plain = load_source(str(tmp_path / "plain.csv"), image_size=8, cache_dir=cache)
    assert plain.pool.ids == ["imgs/r.png", "imgs/b.png"]
    (tmp_path / "dup.csv").write_text("path,label\nimgs/r.png,red\nimgs/r.png,blue\n")
    with pytest.raises(UserError, match="line 3: imgs/r.png is already listed on line 2"):
        load_source(str(tmp_path / "dup.csv"), cache_dir=cache)
    (tmp_path / "short.csv").write_text("path,label\nimgs/r.png\n")
    with pytest.raises(UserError, match="line 2: expected a path and a label"):
        load_source(str(tmp_path / "short.csv"), cache_dir=cache)


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "cane: dog\ncavallo: dog   # merged\ngatto: cat\n"),
    (".json", '{"cane": "dog", "cavallo": "dog", "gatto": "cat"}'),
])
def test_class_map_renames_and_merges(tmp_path: Path, cache: Path, suffix: str, text: str) -> None:
    root = tmp_path / "animals"
    for name, n in (("cane", 3), ("cavallo", 2), ("gatto", 1), ("ragno", 1)):
        for i in range(n):
            save(root / name / f"{i}.png", Image.new("RGB", (4, 4), (i, 0, 0)))
    mapping = tmp_path / f"map{suffix}"
    mapping.write_text(text)
    source = load_source(str(root), class_map=mapping, image_size=4, cache_dir=cache)
    assert source.classes == ["cat", "dog", "ragno"]  # unmapped keeps its name; sorted after renaming
    assert source.pool.class_counts() == [1, 5, 1]
    assert source.pool.labels[source.pool.ids.index("cavallo/1.png")] == 1

    digits = load_source("digits", class_map=_write(tmp_path / "d.yaml", "'0': zero\n1: one\n"))
    assert digits.classes[-2:] == ["one", "zero"] and digits.pool.class_counts()[-1] == 178


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("- cane\n- dog\n", "must map class names to new names"),
    ("cane: [dog]\n", "must map class names"),
    ("cane: dog\n  bad: : indent\n", "cannot parse class map .*m.yaml"),
    ("lupo: wolf\n", "class map names classes not in the dataset: lupo"),
])
def test_bad_class_maps_are_user_errors(tmp_path: Path, cache: Path, text: str, message: str) -> None:
    for name in ("cane", "gatto"):
        save(tmp_path / "animals" / name / "0.png", Image.new("RGB", (4, 4), RED))
    with pytest.raises(UserError, match=message):
        load_source(str(tmp_path / "animals"), class_map=_write(tmp_path / "m.yaml", text), cache_dir=cache)
    with pytest.raises(UserError, match="class map not found: .*missing.yaml"):
        load_source("digits", class_map=tmp_path / "missing.yaml")


# --- the decoding cache ---------------------------------------------------------------------------


def count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = imageio.decode_image

    def counting(path: str, size: int, grayscale: bool):
        calls.append(path)
        return real(path, size, grayscale)

    monkeypatch.setattr(imageio, "decode_image", counting)
    return calls


def test_second_load_is_served_from_the_cache(messy: Path, cache: Path, monkeypatch) -> None:
    calls = count_decodes(monkeypatch)
    first = load_source(str(messy), image_size=16, cache_dir=cache)
    assert len(calls) == 13  # 10 images + 3 unreadable files
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]  # no temporary files left

    def no_decoding(*args):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(imageio, "decode_image", no_decoding)
    second = load_source(str(messy), image_size=16, cache_dir=cache)
    assert torch.equal(first.pool.images, second.pool.images) and first.pool.ids == second.pool.ids
    assert second.skipped == first.skipped and second.original_sizes == first.original_sizes
    monkeypatch.setenv("CNNARENA_CACHE", str(cache.parent))  # the environment variable finds the same entry
    assert load_source(str(messy), image_size=16).pool.ids == first.pool.ids


def test_changed_or_added_files_invalidate_the_cache(messy: Path, cache: Path, monkeypatch) -> None:
    load_source(str(messy), image_size=16, cache_dir=cache)
    calls = count_decodes(monkeypatch)
    red = messy / "glass bottle" / "red.JPG"
    st = red.stat()
    os.utime(red, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    load_source(str(messy), image_size=16, cache_dir=cache)
    assert len(calls) == 13
    save(messy / "paper" / "new.png", Image.new("RGB", (4, 4), RED))
    assert len(load_source(str(messy), image_size=16, cache_dir=cache).pool) == 11
    load_source(str(messy), image_size=8, cache_dir=cache)  # another size is another entry
    assert len(calls) == 13 + 14 + 14
    assert len(list(cache.glob("*.npy"))) == 4  # old entries stay until the cache folder is cleared


def test_parallel_decoding_matches_in_process(messy: Path, tmp_path: Path, monkeypatch) -> None:
    serial = load_source(str(messy), image_size=16, cache_dir=tmp_path / "serial")
    monkeypatch.setattr(imageio, "PARALLEL_MIN_FILES", 0)
    parallel = load_source(str(messy), image_size=16, cache_dir=tmp_path / "parallel")
    assert torch.equal(serial.pool.images, parallel.pool.images)
    assert serial.skipped == parallel.skipped and serial.original_sizes == parallel.original_sizes


# --- CIFAR pickles -----------------------------------------------------------------------------------


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the real CIFAR files: protocol 2, str as BINSTRING."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        self.write((pickle.SHORT_BINSTRING + bytes([len(data)]) if len(data) < 256
                    else pickle.BINSTRING + len(data).to_bytes(4, "little")) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        module = "numpy.core.multiarray" if obj.__name__ == "_reconstruct" else obj.__module__
        self.write(pickle.GLOBAL + f"{module}\n{obj.__name__}\n".encode())
        self.memoize(obj)


def py2_pickle(obj: object) -> bytes:
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar_dir(directory: Path, per_batch: int = 4) -> Path:
    """Image k (counting across batches) has red = k, green = 100 + k, blue = 200 + k; label k % 10."""
    directory.mkdir(parents=True)
    k = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        ks = np.arange(k, k + per_batch)
        data = np.concatenate([np.repeat(ks[:, None] + base, 1024, axis=1) for base in (0, 100, 200)], axis=1)
        batch = {"batch_label": f"{name} of 6", "labels": [int(x % 10) for x in ks],
                 "data": data.astype(np.uint8), "filenames": [f"img_{x}.png" for x in ks]}
        write(directory / name, py2_pickle(batch))
        k += per_batch
    write(directory / "batches.meta", py2_pickle({"label_names": CIFAR_NAMES, "num_vis": 3072,
                                                  "num_cases_per_batch": per_batch}))
    return directory


def test_cifar_dir_in_the_real_pickle_format(tmp_path: Path) -> None:
    make_cifar_dir(tmp_path / "download" / "cifar-10-batches-py")
    for spec in (tmp_path / "download", tmp_path / "download" / "cifar-10-batches-py"):
        source = load_source(str(spec))
        assert source.classes == CIFAR_NAMES
        assert tuple(source.pool.images.shape) == (20, 3, 32, 32) and tuple(source.test.images.shape) == (4, 3, 32, 32)
        assert source.pool.ids[5] == "train/5" and source.test.ids[0] == "test/0"
        assert source.pool.labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
        assert source.pool.images[7, :, 31, 0].tolist() == [7, 107, 207]  # channel-major rows
        assert source.test.images[3, :, 0, 31].tolist() == [23, 123, 223]
        assert len(source.original_sizes) == 24
    via_builtin = load_source("cifar10", data_dir=tmp_path / "download", download=False, grayscale=True)
    assert via_builtin.pool.channels == 1
    assert abs(int(via_builtin.pool.images[0, 0, 0, 0]) - (0.587 * 100 + 0.114 * 200)) <= 0.5


class RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_or_corrupt_pickles_are_refused(tmp_path: Path) -> None:
    directory = make_cifar_dir(tmp_path / "evil", per_batch=2)
    marker = tmp_path / "pwned"
    write(directory / "data_batch_1", pickle.dumps({"data": RunsCommand(marker)}, protocol=2))
    with pytest.raises(UserError, match=r"refusing to load .*data_batch_1: it references (posix|os)\.system"):
        load_source(str(directory))
    assert not marker.exists()
    write(directory / "data_batch_1", py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})[:50])
    with pytest.raises(UserError, match="data_batch_1 is not a readable CIFAR batch"):
        load_source(str(directory))
    write(directory / "data_batch_1", py2_pickle({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(UserError, match=r"expected uint8 data N×3072"):
        load_source(str(directory))
    write(directory / "data_batch_1", py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": ["cat", "dog"]}))
    with pytest.raises(UserError, match="its labels must be whole numbers"):  # text labels: no traceback
        load_source(str(directory))


# --- Fashion-MNIST idx files ----------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx_dir(directory: Path, compress: bool = True) -> dict[str, bytes]:
    """6 train and 4 test images of 28×28 with pixel value 10 * label; returns the file contents."""
    files = {}
    for prefix, labels in (("train", [0, 1, 2, 9, 9, 3]), ("t10k", [5, 6, 7, 8])):
        lab = np.array(labels, np.uint8)
        images = np.repeat(lab * 10, 28 * 28).reshape(-1, 28, 28)
        for kind, array, dims in (("images", images, 3), ("labels", lab, 1)):
            name = f"{prefix}-{kind}-idx{dims}-ubyte.gz"
            files[name] = gzip.compress(idx_bytes(array))
            write(directory / (name if compress else name[:-3]), files[name] if compress else idx_bytes(array))
    return files


@pytest.fixture
def no_fashion(tmp_path: Path, monkeypatch) -> Path:
    """No Fashion-MNIST anywhere: an empty user cache, no Debian package, no $CNNARENA_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CNNARENA_DATA", raising=False)
    monkeypatch.setattr(idx, "SYSTEM_DIR", tmp_path / "no-debian")
    return tmp_path / "xdg" / "cnnarena"


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx_files_in_data_dir(tmp_path: Path, no_fashion: Path, compress: bool) -> None:
    make_idx_dir(tmp_path / "data" / "fashion-mnist", compress)
    source = load_source("fashion-mnist", data_dir=tmp_path / "data", download=False)
    assert source.classes[0] == "T-shirt/top" and source.classes[9] == "Ankle boot"
    assert tuple(source.pool.images.shape) == (6, 1, 28, 28) and tuple(source.test.images.shape) == (4, 1, 28, 28)
    assert source.pool.labels.tolist() == [0, 1, 2, 9, 9, 3] and source.test.ids == [f"test/{i}" for i in range(4)]
    assert source.pool.images[3].unique().tolist() == [90] and source.pool.ids[3] == "train/3"


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-5], "does not match its header"),
    (lambda raw: b"\x00\x00\x07\x03" + raw[4:], "bad magic number"),
    (lambda raw: gzip.compress(b"\x08\x08" + raw[2:]), "bad magic number"),
    (lambda raw: gzip.compress(raw)[:-20], "is corrupt"),
])
def test_corrupt_idx_files_are_user_errors(tmp_path: Path, no_fashion: Path, damage, message: str) -> None:
    make_idx_dir(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError, match=message):
        load_source("fashion-mnist", data_dir=tmp_path, download=False)


def test_fashion_mnist_missing_offline_says_how_to_get_it(no_fashion: Path) -> None:
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist.*--data-dir"):
        load_source("fashion-mnist", download=False)


def test_a_data_dir_without_fashion_mnist_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    # it used to fall back silently to the Debian package or the cache: the user named this folder
    with pytest.raises(UserError, match=f"--data-dir {tmp_path} holds no Fashion-MNIST: it needs train-images"):
        load_source("fashion-mnist", data_dir=tmp_path, download=False)


@pytest.mark.skipif(not (idx.SYSTEM_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_the_debian_package(monkeypatch) -> None:
    monkeypatch.delenv("CNNARENA_DATA", raising=False)
    source = load_source("fashion-mnist", download=False)
    assert tuple(source.pool.images.shape) == (60000, 1, 28, 28)
    assert tuple(source.test.images.shape) == (10000, 1, 28, 28)
    assert source.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert source.pool.class_counts() == [6000] * 10 and source.test.class_counts() == [1000] * 10


# --- downloads, from a real HTTP server on loopback --------------------------------------------------------


@pytest.fixture
def server():
    """Serves the dict it yields (path → bytes) on 127.0.0.1; yields (files, base url)."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield files, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_fashion_mnist_download_checks_md5_and_lands_atomically(tmp_path: Path, no_fashion: Path, server,
                                                                 monkeypatch) -> None:
    files, url = server
    contents = make_idx_dir(tmp_path / "origin")
    files.update({f"/{name}": data for name, data in contents.items()})
    monkeypatch.setattr(idx, "FASHION_URL", url)
    monkeypatch.setattr(idx, "FASHION_FILES", {name: md5(data) for name, data in contents.items()})

    bad = dict(idx.FASHION_FILES, **{"t10k-labels-idx1-ubyte.gz": "0" * 32})
    monkeypatch.setattr(idx, "FASHION_FILES", bad)
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz is corrupt .*expected 0000"):
        load_source("fashion-mnist")
    landed = sorted(p.name for p in (no_fashion / "fashion-mnist").iterdir())
    assert landed == sorted(set(contents) - {"t10k-labels-idx1-ubyte.gz"})  # no partial file left

    monkeypatch.setattr(idx, "FASHION_FILES", {name: md5(data) for name, data in contents.items()})
    source = load_source("fashion-mnist")
    assert len(source.pool) == 6 and len(source.test) == 4
    assert sorted(p.name for p in (no_fashion / "fashion-mnist").iterdir()) == sorted(contents)
    files.clear()  # offline from now on: the user cache is enough
    assert load_source("fashion-mnist").pool.labels.tolist() == [0, 1, 2, 9, 9, 3]


def test_download_failures_are_user_errors(no_fashion: Path, server, monkeypatch) -> None:
    _, url = server
    monkeypatch.setattr(idx, "FASHION_URL", url)  # serves nothing: 404
    with pytest.raises(UserError, match="could not download .*train-images.*dataset-fashion-mnist"):
        load_source("fashion-mnist")
    monkeypatch.setattr(idx, "FASHION_URL", "http://127.0.0.1:9/")  # nothing listens: offline
    with pytest.raises(UserError, match="could not download .*apt-get install dataset-fashion-mnist"):
        load_source("fashion-mnist")


def test_cifar10_download_extracts_into_the_user_cache(tmp_path: Path, no_fashion: Path, server,
                                                       monkeypatch) -> None:
    files, url = server
    make_cifar_dir(tmp_path / "origin" / "cifar-10-batches-py", per_batch=2)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(tmp_path / "origin" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    files["/cifar-10-python.tar.gz"] = archive.getvalue()
    monkeypatch.setattr(cifar, "CIFAR_URL", url + "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar, "CIFAR_MD5", md5(archive.getvalue()))
    with pytest.raises(UserError, match="CIFAR-10 not found"):
        load_source("cifar10", download=False)
    source = load_source("cifar10")
    assert len(source.pool) == 10 and len(source.test) == 2
    assert sorted(p.name for p in no_fashion.iterdir()) == ["cifar-10-batches-py"]  # archive and staging gone
    files.clear()
    assert load_source("cifar10", image_size=16).pool.images.shape[-1] == 16


def test_cache_sidecar_is_plain_json(messy: Path, cache: Path) -> None:
    load_source(str(messy), image_size=8, cache_dir=cache)
    (sidecar,) = cache.glob("*.json")
    meta = json.loads(sidecar.read_text())
    assert set(meta) == {"ids", "labels", "skipped", "original_sizes", "single"} and len(meta["ids"]) == 10
    assert np.load(sidecar.with_suffix(".npy")).shape == (10, 3, 8, 8)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_cifar_batch_re_pickled_by_python_3_loads(tmp_path: Path, protocol: int) -> None:
    """Python 3 writes bytes in protocol 2 through _codecs.encode and arrays in protocol 5 through _frombuffer:
    both are allowed, for exactly these uses."""
    directory = make_cifar_dir(tmp_path / "cifar", per_batch=2)
    original = cifar.unpickle(directory / "data_batch_1")
    write(directory / "data_batch_1", pickle.dumps(original, protocol=protocol))
    again = cifar.unpickle(directory / "data_batch_1")
    assert (again[b"data"] == original[b"data"]).all() and again[b"labels"] == original[b"labels"]
    assert tuple(load_source(str(directory)).pool.images.shape) == (10, 3, 32, 32)


def test_the_codec_door_opens_for_latin1_only(tmp_path: Path) -> None:
    import codecs

    class Rot13:
        def __reduce__(self):
            return codecs.encode, ("payload", "rot13")

    path = tmp_path / "data_batch_1"
    write(path, pickle.dumps({b"data": Rot13()}, protocol=2))
    with pytest.raises(UserError, match="it calls _codecs.encode with the codec 'rot13'"):
        cifar.unpickle(path)
