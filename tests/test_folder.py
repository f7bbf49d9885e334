"""Your own images: an image folder (PNG, JPEG, BMP, GIF; grey and colour; two sizes) loads
to exactly the pixels the test wrote, with its class names, and trains with the folder flags
(tests/test_progress.py takes a folder through train, convert and explain)."""

import json

import numpy as np
import pytest
from PIL import Image

from sgt_tfmot import _files, data, train
from sgt_tfmot.data import folder as folder_source
from sgt_tfmot.keras import tf

RNG = np.random.default_rng(0)


def write(path, pixels, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if pixels.ndim == 2 else "RGB"
    Image.fromarray(pixels.astype(np.uint8), mode).save(
        path, fmt, **({"quality": 100} if fmt == "JPEG" else {})
    )
    return pixels


def test_png_pixels_labels_and_class_names_load_exactly(tmp_path):
    expected = {}
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog", "emu"):
            for i in range(count):
                pixels = RNG.integers(0, 256, (6, 5, 3))
                expected[split, name, i] = write(tmp_path / split / name / f"{i}.png", pixels)
    info = data.info(str(tmp_path))
    assert info.class_names == ("cat", "dog", "emu") and info.image_shape == (6, 5, 3)
    for split, count in (("train", 3), ("test", 2)):
        x, y = data.load_arrays(str(tmp_path), split)
        np.testing.assert_array_equal(y, np.repeat([0, 1, 2], count))
        for row, (name, i) in enumerate(
            (n, i) for n in ("cat", "dog", "emu") for i in range(count)
        ):
            np.testing.assert_array_equal(x[row], expected[split, name, i])


def test_jpeg_bmp_gif_grey_and_colour_two_sizes_with_options(tmp_path):
    write(tmp_path / "train" / "a" / "big.jpg", np.full((8, 8, 3), (200, 40, 90)), "JPEG")
    write(tmp_path / "train" / "b" / "colour.png", np.full((4, 4, 3), 10))
    write(tmp_path / "test" / "a" / "grey.bmp", np.full((4, 4), 120), "BMP")
    write(tmp_path / "test" / "b" / "small.gif", np.full((4, 4), 30), "GIF")
    with pytest.raises(
        data.DataError, match=r"different sizes .*big.jpg' is 8x8.*pass --image_size"
    ):
        data.info(str(tmp_path))
    with pytest.raises(data.DataError, match=r"grey.bmp' has 1, .*small.gif' has 3.*--color_mode"):
        data.info(str(tmp_path), image_size="4,4")  # a GIF decodes to RGB
    x_train, _ = data.load_arrays(str(tmp_path), "train", image_size="4,4", color_mode="rgb")
    x_test, y_test = data.load_arrays(str(tmp_path), "test", image_size="4,4", color_mode="rgb")
    assert x_train.shape == x_test.shape == (2, 4, 4, 3) and y_test.tolist() == [0, 1]
    # The flat JPEG decodes (and resizes) to its colour within 2 levels; BMP, GIF, PNG exactly.
    assert np.abs(x_train[0].astype(int) - [200, 40, 90]).max() <= 2
    np.testing.assert_array_equal(x_train[1], np.full((4, 4, 3), 10))
    np.testing.assert_array_equal(x_test[0], np.full((4, 4, 3), 120))  # grey to RGB
    np.testing.assert_array_equal(x_test[1], np.full((4, 4, 3), 30))
    grey, _ = data.load_arrays(str(tmp_path), "test", image_size="4,4", color_mode="grayscale")
    assert grey.shape == (2, 4, 4, 1) and grey[0, 0, 0, 0] == 120


def test_image_headers_give_the_decoded_size_of_every_format(tmp_path):
    """Each header against what TensorFlow's decoder gives for the same file: height and
    width exactly, the channels exactly (a palette PNG: at most, RGBA)."""
    files = {
        "grey.png": (Image.new("L", (7, 5)), {}),
        "rgb.png": (Image.new("RGB", (9, 4)), {}),
        "rgba.png": (Image.new("RGBA", (3, 6)), {}),
        "palette.png": (Image.new("P", (5, 5)), {}),
        "grey16.png": (Image.new("I;16", (4, 3)), {}),
        "photo.jpg": (Image.new("RGB", (11, 13)), {"exif": b"Exif\0\0" + b"\0" * 64}),
        "grey.jpg": (Image.new("L", (8, 3)), {}),
        "progressive.jpg": (Image.new("RGB", (6, 7)), {"progressive": True}),
        "anim.gif": (Image.new("L", (10, 2)), {}),
        "grey.bmp": (Image.new("L", (3, 3)), {}),
        "rgb.bmp": (Image.new("RGB", (5, 2)), {}),
    }
    for name, (image, options) in files.items():
        path = tmp_path / name
        image.save(path, **options)
        kind, height, width, channels, raw = folder_source.image_header(path)
        decoded = tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False)
        assert (height, width) == tuple(decoded.shape[:2]), name
        assert channels == decoded.shape[2] or (name == "palette.png" and channels == 4), name
        assert kind == {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP"}[path.suffix[1:]]
        assert (raw is not None) == (kind == "PNG")
    # The PNG's pixel data before compression: a filter byte and the samples of each row.
    assert folder_source.image_header(tmp_path / "rgb.png")[4] == 4 * (1 + 9 * 3)
    assert folder_source.image_header(tmp_path / "grey16.png")[4] == 3 * (1 + 4 * 2)
    (tmp_path / "text.png").write_text("not an image")
    assert folder_source.image_header(tmp_path / "text.png") is None


def test_images_that_decode_to_more_than_a_file_may_take_are_refused_before_decoding(
    tmp_path, monkeypatch
):
    limit = 20 << 20  # as if this machine had 40 MiB
    monkeypatch.setattr(_files, "read_limit", lambda: limit)
    monkeypatch.setattr(folder_source, "read_limit", lambda: limit)
    decoded = []

    def decode(paths, options):  # the decoder, stubbed: called only when the headers pass
        decoded.append(paths)
        return [np.zeros((*options.image_size, 3), np.uint8) for _ in paths]

    monkeypatch.setattr(folder_source, "_decode", decode)
    pattern = (np.indices((1500, 1500)).sum(0) % 251).astype(np.uint8)
    for split in ("train", "test"):
        for label in ("a", "b"):
            write(tmp_path / "many" / split / label / "0.png", np.stack([pattern] * 3, -1))
    write(tmp_path / "one" / "train" / "a" / "big.png", np.zeros((3000, 3000, 3)))
    for split, label in (("train", "b"), ("test", "a"), ("test", "b")):
        write(tmp_path / "one" / split / label / "0.png", np.zeros((8, 8, 3)))
    # One image over the limit: its pixel data, 3000 rows of a filter byte and 3000 x 3
    # samples, is 27,003,000 bytes = 25.8 MiB (decoded, 27,000,000 bytes).
    with pytest.raises(data.DataError) as one:
        data.info(str(tmp_path / "one"), image_size="8,8")
    assert str(one.value) == (
        f"{str(tmp_path / 'one' / 'train' / 'a' / 'big.png')!r} (PNG, 3000x3000 pixels) claims "
        "25.8 MiB, more than the 20 MiB a file may take here (half of this machine's memory); "
        "nothing was read."
    )
    # 4 images of 1500 x 1500 x 3 = 6,750,000 bytes: 25.7 MiB together, none alone.
    with pytest.raises(data.DataError) as many:
        data.info(str(tmp_path / "many"))
    assert str(many.value) == (
        f"image folder {str(tmp_path / 'many')!r}: its 4 images take 25.7 MiB decoded, more "
        "than the 20 MiB a dataset may take here (half of this machine's memory); pass "
        "--image_size H,W to keep them smaller; nothing was decoded."
    )
    assert decoded == []  # refused from the headers: nothing was decoded
    # Kept at 28 x 28 they fit (the decoder holds only the few images it works on full size).
    assert data.info(str(tmp_path / "many"), image_size="28,28").image_shape == (28, 28, 3)
    assert len(decoded) == 2  # train, test


def test_mixed_channels_need_a_color_mode(tmp_path):
    write(tmp_path / "a" / "0.png", np.full((4, 4), 5))
    write(tmp_path / "a" / "1.png", np.full((4, 4, 3), 5))
    write(tmp_path / "b" / "0.png", np.full((4, 4), 5))
    write(tmp_path / "b" / "1.png", np.full((4, 4), 5))
    with pytest.raises(data.DataError, match=r"different channel counts .*pass --color_mode"):
        data.info(str(tmp_path), validation_split=0.5)


def test_validation_split_is_stratified_and_the_same_every_time(tmp_path):
    for name, count in (("x", 10), ("y", 5)):
        for i in range(count):
            write(tmp_path / name / f"{i}.png", np.full((3, 3), i * 10))
    _, y_test = data.load_arrays(str(tmp_path), "test", validation_split=0.2)
    np.testing.assert_array_equal(np.bincount(y_test), [2, 1])  # ⌈0.2 · 10⌉, ⌈0.2 · 5⌉
    first = data.load_arrays(str(tmp_path), "test", validation_split=0.2)[0]
    data._CACHE.clear()
    np.testing.assert_array_equal(
        data.load_arrays(str(tmp_path), "test", validation_split=0.2)[0], first
    )


@pytest.mark.parametrize(
    "layout, options, message",
    [
        ({}, {}, r"is empty"),
        ({"only/0.png": 1}, {"validation_split": 0.5}, r"has one class \('only'\)"),
        ({"a/0.png": 1, "b/notes.txt": 0}, {"validation_split": 0.5},
         r"class folder .*/b' holds no image"),
        ({"a/0.png": 1, "a/1.png": 1, "b/bad.png": "corrupt", "b/good.png": 1},
         {"validation_split": 0.5},
         r"cannot decode image .*bad.png"),
        ({"a/0.png": 1, "b/0.png": 1}, {}, r"no train/ and test/ sub-folders; pass --validation"),
        ({"a/0.png": 1, "b/0.png": 1}, {"validation_split": 0.5}, r"would leave none for training"),
    ],
)  # fmt: skip
def test_bad_folders(tmp_path, layout, options, message):
    for relative, content in layout.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "corrupt":
            path.write_bytes(b"\x89PNG but not really")
        elif relative.endswith(".png"):
            write(path, np.full((3, 3), 7))
        else:
            path.write_text("x")
    with pytest.raises(data.DataError, match=message):
        data.info(str(tmp_path), **options)


# A folder through train, convert and explain (class names in labels.txt, convert's report
# and explain's figures): tests/test_progress.py runs examples/your_own_images.py, which
# writes mnist_subset as a folder of PNGs and runs the three tools on it.


@pytest.mark.slow
def test_train_reads_a_folder_without_splits_with_the_folder_flags(tmp_path, capsys):
    """--validation_split, --image_size, --color_mode and --augment reach the run (the error
    for a folder without train/ and test/ names the first of them)."""
    root = tmp_path / "shapes"
    for label, name in enumerate(("circle", "square")):
        for i in range(8):
            write(root / name / f"{i}.png", RNG.integers(0, 60, (20, 20, 3)) + 150 * label)
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(root), "--model", "mobilenet_tiny", "--max_steps", "1"]
    argv += ["--batch_size", "4", "--progress", "0", "--out_dir", str(run)]
    assert train.main(argv) == 2
    assert "pass --validation_split F" in capsys.readouterr().err
    argv += ["--validation_split", "0.25", "--image_size", "16,16", "--color_mode", "grayscale"]
    assert train.main([*argv, "--augment", "none"]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    flags = metrics["flags"]
    assert (flags["validation_split"], flags["image_size"], flags["color_mode"]) == (
        0.25, "16,16", "grayscale")  # fmt: skip
    assert flags["augment"] == "none" and metrics["data"]["augment"] == []
    x_test, _ = data.load_arrays(str(root), "test", validation_split=0.25, image_size=(16, 16),
                                 color_mode="grayscale")  # fmt: skip
    assert x_test.shape == (4, 16, 16, 1)  # 2 of 8 per class held out, resized, grey
