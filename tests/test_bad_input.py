"""Every bad input through the three CLIs, in-process: exit 2, one line naming the value,
nothing written or deleted. And no code runs from a model file."""

import hashlib
import json
import os

import numpy as np
import pytest

from sgt_tfmot import convert, quantize_model, saving, train
from sgt_tfmot.explain import __main__ as explain_cli
from sgt_tfmot.keras import keras
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


def lambda_model(path, marker):
    """A float classifier whose Lambda layer writes `marker` whenever it runs."""
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Lambda(
        lambda x, m=str(marker): (open(m, "w").write("ran"), x)[1], name="trojan"
    )(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(hidden))
    keras.Model(inputs, outputs).save(path)
    if marker.exists():
        marker.unlink()  # saving traced the lambda; only loading counts here
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files the cases point at: broken .npz files, a Lambda model, a finished QAT model."""
    root = tmp_path_factory.mktemp("world")
    (root / "plain_file").write_text("not a directory")
    for name, content in (("empty", b""), ("text", b"x_train,y_train\n1,2\n")):
        (root / name).mkdir()
        (root / name / "mnist.npz").write_bytes(content)
    good = root / "truncated"
    good.mkdir()
    np.savez(good / "mnist.npz", x_train=np.zeros((8, 28, 28), np.uint8), y_train=np.zeros(8))
    data = (good / "mnist.npz").read_bytes()
    (good / "mnist.npz").write_bytes(data[: len(data) // 2])
    lambda_model(root / "lambda.h5", root / MARKER)
    lambda_model(root / "lambda.keras", root / MARKER)
    qat = quantize_model(residual_model((28, 28, 1), 10))
    saving.save_model(qat, root / "qat.h5")
    (root / "foreign.tflite").write_bytes(b"somebody else's model")
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("keep me")
    return root


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
]  # fmt: skip

TOOLS = {
    "train": (train.main, "sgt_tfmot.train"),
    "convert": (convert.main, "sgt_tfmot.convert"),
    "explain": (explain_cli.main, "sgt_tfmot.explain"),
}


@pytest.mark.parametrize(("tool", "argv", "message"), CASES)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    tool, argv, message, world, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    main, program = TOOLS[tool]
    argv = [arg.format(w=world, t=tmp_path) for arg in argv]
    before_world, before_tmp = snapshot(world), snapshot(tmp_path)
    code = main([program, *argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith(f"{program}: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err and "allow_pickle" not in err and "object at 0x" not in err
    assert snapshot(world) == before_world and snapshot(tmp_path) == before_tmp
    assert not (world / MARKER).exists()  # no code from a model file ran


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

    monkeypatch.setattr(training, "make_strategy", lambda name: ThreeReplicas())
    argv = ["train", "--distribute", "mirrored", "--batch_size", batch]  # mnist_subset
    code = train.main([*argv, "--out_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "r").exists()


def test_overwrite_never_deletes_a_users_file_in_a_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "mobilenet_tiny", "--max_steps", "1", "--progress", "0"]
    argv += ["--out_dir", str(out)]
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

    from sgt_tfmot import _cli, training

    flag_values = flags.FlagValues()
    flags.DEFINE_bool("help", False, "Help.", flag_values=flag_values)

    def body(positional):
        raise training.WorkerLostError("worker 1 of the cluster stopped; start every worker again")

    assert _cli.run_main(["prog"], "prog", flag_values, __name__, body) == 1
    err = capsys.readouterr().err
    assert err == "prog: error: worker 1 of the cluster stopped; start every worker again\n"
