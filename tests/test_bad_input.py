"""Every bad input through the three CLIs, in-process: exit 2, one line naming the value,
nothing written or deleted. And no code runs from a model file, no file is unpickled, and no
file makes a tool allocate what the file does not hold (tests/_hostile.py makes the files)."""

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from sgt_tfmot import _cli, convert, quantize_model, saving, train
from sgt_tfmot._progress import ENVIRONMENT
from sgt_tfmot.explain import __main__ as explain_cli
from sgt_tfmot.keras import keras
from tests.helpers import hostile
from tests.helpers.data import write_digits_npz
from tests.helpers.hostile import lambda_model, rgb_tflite, tiny_model
from tests.helpers.models import residual_model

MARKER = "code-ran.txt"


def snapshot(root):
    """Relative path -> sha256 of every file under `root` (directories as None)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files the cases point at: broken and hostile .npz and model files, a Lambda model, a
    finished QAT model, a zoo, an image folder with a corrupt file."""
    root = tmp_path_factory.mktemp("world")
    marker = root / MARKER
    (root / "plain_file").write_text("not a directory")
    for name, content in (("empty", b""), ("text", b"x_train,y_train\n1,2\n")):
        (root / name).mkdir()
        (root / name / "mnist.npz").write_bytes(content)
    good = root / "truncated"
    good.mkdir()
    np.savez(good / "mnist.npz", x_train=np.zeros((8, 28, 28), np.uint8), y_train=np.zeros(8))
    data = (good / "mnist.npz").read_bytes()
    (good / "mnist.npz").write_bytes(data[: len(data) // 2])
    npz = root / "npz"
    npz.mkdir()
    hostile.pickled_npz(npz / "pickled.npz", marker)
    hostile.pickle_as_npz(npz / "pickle.npz", marker)
    hostile.bomb_npz(npz / "bomb.npz")
    hostile.npy_as_npz(npz / "array.npz")
    hostile.wrong_rank_npz(npz / "rank.npz")
    lambda_model(root / "lambda.h5", marker)
    lambda_model(root / "lambda.keras", marker)
    qat = quantize_model(residual_model((28, 28, 1), 10))
    saving.save_model(qat, root / "qat.h5")
    tiny = tiny_model()
    tiny.save(root / "tiny.h5")
    tiny.save(root / "tiny.keras")
    tiny_model(keras.layers.LayerNormalization(name="norm")).save(root / "unsupported.h5")
    hostile.truncated(root / "tiny.h5", root / "truncated.h5")
    hostile.truncated(root / "tiny.keras", root / "truncated.keras")
    hostile.h5_bomb(root / "tiny.h5", root / "bomb.h5", "model_weights/conv/conv/kernel:0")
    hostile.keras_bomb(root / "tiny.keras", root / "bomb.keras", "layers/conv2d/vars/0")
    hostile.keras_naming_function(root / "tiny.keras", root / "function.keras", "logits")
    hostile.keras_naming_class(root / "tiny.keras", root / "class.keras", "relu")
    hostile.image_folder_with_a_corrupt_file(root / "images")
    hostile.image_folder_with_a_png_bomb(root / "png_bomb")
    rgb_tflite(root / "rgb.tflite")
    (root / "foreign.tflite").write_bytes(b"somebody else's model")
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("keep me")
    (root / "outside").mkdir()  # a model folder outside the zoo
    saving.save_model(qat, root / "outside" / "model.h5")
    return root


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"pid {os.getpid()} (a test's lock holder)".encode())
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def busy(world):
    """{w}/busy: a run directory whose lock another process holds (a training in progress)."""
    folder = world / "busy"
    folder.mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder / ".sgt_tfmot.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    yield folder
    holder.kill()
    holder.wait()


def _mount(point, options):
    point.mkdir(exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                            capture_output=True, text=True)  # fmt: skip
    return None if result.returncode == 0 else (result.stderr.strip() or "mount failed")


@pytest.fixture(scope="module")
def mounts(world):
    """{ro}: a read-only file system, {full}: a full one (small tmpfs mounts), or the reason
    they could not be made here (not root, no mount permission): their rows are skipped."""
    read_only, full, almost = world / "ro", world / "full", world / "almost"
    failure = None if hasattr(os, "geteuid") and os.geteuid() == 0 else "needs root to mount"
    for point, options in ((read_only, "size=64k,ro"), (full, "size=64k"), (almost, "size=64k")):
        failure = failure or _mount(point, options)
    if failure is None:
        _fill(full, 1 << 20)
        _fill(almost, 48 << 10)  # 16 kB left
    yield {"ro": read_only, "full": full, "almost": almost, "failure": failure}
    for point in (read_only, full, almost):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)  # busy: detach


