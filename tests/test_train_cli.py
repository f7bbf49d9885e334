"""python -m sgt_tfmot.train end to end under a step cap: outputs, resume, refusals, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sgt_tfmot._checks import InputError
from sgt_tfmot.keras import keras
from sgt_tfmot.saving import load_model
from sgt_tfmot.training import TrainConfig, config_from_flags, train
from tests.helpers.data import write_digits_npz


def tiny_config(out_dir, **overrides):
    settings = dict(
        model="mobilenet_tiny", max_steps=4, batch_size=32, backup_every=1, out_dir=str(out_dir),
        progress=0,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """256 training and 64 test images of mnist_subset as an .npz (tests/helpers/data.py)."""
    return str(write_digits_npz(tmp_path_factory.mktemp("digits") / "digits.npz"))


class Interrupt(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.after:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped(digits, tmp_path):
    """One run's life: interrupted, it refuses other settings and resumes with its own;
    finished, it is not overwritten without the flag, and is with it."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(out, dataset=digits), extra_callbacks=[Interrupt(after=2)])
    assert not (out / "metrics.json").exists() and (out / "backup").is_dir()
    # An unfinished run with other settings is refused (and the refusal writes nothing: the
    # run then resumes below as if it had not been tried).
    with pytest.raises(InputError, match=r"unfinished run with other settings \(kl_weight"):
        train(tiny_config(out, dataset=digits, kl_weight=0.5))

    metrics = train(tiny_config(out, dataset=digits))
    # Resumed after step 2 of 4: the optimizer made 4 steps in all, not 2 + 4.
    assert metrics["optimizer_steps"] == 4
    assert metrics["rounding_ties_moved"] == []  # the tiny classifier has no Add
    # The saved QAT model computes its integer model: its biases were put on the int32 grid.
    assert metrics["aligned_bias_layers"] > 0

    # The finished run is not overwritten without the flag.
    with pytest.raises(InputError, match="holds a finished run; pass --overwrite"):
        train(tiny_config(out, dataset=digits))
    metrics = train(tiny_config(out, dataset=digits, max_steps=1, overwrite=True, float=True))
    # The old run is gone: a float model has no PACT α, so no alpha.json is written.
    assert metrics["flags"]["float"] and not (out / "alpha.json").exists()


def test_sgt_settings_do_not_count_between_two_plain_runs():
    """A PACT-only run resumes (or is reused) whatever SGT masking the command names: those
    settings change nothing without SGT; between SGT runs, or SGT and plain, they count."""
    import dataclasses

    stored = dataclasses.asdict(TrainConfig(sgt=False))
    plain = TrainConfig(sgt=False, kl_weight=0.3, fill="impute", patch_size=4, mask_fraction=0.7)
    assert plain.changes_from(stored) == ""
    assert TrainConfig(kl_weight=0.3).changes_from(dataclasses.asdict(TrainConfig())) == (
        "kl_weight: 0.1 -> 0.3")  # fmt: skip
    assert TrainConfig(kl_weight=0.3).changes_from(stored) == (
        "kl_weight: 0.1 -> 0.3, sgt: False -> True")  # fmt: skip


