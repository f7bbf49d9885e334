"""A folder of images, one sub-folder per class (the layout of Keras's
`image_dataset_from_directory`):

    ROOT/train/<class>/*.png|jpg|jpeg|bmp|gif   and   ROOT/test/<class>/...
    ROOT/<class>/...                             split by `validation_split`

Class names are the sub-folder names, sorted; the class id is the position in that order.
Images are decoded with `tf.io.decode_image` in a parallel `tf.data` pipeline, once, and
held in memory as uint8 (every epoch then reads the arrays: the folder is no slower than an
.npz after the first pass). Without `image_size` every image must have the size of the
first; without `color_mode` every image must have the channels of the first ("grayscale"
converts colour images by luma, "rgb" repeats a grey channel). A GIF gives
its first frame.

Before any image is decoded, every file's header is read (`check_image_sizes`): a PNG may
not claim more pixel data than its compressed bytes can hold, and no image, nor all of them
together as they are kept, may take more memory than a file may here (`_files.read_limit`);
a few kilobytes of PNG can otherwise decode to gigabytes.

The validation split takes, in each class, the first ⌈f·n⌉ files of a shuffle with a fixed
seed (0), so it is stratified and the same in every run.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from sgt_tfmot._checks import InputError
from sgt_tfmot._files import check_claim, check_memory, read_limit, size_text
from sgt_tfmot.data.base import (
    COLOR_MODES,
    Arrays,
    DataError,
    DataOptions,
    DataSource,
    check_arrays,
)

__all__ = ["EXTENSIONS", "FolderSource", "check_image_sizes", "image_header"]

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_SEED = 0


def _class_files(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"image folder {str(root)!r} has no class sub-folders; expected ROOT/<class>/image "
            "files (or ROOT/train/<class>/... and ROOT/test/<class>/...)."
        )
    found = {}
    for folder in classes:
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
        )
        if not files:
            raise DataError(
                f"class folder {str(folder)!r} holds no image ({', '.join(EXTENSIONS)})."
            )
        found[folder.name] = files
    return found


_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}  # colour type -> decoded (a palette: RGB(A))
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> stored samples per pixel
_JPEG_FRAMES = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}


def image_header(path: Path) -> tuple[str, int, int, int, int | None] | None:
    """(format, height, width, channels, bytes of pixel data before compression) from the
    first bytes of a PNG, JPEG, GIF or BMP file, read without decoding it; the last item only
    for a PNG (None otherwise). None when the file does not start like one of these (the
    decoder then says what it is)."""
    with open(path, "rb") as file:
        head = file.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 26:
            width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
            samples = _PNG_SAMPLES.get(colour, 4)
            raw = height * (1 + math.ceil(width * samples * depth / 8))  # a filter byte a row
            return "PNG", height, width, _PNG_CHANNELS.get(colour, 4), raw
        if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
            width, height = struct.unpack("<HH", head[6:10])  # the logical screen
            return "GIF", height, width, 3, None
        if head[:2] == b"BM" and len(head) >= 30:
            if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 1.x header
                width, height, bits = *struct.unpack("<HH", head[18:22]), 24
            else:  # a negative height: rows stored top-down
                width, height, _, bits = struct.unpack("<iiHH", head[18:30])
            return "BMP", abs(height), abs(width), {32: 4, 8: 1}.get(bits, 3), None
        if head.startswith(b"\xff\xd8\xff"):
            return _jpeg_header(file)
    return None


def _jpeg_header(file) -> tuple[str, int, int, int, None] | None:
    """The frame header (SOFn) of a JPEG: the segments before it are skipped by length."""
    file.seek(2)
    while True:
        marker = file.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        while kind == 0xFF:  # fill bytes
            byte = file.read(1)
            if not byte:
                return None
            kind = byte[0]
        if kind == 0xD9:  # the end of the image, and no frame header
            return None
        if kind == 0x01 or 0xD0 <= kind <= 0xD8:  # markers without a segment
            continue
        length = file.read(2)
        if len(length) < 2 or kind == 0xDA:  # a scan before any frame header
            return None
        if kind in _JPEG_FRAMES:
            frame = file.read(6)
            if len(frame) < 6:
                return None
            _, height, width, components = struct.unpack(">BHHB", frame)
            return "JPEG", height, width, components, None
        file.seek(struct.unpack(">H", length)[0] - 2, 1)


def check_image_sizes(root: Path, paths: list[Path], options: DataOptions) -> None:
    """Refuses, from the headers alone and before any image is decoded, a PNG that claims
    more pixel data than its bytes can hold, an image that would decode to more memory than a
    file may take, and images that together, as kept (at --image_size, in --color_mode),
    would.

    Raises:
      DataError: naming the file, or the folder `root` and its images' total, and the claim.
    """
    kept_total = 0
    try:
        for path in paths:
            header = image_header(path)
            if header is None:
                continue  # not one of the formats: the decoder names the file
            kind, height, width, channels, raw = header
            what = f"{str(path)!r} ({kind}, {width}x{height} pixels)"
            if raw is not None:
                check_claim(raw, path.stat().st_size, what, compressed=True)
            check_memory(height * width * (3 if options.color_mode == "rgb" else channels), what)
            kept = {"grayscale": 1, "rgb": 3}.get(options.color_mode, channels)
            area = math.prod(options.image_size) if options.image_size else height * width
            kept_total += area * kept
    except InputError as error:
        raise DataError(str(error)) from None
    if kept_total > read_limit():
        raise DataError(
            f"image folder {str(root)!r}: its {len(paths)} images take "
            f"{size_text(kept_total)} decoded, more than the {size_text(read_limit())} a "
            "dataset may take here (half of this machine's memory); pass --image_size H,W to "
            "keep them smaller; nothing was decoded."
        )


def _decode(paths: list[Path], options: DataOptions) -> list[np.ndarray]:
    from sgt_tfmot.keras import tf

    channels = 3 if options.color_mode == "rgb" else 0  # BMP decodes only to 0, 3 or 4

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                   expand_animations=False)  # fmt: skip
        if options.color_mode == "grayscale":
            image = image[..., :3]  # drop an alpha channel
            if image.shape[-1] != 1:  # luma: 0.2989 R + 0.587 G + 0.114 B, rounded
                image = tf.cond(
                    tf.shape(image)[-1] == 3,
                    lambda: tf.image.rgb_to_grayscale(image),
                    lambda: image[..., :1],
                )
        if options.image_size is not None:
            image = tf.image.resize(image, options.image_size, antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        return image

    indexed = tf.data.Dataset.from_tensor_slices(([str(p) for p in paths], range(len(paths))))
    dataset = indexed.map(lambda path, index: (decode(path), index),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)  # fmt: skip
    # A file that does not decode is dropped (quietly: a failing pipeline would log from C++)
    # and named from the indices that came through.
    dataset = dataset.ignore_errors(log_warning=False)
    images, indices = [], []
    for image, index in dataset.prefetch(tf.data.AUTOTUNE):
        images.append(image.numpy())
        indices.append(int(index))
    if len(images) < len(paths):
        bad = paths[next(i for i, j in enumerate([*indices, len(paths)]) if i != j)]
        raise DataError(f"cannot decode image {str(bad)!r} ({_why_not_an_image(bad)}).")
    return images


_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF",
               b"GIF89a": "GIF", b"BM": "BMP"}  # fmt: skip


def _why_not_an_image(path: Path) -> str:
    """Why TensorFlow could not decode `path`, from its first bytes."""
    with open(path, "rb") as file:
        head = file.read(16)
    kind = next((name for start, name in _SIGNATURES.items() if head.startswith(start)), None)
    if not head:
        return "the file is empty"
    if kind is None:
        *first, last = dict.fromkeys(_SIGNATURES.values())
        return f"not a {', '.join(first)} or {last} image"
    return f"a damaged or truncated {kind} file"


def _stack(images: list[np.ndarray], paths: list[Path], options: DataOptions) -> np.ndarray:
    first_shape, first = images[0].shape, paths[0]
    for image, path in zip(images, paths, strict=True):
        if image.shape[:2] != first_shape[:2] and options.image_size is None:
            raise DataError(
                f"images have different sizes ({str(first)!r} is {first_shape[0]}x"
                f"{first_shape[1]}, {str(path)!r} is {image.shape[0]}x{image.shape[1]}); pass "
                "--image_size H,W to resize them all."
            )
    for image, path in zip(images, paths, strict=True):
        if image.shape[2] != first_shape[2] and options.color_mode is None:
            raise DataError(
                f"images have different channel counts ({str(first)!r} has {first_shape[2]}, "
                f"{str(path)!r} has {image.shape[2]}); pass --color_mode "
                f"{' or '.join(COLOR_MODES)}."
            )
    stacked = np.stack(images)
    if stacked.shape[-1] == 4:
        raise DataError(
            f"{str(first)!r} has an alpha channel (RGBA); pass --color_mode rgb to drop it."
        )
    return stacked


def _read(files: dict[str, list[Path]], names: list[str], options: DataOptions):
    paths = [p for name in names for p in files.get(name, [])]
    labels = np.array([i for i, name in enumerate(names) for _ in files.get(name, [])], np.int64)
    images = _stack(_decode(paths, options), paths, options)
    return images, labels


def _at_least_two(root: Path, files: dict) -> None:
    if len(files) < 2:
        raise DataError(
            f"image folder {str(root)!r} has one class ({next(iter(files))!r}); a classifier "
            "needs at least two class sub-folders."
        )


def _split(files: dict[str, list[Path]], fraction: float):
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = {}, {}
    for name, paths in files.items():
        order = rng.permutation(len(paths))
        count = math.ceil(fraction * len(paths))
        if count >= len(paths):
            raise DataError(
                f"class {name!r} has {len(paths)} image(s): --validation_split {fraction} "
                "would leave none for training."
            )
        test[name] = sorted(paths[i] for i in order[:count])
        train[name] = sorted(paths[i] for i in order[count:])
    return train, test


class FolderSource(DataSource):
    """A directory of class sub-folders (see the module docstring)."""

    name = "folder"
    reference = "a folder of class sub-folders"

    def claims(self, reference: str, data_dir) -> bool:
        return Path(reference).is_dir()

    def load(self, reference: str, data_dir, options: DataOptions) -> Arrays:
        root = Path(reference)
        if not any(root.iterdir()):
            raise DataError(f"image folder {str(root)!r} is empty.")
        if (root / "train").is_dir() and (root / "test").is_dir():
            train, test = _class_files(root / "train"), _class_files(root / "test")
            if set(test) - set(train):
                raise DataError(
                    f"{str(root / 'test')!r} has classes that train/ has not: "
                    f"{', '.join(sorted(set(test) - set(train)))}."
                )
            layout = "train/ and test/"
        elif options.validation_split is None:
            raise DataError(
                f"image folder {str(root)!r} has no train/ and test/ sub-folders; pass "
                "--validation_split F (e.g. 0.2) to hold out a share of each class as the "
                "test split."
            )
        else:
            files = _class_files(root)
            _at_least_two(root, files)
            train, test = _split(files, options.validation_split)
            layout = f"validation_split {options.validation_split}"
        names = sorted(train)
        _at_least_two(root, train)
        every = [path for split in (train, test) for paths in split.values() for path in paths]
        check_image_sizes(root, every, options)
        x_train, y_train = _read(train, names, options)
        x_test, y_test = _read(test, names, options)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DataError(
                f"train images are {x_train.shape[1:]} but test images {x_test.shape[1:]}; "
                "pass --image_size H,W and --color_mode to make them alike."
            )
        return check_arrays(x_train, y_train, x_test, y_test, class_names=names,
                            source=f"image folder {str(root)!r} ({layout})")  # fmt: skip