def _fill(point, size):
    try:
        with open(point / "filler", "wb") as filler:
            for _ in range(size // 4096):
                filler.write(b"\0" * 4096)
                filler.flush()
    except OSError:
        pass  # full


CASES = [
    # (tool, argv, what the one line must contain)
    ("train", ["--out_dir", "{w}/plain_file/run"], "plain_file is a file, not a directory"),
    ("train", ["--activation_bits", "abc"], "--activation_bits=abc is not valid"),
    ("train", ["--activation_bits", "abc"], "accepted: an integer in [2, 8]"),
    ("train", ["--mask_fraction", "1.5", "--out_dir", "{t}/r"], "--mask_fraction must be"),
    ("train", ["--patch_size", "5", "--out_dir", "{t}/r"],
     "--patch_size must divide the input's size 28x28: one of 1, 2, 4, 7, 14, 28. Received: 5"),
    ("train", ["--patch_size", "0", "--out_dir", "{t}/r"],
     "--patch_size must be an integer >= 1. Received: 0"),
    ("train", ["--blur_sigma", "0", "--out_dir", "{t}/r"],
     "--blur_sigma must be a finite number in (0, 1000]. Received: 0.0"),
    ("train", ["--impute_noise", "2", "--out_dir", "{t}/r"],
     "--impute_noise must be a finite number in [0, 1]. Received: 2.0"),
    ("train", ["--fill", "noise"], "--fill=noise: value should be one of <random|zero|mean|blur|"),
    ("train", ["--mixed_precision", "fp8"], "--mixed_precision=fp8: value should be one of"),
    ("train", ["--dataset", "mnist", "--data_dir", "{w}/empty", "--out_dir", "{t}/r"],
     "mnist.npz' is not a readable .npz archive: the file is empty"),
    ("train", ["--dataset", "mnist", "--data_dir", "{w}/truncated", "--out_dir", "{t}/r"],
     "is not a readable .npz archive: the zip archive is damaged or truncated"),
    ("train", ["--dataset", "mnist", "--data_dir", "{w}/text", "--out_dir", "{t}/r"],
     "text/mnist.npz' is not a readable .npz archive"),
    ("train", ["--out_dir", "{w}/mine", "--overwrite"], "is not a sgt_tfmot run directory"),
    ("train", ["--distribute", "multi_worker", "--out_dir", "{t}/r"], "needs the cluster in"),
    ("train", ["unexpected"], "unexpected arguments: unexpected"),
    ("convert", ["--int8", "{w}/lambda.h5", "--output", "{t}/m.tflite"],
     "layer 'trojan' is a Lambda layer, which runs Python code"),
    ("convert", ["--int8", "{w}/lambda.keras", "--output", "{t}/m.tflite"],
     "layer 'trojan' is a Lambda layer"),
    ("convert", ["--int8", "{w}/qat.h5", "--output", "{w}/foreign.tflite", "--overwrite"],
     "foreign.tflite exists and was not written by sgt_tfmot"),
    ("convert", ["--int8", "{w}/qat.h5", "--output", "{w}/plain_file/m.tflite"], "is a file"),
    ("convert", ["--int8", "{w}/qat.h5", "--output", "{t}/m.tflite", "--num_test", "0"],
     "--num_test=0"),
    ("explain", ["--model", "{w}/lambda.h5", "--dataset", "mnist_subset", "--out_dir", "{t}/e"],
     "layer 'trojan' is a Lambda layer"),
    ("explain", ["--model", "{w}/qat.h5", "--dataset", "mnist_subset",
                 "--out_dir", "{w}/plain_file/e"], "plain_file is a file"),
    ("explain", ["--model", "{w}/qat.h5", "--dataset", "mnist_subset", "--out_dir", "{t}/e",
                 "--curve_method", "lrp"], "--curve_method must be one of"),
    # Hostile and broken .npz files: headers first, never unpickled, never a bomb.
    ("train", ["--dataset", "{w}/npz/pickled.npz", "--out_dir", "{t}/r"],
     "member y_train.npy holds Python objects (a pickled object array"),
    ("train", ["--dataset", "{w}/npz/pickle.npz", "--out_dir", "{t}/r"],
     "pickle.npz' is not a readable .npz archive: it is a Python pickle"),
    ("train", ["--dataset", "{w}/npz/bomb.npz", "--out_dir", "{t}/r"],
     "member x_train.npy (shape (10000000000000, 1, 1), uint8) claims 9.09 TiB"),
    ("explain", ["--model", "{w}/qat.h5", "--dataset", "{w}/npz/bomb.npz", "--out_dir", "{t}/e"],
     "claims 9.09 TiB (10,000,000,000,000 bytes) but only 16 bytes are stored"),
    ("train", ["--dataset", "{w}/npz/array.npz", "--out_dir", "{t}/r"],
     "array.npz' is not a readable .npz archive: it is a single .npy array (np.save)"),
    ("convert", ["--int8", "{w}/qat.h5", "--dataset", "{w}/npz/array.npz",
                 "--output", "{t}/m.tflite"], "it is a single .npy array (np.save)"),
    ("train", ["--dataset", "{w}/npz/rank.npz", "--out_dir", "{t}/r"],
     "member x_train.npy has shape (8, 784) and dtype uint8; x_train must hold numbers of "
     "rank 3 or 4"),
    # Model files: checked before anything is read from them; refused runs write nothing.
    ("convert", ["--int8", "{w}/truncated.h5", "--output", "{t}/m.tflite"],
     "truncated.h5 is truncated or not a Keras model file"),
    ("convert", ["--int8", "{w}/truncated.keras", "--output", "{t}/m.tflite"],
     "truncated.keras is truncated or not a Keras model file"),
    ("train", ["--model", "{w}/truncated.h5", "--out_dir", "{t}/r"],
     "truncated.h5 is truncated or not a Keras model file"),
    ("convert", ["--int8", "{w}/bomb.h5", "--output", "{t}/m.tflite"],
     "layer 'conv' weight conv/kernel:0 is stored with shape (10000000, 1000000), the layer "
     "expects (3, 3, 1, 4)"),
    ("explain", ["--model", "{w}/bomb.keras", "--dataset", "mnist_subset", "--out_dir", "{t}/e"],
     "layer 'conv' weight 0 is stored with shape (10000000, 1000000), the layer expects "
     "(3, 3, 1, 4)"),
    ("train", ["--model", "{w}/bomb.h5", "--out_dir", "{t}/r"], "stored with shape (10000000"),
    ("convert", ["--int8", "{w}/function.keras", "--output", "{t}/m.tflite"],
     "layer 'logits' names the function os.system, code from outside Keras"),
    ("explain", ["--model", "{w}/class.keras", "--dataset", "mnist_subset", "--out_dir", "{t}/e"],
     "layer 'relu' has class 'Payload' (module payload.layers), which is neither"),
    ("train", ["--model", "{w}/lambda.h5", "--out_dir", "{t}/r"],
     "is a Lambda layer, which runs Python code stored in the file; nothing was loaded. Pass "
     "--trust_model_code"),
    ("train", ["--model", "{w}/unsupported.h5", "--out_dir", "{t}/r"],
     "1 layer of the model cannot be quantized: LayerNormalization: 'norm'. Supported: "),
    ("train", ["--model", "{w}/qat.h5", "--out_dir", "{t}/r"], "is already a QAT model"),
    # zoo: names are entries of the zoo's manifest, never paths.
    ("convert", ["--int8", "zoo:../outside", "--output", "{t}/m.tflite"],
     "No zoo model '../outside'. The zoo has "),
    ("convert", ["--int8", "zoo:outside", "--output", "{t}/m.tflite"],
     "No zoo model 'outside'. The zoo has "),
    ("convert", ["--int8", "zoo:{w}/outside", "--output", "{t}/m.tflite"], "No zoo model '/"),
    ("explain", ["--model", "zoo:tiny/../../outside", "--out_dir", "{t}/e"],
     "No zoo model 'tiny/../../outside'"),
    ("train", ["--init_from", "zoo:", "--out_dir", "{t}/r"], "No zoo model ''."),
    ("train", ["--init_from", "zoo:../outside", "--out_dir", "{t}/r"],
     "No zoo model '../outside'"),
    # Image folders: each header read before any image is decoded.
    ("train", ["--dataset", "{w}/png_bomb", "--out_dir", "{t}/r"],
     "png_bomb/train/a/bomb.png' (PNG, 60000x60000 pixels) claims 10.1 GiB (10,800,060,000 "
     "bytes) but only "),
    ("convert", ["--int8", "{w}/qat.h5", "--dataset", "{w}/png_bomb", "--output",
                 "{t}/m.tflite"], "are compressed in the file: damaged or not what it says"),
    # TensorFlow's and LiteRT's internals stay out of the line.
    ("train", ["--dataset", "{w}/images", "--out_dir", "{t}/r"],
     "cannot decode image '{w}/images/train/a/broken.png' (not a PNG, JPEG, GIF or BMP image)."),
    ("explain", ["--model", "{w}/rgb.tflite", "--dataset", "mnist_subset", "--out_dir", "{t}/e"],
     "rgb.tflite: the model's input shape (32, 32, 3) does not fit the images (28, 28, 1)"),
    # Output locations: in use, read-only, full.
    ("train", ["--out_dir", "{busy}"], "is in use by another process (pid "),
    ("train", ["--out_dir", "{ro}/r"], "ro/r cannot be created in {ro} (a read-only file system)"),
    ("convert", ["--int8", "{w}/qat.h5", "--output", "{ro}/m.tflite"],
     "--output {ro} is not writable (a read-only file system)"),
    ("explain", ["--model", "{w}/qat.h5", "--dataset", "mnist_subset", "--out_dir", "{ro}"],
     "--out_dir {ro} is not writable (a read-only file system)"),
    ("train", ["--out_dir", "{full}/r"], "--out_dir {full}/r: the file system of {full} is full."),
    ("convert", ["--int8", "{w}/qat.h5", "--output", "{full}/m.tflite", "--dataset",
                 "mnist_subset"], "--output {full}: the file system of {full} is full."),
    ("explain", ["--model", "{w}/qat.h5", "--dataset", "mnist_subset", "--out_dir", "{full}/e"],
     "--out_dir {full}/e: the file system of {full} is full."),
]  # fmt: skip

TOOLS = {
    "train": (train.main, "sgt_tfmot.train"),
    "convert": (convert.main, "sgt_tfmot.convert"),
    "explain": (explain_cli.main, "sgt_tfmot.explain"),
}


@pytest.mark.parametrize(("tool", "argv", "message"), CASES)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    tool, argv, message, world, tmp_path, capfd, monkeypatch, request
):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("SGT_TFMOT_ZOO", str(world))  # the local zoo: {w}, which has outside/
    monkeypatch.setitem(_cli._QUIET, "on", True)  # as in a CLI process: C++ notices captured
    places = {"w": world, "t": tmp_path}
    if any("{busy}" in arg for arg in argv):
        places["busy"] = request.getfixturevalue("busy")
    if any("{ro}" in arg or "{full}" in arg for arg in argv):
        mounts = request.getfixturevalue("mounts")
        if mounts["failure"]:
            pytest.skip(f"no tmpfs mount here: {mounts['failure']}")
        places.update(ro=mounts["ro"], full=mounts["full"])
    main, program = TOOLS[tool]
    argv = [arg.format(**places) for arg in argv]
    message = message.format(**places)
    before_world, before_tmp = snapshot(world), snapshot(tmp_path)
    code = main([program, *argv])
    out, err = capfd.readouterr()
    assert code == 2, err
    assert err.startswith(f"{program}: error: ") and err.count("\n") == 1, err
    assert message in err, err
    for internal in ("Traceback", "allow_pickle", "object at 0x", "{{function_node", "[Op:",
                     "INFO: Created TensorFlow Lite"):  # fmt: skip
        assert internal not in err, err
    assert len(err) < 1000, f"{len(err)} characters: {err}"  # never a whole config (2 kB)
    assert snapshot(world) == before_world and snapshot(tmp_path) == before_tmp
    assert not (world / MARKER).exists()  # no code from a file ran, nothing was unpickled


