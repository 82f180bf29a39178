"""Gather the natural photographs that ship inside packages, for training offline.

Sources: scikit-image's sample data, scikit-learn's sample images, matplotlib's sample photo,
and Debian packages of wallpapers and test photos where they are installed. Nothing is
installed or downloaded unless asked (``fetch=True``, ``lmcsds gather-photos --fetch``): then
scikit-learn is pip-installed and the Debian packages are downloaded and unpacked with
``apt-get download`` + ``dpkg -x`` (not installed). Near-duplicates are removed and the photos
are split into train / held-out BY SOURCE PHOTO (every crop of a photo lands on one side only).
For real training point ``--images`` at OpenImages or any folder of photos instead.
"""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from .images import decode_rgb

SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "cat",
    "motorcycle_left",
)
# Debian package -> (folder inside the package, file patterns)
DEBIAN_PHOTOS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "mate-backgrounds": ("usr/share/backgrounds", ("*.jpg", "*.png")),
    "lomiri-wallpapers": ("usr/share", ("*.jpg",)),
    "lxqt-themes": ("usr/share/lxqt/wallpapers", ("*.jpg", "*.png")),
    "opencv-doc": ("usr/share/doc/opencv-doc/examples/data", ("*.jpg",)),
}

# Files in those packages that are not natural photographs (logos, renders, abstract art,
# paintings, synthetic test patterns, motion/defocus-blurred test shots, and the long
# chessboard calibration series left01..right14), checked by eye; matched on the file stem.
NOT_PHOTOS = re.compile(
    r"^(origami-light|triangles-logo|Arc-Colors-Transparent-Wallpaper|kde-plasma|"
    r"lxqt-origami-green|origami-bright-logo|plasma-logo-bright|plasma_arch|"
    r"simple_blue_widescreen|triangles|Elephants|Float-into-MATE|GreenTraditional|"
    r"MATE-Stripes-Dark|Stripes|Ubuntu-Mate-Cold-no-logo|Ubuntu-Mate-Dark-no-logo|"
    r"pca_test\d*|text_motion|text_defocus|licenseplate_motion|Blender_Suzanne\d|HappyFish|"
    r"LinuxLogo|WindowsLogo|ellipses|blox|starry_night|(left|right)\d\d|.*[Ll]ogo.*)$"
)


def _ahash(arr: np.ndarray) -> int:
    grey = Image.fromarray(arr).convert("L").resize((8, 8), Image.BILINEAR)
    px = np.asarray(grey, dtype=np.float32).ravel()
    return int("".join("1" if v > px.mean() else "0" for v in px), 2)


def _python_photos(tmp: Path, fetch: bool) -> List[Tuple[str, Path]]:
    found = []
    try:
        import skimage.data as skd

        for name in SKIMAGE_PHOTOS:
            try:
                arr = getattr(skd, name)()
            except Exception as e:  # a sample that needs a download is skipped
                print(f"  skimage.data.{name}: skipped ({type(e).__name__})")
                continue
            if isinstance(arr, tuple):
                arr = arr[0]
            if arr.ndim == 3 and arr.shape[2] == 3:
                path = tmp / f"skimage-{name}.png"
                Image.fromarray(arr).save(path)
                found.append(("scikit-image", path))
    except ImportError:
        print("  scikit-image not installed: skipped")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        if fetch:
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "scikit-learn"], check=False
            )
    try:
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        for name, arr in zip(data.filenames, data.images):
            path = tmp / f"sklearn-{Path(name).stem}.png"
            Image.fromarray(arr).save(path)
            found.append(("scikit-learn", path))
    except ImportError:
        print("  scikit-learn not installed: skipped (--fetch installs it)")
    import matplotlib

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.exists():
        found.append(("matplotlib", hopper))
    return found


def _files(base: Path, patterns: Tuple[str, ...]) -> List[Path]:
    return sorted({p for pat in patterns for p in base.rglob(pat)}) if base.exists() else []


def _installed_debian_photos(
    dpkg_info: Path = Path("/var/lib/dpkg/info"),
) -> List[Tuple[str, Path]]:
    """The photo packages' files where dpkg installed them (from its file lists)."""
    found = []
    for package, (folder, patterns) in DEBIAN_PHOTOS.items():
        lists = sorted(dpkg_info.glob(f"{package}.list")) + sorted(
            dpkg_info.glob(f"{package}:*.list")
        )
        files = [
            Path(line) for lst in lists for line in lst.read_text().splitlines()
            if line.startswith(f"/{folder}/") and any(fnmatch(Path(line).name, pat) for pat in patterns)
            and Path(line).is_file()
        ]  # fmt: skip
        found += [(package, f) for f in sorted(set(files))]
        print(f"  {package}: {len(files)} files installed" if files else
              f"  {package}: not installed, skipped (--fetch downloads it)")  # fmt: skip
    return found


def _debian_photos(tmp: Path) -> List[Tuple[str, Path]]:
    found = []
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        print("  apt-get / dpkg not available: Debian photo packages skipped")
        return found
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    for package, (folder, patterns) in DEBIAN_PHOTOS.items():
        pkg_dir = tmp / package
        pkg_dir.mkdir()
        got = subprocess.run(
            ["apt-get", "download", "-qq", package], cwd=pkg_dir, capture_output=True, text=True
        )
        debs = list(pkg_dir.glob("*.deb"))
        if got.returncode != 0 or not debs:
            print(f"  {package}: not downloadable here, skipped ({got.stderr.strip()[:80]})")
            continue
        subprocess.run(["dpkg", "-x", str(debs[0]), str(pkg_dir / "x")], check=True)
        files = _files(pkg_dir / "x" / folder, patterns)
        found += [(package, p) for p in files]
        print(f"  {package}: {len(files)} files")
    return found


def gather_photos(out: str, heldout_fraction: float = 0.15, fetch: bool = False) -> dict:
    """Collect, dedup and split; writes OUT/train, OUT/heldout and OUT/manifest.json.
    ``fetch``: pip-install scikit-learn and download the Debian photo packages (network)."""
    out_dir = Path(out)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print("gathering photos shipped in packages:")
        debian = _debian_photos(tmp) if fetch else _installed_debian_photos()
        candidates = _python_photos(tmp, fetch) + debian
        kept, seen, entries = [], [], []
        for source, path in candidates:
            if NOT_PHOTOS.match(path.stem):
                continue
            try:
                arr, _ = decode_rgb(str(path))
            except Exception as e:
                print(f"  {path.name}: unreadable, skipped ({type(e).__name__})")
                continue
            h = _ahash(arr)
            if any(bin(h ^ s).count("1") <= 4 for s in seen):
                continue  # near-duplicate of a photo already kept
            seen.append(h)
            digest = hashlib.sha1(arr.tobytes()).hexdigest()
            split = "heldout" if int(digest[:8], 16) / 0xFFFFFFFF < heldout_fraction else "train"
            name = f"{source}__{path.stem}.png"
            target = out_dir / split / name
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(target)
            kept.append(target)
            entries.append(
                {
                    "file": f"{split}/{name}",
                    "source": source,
                    "sha1": digest,
                    "size": list(arr.shape[:2]),
                }
            )
    manifest = {
        "photos": len(entries),
        "train": sum(e["file"].startswith("train/") for e in entries),
        "heldout": sum(e["file"].startswith("heldout/") for e in entries),
        "entries": entries,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(
        f"{manifest['photos']} photos: {manifest['train']} train, {manifest['heldout']} "
        f"held-out under {out_dir}"
    )
    return manifest