def test_foreign_directory_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not a sgt_tfmot run directory"):
        train(tiny_config(tmp_path, overwrite=True))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_presets_fill_what_the_command_line_left_open():
    config = config_from_flags({"epochs": 3, "kl_weight": 0.1}, {"epochs"}, "paper_cifar10")
    assert (config.dataset, config.weight_bits, config.batch_size) == ("cifar10", 4, 64)
    assert config.epochs == 3 and config.kl_weight == 0.05 and config.learning_rate == 0.01


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "imagenet"}, "Unknown dataset 'imagenet'"),
        ({"model": "vgg"}, r"`model` must be one of 'resnet20', .*Received: model='vgg'"),
        ({"weight_bits": 9}, r"`weight_bits` must be an integer in \[2, 8\]. Received: .*9"),
        ({"mask_fraction": 1.0}, r"`mask_fraction` must be a finite number in \(0, 1\)"),
        ({"fill": "noise"}, "`fill` must be one of"),
        ({"max_steps": 0}, "`max_steps` must be an integer >= 1 or None"),
        (
            {"patch_size": 5},
            r"`patch_size` must divide the input's size 28x28: one of 1, 2, 4, "
            r"7, 14, 28\. Received: patch_size=5",
        ),
        ({"blur_sigma": -1.0}, r"`blur_sigma` must be a finite number in \(0, 1000\]"),
    ],
)
def test_bad_settings(tmp_path, overrides, message):
    with pytest.raises(InputError, match=message):
        train(tiny_config(tmp_path / "run", **overrides))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "sgt_tfmot.train", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    """One error in a real process (no traceback reaches the terminal), the others through
    the same `main` in this one (no second TensorFlow import per case)."""
    from sgt_tfmot import train as train_cli

    result = run_cli("--dataset", "imagenet", "--out_dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert "error: Unknown dataset 'imagenet'" in line and "Traceback" not in result.stderr
    for args, message in [
        (["--dataset", "cifar10", "--data_dir", str(tmp_path)], "has no file 'cifar10.npz'"),
        (["--activation_bits", "1"], "--activation_bits=1: 1 is not an integer in the range"),
    ]:
        argv = ["sgt_tfmot.train", *args, "--out_dir", str(tmp_path / "out")]
        assert train_cli.main(argv) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_help_shows_the_masking_flags(capsys):
    from sgt_tfmot import train as train_cli

    assert train_cli.main(["sgt_tfmot.train", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("--fill: <random|zero|mean|blur|impute>", "--patch_size", "--blur_sigma",
                 "--impute_noise", "ROAD's noisy linear imputation"):  # fmt: skip
        assert text in out, text


@pytest.mark.slow
def test_cli_end_to_end(digits, tmp_path, monkeypatch, capsys):
    """The command line trains a run (`tiny_config`'s settings), writes every output and says
    where; the same command again is refused. Its `main` runs in this process (the test
    above starts a real one), `train`'s return value recorded on the way.

    The run also shows that the end of a run records what `separate_rounding_ties` moved
    (tests/test_rounding_ties.py checks the moving itself) in metrics.json and in a note."""
    from sgt_tfmot import train as train_cli
    from sgt_tfmot.training import finalise

    calls, returned = [], []
    monkeypatch.setattr(
        finalise, "separate_rounding_ties", lambda model: calls.append(model) or [("bn", 3e-5)]
    )

    def recorded_train(config):
        returned.append(train(config))
        return returned[-1]

    monkeypatch.setattr(train_cli, "train", recorded_train)
    out = tmp_path / "run"
    args = [
        "--model", "mobilenet_tiny", "--dataset", digits, "--max_steps", "4", "--batch_size",
        "32", "--backup_every", "1", "--progress", "0", "--out_dir", str(out),
    ]  # fmt: skip
    assert train_cli.main(["sgt_tfmot.train", *args]) == 0
    said = capsys.readouterr()
    assert f"Results in {out}/" in said.out, said.err[-2000:]
    (metrics,) = returned

    # Every output.
    for name in ("model.h5", "metrics.json", "history.json", "history.csv", "alpha.json",
                 "alpha.png", "flags.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (out / "tensorboard").is_dir() and not (out / "backup").exists()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert saved["optimizer_steps"] == 4 and saved["flags"]["weight_bits"] == 8
    assert saved["wall_time_seconds"] > 0
    alphas = json.loads((out / "alpha.json").read_text())
    assert [h["epoch"] for h in alphas] == [0, 1] and len(alphas[0]["alpha"]) == 9  # PACT layers
    assert set(alphas[0]["alpha"].values()) == {6.0}  # α₀ = 10, capped at 6 for ReLU6
    model = load_model(out)
    x = np.zeros((2, 28, 28, 1), np.float32)
    assert model.predict(x, verbose=0).shape == (2, 10)

    # What `separate_rounding_ties` moved: in metrics.json and in a note.
    assert len(calls) == 1
    assert metrics["rounding_ties_moved"] == [{"layer": "bn", "range_scaled_by": 1 + 3e-5}]
    assert "the range of bn was scaled by 1+3e-05" in said.out

    assert train_cli.main(["sgt_tfmot.train", *args]) == 2  # the same command again
    assert "holds a finished run" in capsys.readouterr().err


MIRRORED = """
from sgt_tfmot.keras import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from sgt_tfmot.training import TrainConfig, train
metrics = train(TrainConfig(model="mobilenet_tiny", dataset={digits!r}, max_steps=2, batch_size=32,
                            progress=0, distribute="mirrored", out_dir={out!r}))
print("replicas", tf.distribute.MirroredStrategy().num_replicas_in_sync, metrics["optimizer_steps"])
"""

# A model file whose BatchNormalization statistics are stale: re-estimated at the start (the
# float model, in the strategy's scope) and judged again at the end (the QAT model). Its own
# process: two mirrored runs in one process mix up their collective ops.
MIRRORED_FILE = """
from sgt_tfmot.keras import keras, tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from sgt_tfmot.training import TrainConfig, train
inputs = keras.Input((28, 28, 1))
x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, strides=2)(inputs))
x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
model = keras.Model(inputs, keras.layers.Dense(10)(x))
model.layers[2].moving_mean.assign(tf.fill([4], 1e4))  # every ReLU input negative
model.save({out!r} + ".h5")
metrics = train(TrainConfig(model={out!r} + ".h5", max_steps=2, batch_size=32, progress=0,
                            distribute="mirrored", out_dir={out!r} + "-file"))
print("file", metrics["optimizer_steps"], metrics["batch_norm_refit"]["images"])
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, said",
    [(MIRRORED, "replicas 2 2"), (MIRRORED_FILE, "file 2 1024")],
    ids=["built-in", "stale file"],
)
def test_mirrored_strategy_on_two_logical_cpus(script, said, digits, tmp_path):
    script = script.format(out=str(tmp_path / "run"), digits=digits)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert said in result.stdout


def test_the_recorded_commands_former_spellings_still_parse():
    """docs/RESULTS.md and the zoo's manifest record commands with --mixed_precision as a
    switch and --verbose 2; they mean --mixed_precision=mixed_bfloat16 and --progress=2."""
    from sgt_tfmot.train import _legacy_spellings

    argv = ["train", "--mixed_precision", "--verbose", "2", "--nomixed_precision", "--verbose"]
    assert _legacy_spellings(argv) == [
        "train", "--mixed_precision=mixed_bfloat16", "--progress=2", "--mixed_precision=float32",
        "--verbose",
    ]  # fmt: skip
    assert _legacy_spellings(["train", "--mixed_precision", "auto"]) == [
        "train", "--mixed_precision", "auto",
    ]  # fmt: skip


@pytest.mark.slow
def test_unsupported_layers_of_a_model_file_are_named_in_one_line(tmp_path, capsys):
    """All of them at once, with what to do in the command line's words (it has no
    `layer_configs`)."""
    from sgt_tfmot import train as train_cli
    from sgt_tfmot.saving import save_model

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Activation("elu", name="elu")(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    path = save_model(model, tmp_path / "mine.h5")
    argv = ["sgt_tfmot.train", "--model", str(path), "--out_dir", str(tmp_path / "run"),
            "--max_steps", "1", "--progress", "0"]  # fmt: skip
    assert train_cli.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        "sgt_tfmot.train: error: 2 layers of the model cannot be quantized: "
        "LayerNormalization: 'norm'; Activation(elu): 'elu'. Supported: "
    )
    assert "(--float)" in line and "`layer_configs" not in line


def test_a_run_from_a_files_weights_at_a_scratch_learning_rate_gets_a_note(tmp_path):
    from sgt_tfmot.training.run import fine_tune_note

    note = fine_tune_note(TrainConfig(model=str(tmp_path / "mine.keras")))
    assert note == (
        f"Note: training starts from the weights of --model {tmp_path / 'mine.keras'} at a peak "
        "--learning_rate of 0.1, a rate for training from scratch; if those weights are "
        "trained, fine-tune at --learning_rate 0.01 to 0.02 to keep what they know (the QAT "
        "fine-tunes of docs/RESULTS.md use 0.02)."
    )
    assert fine_tune_note(TrainConfig(init_from="runs/float", learning_rate=0.05)).startswith(
        "Note: training starts from --init_from runs/float at a peak --learning_rate of 0.05,"
    )
    assert fine_tune_note(TrainConfig(model=str(tmp_path / "mine.h5"), learning_rate=0.02)) is None
    assert fine_tune_note(TrainConfig(model="resnet20")) is None  # a builder: from scratch