@pytest.mark.slow
def test_a_disk_that_fills_up_during_convert_leaves_no_partial_file(world, mounts, capfd):
    """Found only when the files are written, at the end: the error is the last line, and
    not one of the output files (nor a temporary one) is left."""
    if mounts["failure"]:
        pytest.skip(f"no tmpfs mount here: {mounts['failure']}")
    almost = mounts["almost"]
    before = snapshot(almost)
    argv = ["convert", "--int8", str(world / "qat.h5"), "--output", str(almost / "m.tflite"),
            "--report", str(almost / "m.json"), "--dataset", "mnist_subset", "--num_test", "10",
            "--fidelity_images", "0", "--occlusion_images", "0"]  # fmt: skip
    assert convert.main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"sgt_tfmot.convert: error: {almost}/m.") and err[-1].endswith(
        ": cannot write it (No space left on device); none of the output files was written."
    ), err
    assert not any("error" in line for line in err[:-1]), err
    assert snapshot(almost) == before


TRAIN = [sys.executable, "-m", "sgt_tfmot.train", "--model", "mobilenet_tiny", "--batch_size", "16",
         "--max_steps", "100000", "--mixed_precision", "float32", "--progress", "0"]  # fmt: skip


@pytest.mark.slow
def test_two_trainings_on_one_out_dir_one_refuses_and_a_killed_ones_lock_blocks_nothing(
    tmp_path, capsys
):
    out = tmp_path / "run"
    first = subprocess.Popen([*TRAIN, "--out_dir", str(out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not (out / "flags.json").exists():  # the lock is held from before flags.json
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        second = subprocess.run([*TRAIN, "--out_dir", str(out)], capture_output=True, text=True,
                                timeout=600)  # fmt: skip
        assert first.poll() is None  # still training while the second refused
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.count("\n") == 1 and second.stderr.startswith(
            f"sgt_tfmot.train: error: --out_dir {out} is in use by another process (pid "
            f"{first.pid} on "
        ), second.stderr
    finally:
        first.kill()
        first.wait()
    assert (out / ".sgt_tfmot.lock").exists()  # left by the killed run, held by nobody
    before = snapshot(out)
    third = ["train", *TRAIN[3:], "--out_dir", str(out), "--kl_weight", "0.5"]  # in-process
    assert train.main(third) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err[-2000:]
    assert "holds an unfinished run with other settings (kl_weight: 0.1 -> 0.5)" in err
    assert snapshot(out) == before


def test_train_takes_trust_model_code_and_a_refused_trusted_model_writes_nothing(
    world, tmp_path, capfd
):
    argv = ["train", "--model", str(world / "lambda.h5"), "--trust_model_code"]
    code = train.main([*argv, "--mixed_precision", "float32", "--out_dir", str(tmp_path / "r")])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "'trojan'" in err and "Lambda" in err and "unknown flag" not in err
    assert not (tmp_path / "r").exists()
    assert (world / MARKER).exists()  # trusted: the file's code ran, as asked
    (world / MARKER).unlink()


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "$TF_CONFIG is not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
         "task index 3 is out of range for the 1 worker"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
         "this process is task 'chief', but the cluster has only ['worker']"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
         "parameter-server training is not supported"),
        ("[1, 2]", "$TF_CONFIG is not valid JSON with 'cluster' and 'task'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}',
         "$TF_CONFIG is not valid JSON with 'cluster' and 'task' (KeyError: 'index')"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}',
         '"cluster" must map task types to address lists'),
        ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
         "cluster['worker'] must be a list of \"host:port\" addresses. Received: 'a:1'"),
        ('{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}',
         "must be a list of \"host:port\" addresses. Received: ['a:1', 'b']"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}',
         "the task index must be an integer. Received: '0'"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": -1}}',
         "task index -1 is out of range for the 2 worker"),
        ('{"cluster": {"worker": ["a:1"], "evaluator": ["b:2"]}, '
         '"task": {"type": "worker", "index": 0}}', "takes 'chief' and 'worker' tasks only"),
    ],
)  # fmt: skip
def test_bad_cluster_specs(tf_config, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    code = train.main(["train", "--distribute", "multi_worker", "--out_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ("32", "--batch_size 32 is not divisible by the 3 replicas of the cluster"),
        # 5000 = 14 * 357 + 2: the last batch of an epoch, 2 images, cannot feed 3 replicas.
        ("357", "the last batch of each epoch would hold the 2 remaining example(s) of the "
                "5000 training images, fewer than the 3 replicas"),
    ],
)  # fmt: skip
def test_a_batch_the_replicas_cannot_share_is_one_line_exit_2(
    batch, message, tmp_path, capsys, monkeypatch
):
    from sgt_tfmot import training

    class ThreeReplicas:  # what make_strategy returns for a cluster of three replicas
        num_replicas_in_sync = 3

    monkeypatch.setattr(training.run, "make_strategy", lambda name: ThreeReplicas())
    argv = ["train", "--distribute", "mirrored", "--batch_size", batch]  # mnist_subset
    code = train.main([*argv, "--out_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "r").exists()


PROGRESS_ARGV = {
    "train": ["--out_dir", "{t}/r"],
    "convert": ["--int8", "{w}/qat.h5", "--output", "{t}/m.tflite"],
    "explain": ["--model", "{w}/qat.h5", "--dataset", "mnist_subset", "--out_dir", "{t}/e"],
}


@pytest.mark.parametrize("tool", sorted(PROGRESS_ARGV))
def test_a_bad_progress_interval_is_one_line_and_nothing_is_written(
    tool, world, tmp_path, capfd, monkeypatch
):
    monkeypatch.setenv(ENVIRONMENT, "soon")
    main, program = TOOLS[tool]
    argv = [arg.format(w=world, t=tmp_path) for arg in PROGRESS_ARGV[tool]]
    assert main([program, *argv]) == 2
    assert capfd.readouterr().err == (
        f"{program}: error: {ENVIRONMENT}='soon': the seconds between progress lines in a log "
        "must be a number in [1, 3600]; unset it for the default (20).\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_overwrite_never_deletes_a_users_file_in_a_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    digits = write_digits_npz(tmp_path / "digits.npz")
    argv = ["train", "--model", "mobilenet_tiny", "--dataset", str(digits), "--max_steps", "1"]
    argv += ["--progress", "0", "--out_dir", str(out)]
    assert train.main(argv) == 0
    assert "--output " + f"{out}-int8.tflite" in capsys.readouterr().out  # outside the run
    (out / "user_notes.txt").write_text("mine")
    (out / "model.tflite").write_bytes(b"a converted model")
    before = snapshot(out)
    assert train.main([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "model.tflite, user_notes.txt" in err and "--overwrite only replaces" in err
    assert snapshot(out) == before
    (out / "user_notes.txt").unlink()
    (out / "model.tflite").unlink()
    assert train.main([*argv, "--overwrite"]) == 0  # only the run's own files: replaced
    manifest = json.loads((out / ".sgt_tfmot.json").read_text())["files"]
    assert {"model.h5", "metrics.json", "backup"} <= set(manifest)


def test_a_folder_with_flags_json_alone_is_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "flags.json").write_text("{}")
    code = train.main(["train", "--out_dir", str(tmp_path), "--overwrite"])
    assert code == 2 and "is not a sgt_tfmot run directory" in capsys.readouterr().err
    assert (tmp_path / "flags.json").read_text() == "{}"


def test_trusted_code_loads_when_asked_for(world):
    marker = world / MARKER
    model = saving.load_model(world / "lambda.h5", trust_code=True)
    assert marker.exists() and model.layers[1].name == "trojan"
    marker.unlink()


def test_numpy_integers_are_bit_widths():
    qat = quantize_model(residual_model(), weight_bits=np.int64(4), activation_bits=np.int32(3))
    config = next(
        layer.quantize_config for layer in qat.layers if hasattr(layer, "quantize_config")
    )
    assert config is not None


@pytest.mark.slow
def test_qat_models_convert_without_calibration_images(world, tmp_path, capsys):
    args = ["convert", "--int8", str(world / "qat.h5"), "--output", str(tmp_path / "m.tflite")]
    args += ["--dataset", "mnist_subset", "--calibration_samples", "0", "--num_test", "20"]
    args += ["--fidelity_images", "0", "--max_accuracy_drop", "100", "--min_agreement", "0"]
    assert convert.main(args) == 0, capsys.readouterr().err
    assert "0 calibration images" in capsys.readouterr().out


def test_one_hot_labels_with_a_sparse_loss_are_refused_before_training():
    from sgt_tfmot.trainers import SaliencyGuidedModel

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    sgt = SaliencyGuidedModel(model, seed=0)
    sgt.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match=r"labels are one-hot, shape \(4, 3\)"):
        sgt.fit(np.zeros((4, 4, 4, 1)), np.eye(3)[[0, 1, 2, 0]], verbose=0)
    sgt.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match=r"labels are class ids, shape \(4,\)"):
        sgt.fit(np.zeros((4, 4, 4, 1)), np.array([0, 1, 2, 0]), verbose=0)


def test_a_lost_worker_is_one_line_and_exit_1(capsys):
    from absl import flags

    from sgt_tfmot import training

    flag_values = flags.FlagValues()
    flags.DEFINE_bool("help", False, "Help.", flag_values=flag_values)

    def body(positional):
        raise training.WorkerLostError("worker 1 of the cluster stopped; start every worker again")

    assert _cli.run_main(["prog"], "prog", flag_values, __name__, body) == 1
    err = capsys.readouterr().err
    assert err == "prog: error: worker 1 of the cluster stopped; start every worker again\n"
