"""A command's advice names only flags that command has: `--trust_model_code` exists on
train too, and the advice for an unquantizable layer names no API argument as a flag."""

import json
import re

import numpy as np
import pytest

from sgt_tfmot import train as train_cli
from sgt_tfmot._checks import InputError
from sgt_tfmot.keras import keras
from tests.helpers.data import write_bars_npz


def lambda_model_file(path):
    """A 12x12x1, 3-class classifier with a Lambda layer (Python code in the file)."""
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale_by_code")(inputs)
    x = keras.layers.Conv2D(2, 3, name="conv")(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(path)
    return path


def named_flags(message: str) -> set[str]:
    return set(re.findall(r"--(\w+)", message))


def run_train(capsys, *args) -> tuple[int, str]:
    code = train_cli.main(["train", *args])
    return code, capsys.readouterr().err


def test_the_advice_for_code_in_a_model_file_names_a_flag_train_has(tmp_path, capsys):
    path = lambda_model_file(tmp_path / "lambda.h5")
    data = write_bars_npz(tmp_path / "bars.npz")
    common = [f"--model={path}", f"--dataset={data}", f"--out_dir={tmp_path / 'run'}",
              "--max_steps=1", "--batch_size=16", "--progress=0"]  # fmt: skip
    code, err = run_train(capsys, *common)
    assert code == 2 and err.count("\n") == 1, err
    assert "layer 'scale_by_code' is a Lambda layer" in err and "--trust_model_code" in err
    assert named_flags(err) <= set(train_cli.FLAGS), err
    # With the flag the file loads; quantizing its Lambda is refused in command-line words.
    code, err = run_train(capsys, *common, "--trust_model_code", "--overwrite")
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot be quantized: Lambda: 'scale_by_code' (Lambda layers cannot be" in err
    assert "Replace it with a supported layer in the model file" in err
    assert "`layer_configs=" not in err and named_flags(err) <= set(train_cli.FLAGS), err


@pytest.mark.slow
def test_trust_model_code_trains_a_float_lambda_model(tmp_path, capsys):
    path = lambda_model_file(tmp_path / "lambda.h5")
    data = write_bars_npz(tmp_path / "bars.npz")
    code, err = run_train(
        capsys, f"--model={path}", f"--dataset={data}", f"--out_dir={tmp_path / 'run'}",
        "--max_steps=1", "--batch_size=16", "--progress=0", "--float", "--nosgt",
        "--mixed_precision=float32", "--trust_model_code",
    )  # fmt: skip
    assert code == 0, err
    assert np.isfinite(json.loads((tmp_path / "run" / "metrics.json").read_text())["test_loss"])


def test_input_error_has_api_and_command_line_wording():
    error = InputError("use `layer_configs={...}`", cli="replace the layer")
    assert str(error) == "use `layer_configs={...}`"
    assert error.for_flags() == "replace the layer"
    assert InputError("must be >= 1", "num_test", 0).for_flags() == (
        "--num_test must be >= 1. Received: 0"
    )
