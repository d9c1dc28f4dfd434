"""ONNX Runtime Web, the three files a static page needs to run an ONNX model in the browser (WebAssembly, SIMD):
fetched once from the npm registry (`npm pack`), kept in the cache, copied into every web export.

`make setup` fetches them, so a machine that is later offline can still export. Only the WebAssembly build is
used: it runs in every current browser, and a page served without cross-origin isolation falls back to one
thread by itself.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..errors import UserError
from ..runtime import cache_dir

VERSION = "1.31.1"
FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
NPM_SECONDS = 600


def runtime_dir() -> Path:
    """Where the files are, fetching them first when no cache holds them (UserError when they cannot be had)."""
    for where in _places():
        if all((where / name).is_file() for name in FILES):
            return where
    return _fetch(_places()[0])


def _places() -> list[Path]:
    default = Path.home() / ".cache" / "cnnarena"  # `make setup`'s, when $CNNARENA_CACHE points elsewhere now
    return list(dict.fromkeys(root / "onnxruntime-web" / VERSION for root in (cache_dir(), default)))


def _fetch(target: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(f"the web export needs ONNX Runtime Web {VERSION}, fetched once with npm: install npm "
                        f"(Debian: apt install npm) and export again while online")
    with tempfile.TemporaryDirectory(prefix="cnnarena-ort-web-") as tmp:
        try:
            done = subprocess.run([npm, "pack", f"onnxruntime-web@{VERSION}", "--silent"], cwd=tmp,
                                  capture_output=True, text=True, timeout=NPM_SECONDS)
        except subprocess.TimeoutExpired:
            raise UserError(f"npm pack onnxruntime-web@{VERSION} took over {NPM_SECONDS} s: is the npm registry "
                            f"reachable?") from None
        packed = sorted(Path(tmp).glob("onnxruntime-web-*.tgz"))
        if done.returncode != 0 or not packed:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise UserError(f"npm pack onnxruntime-web@{VERSION} failed (offline?): "
                            f"{said[-1] if said else f'exit {done.returncode}'}")
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_parent(target)))
        try:
            with tarfile.open(packed[0]) as archive:
                for name in FILES:  # only these members, read as data: nothing in the archive picks a path
                    member = archive.extractfile(f"package/dist/{name}")
                    if member is None:
                        raise UserError(f"onnxruntime-web@{VERSION} from npm has no dist/{name}")
                    (staging / name).write_bytes(member.read())
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _parent(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent


if __name__ == "__main__":  # `make setup`: python -m cnnarena.export.web_runtime
    print(runtime_dir())
