"""`--mixed_precision auto`: mixed_bfloat16 where the hardware computes bfloat16 natively,
float32 elsewhere; both branches with the hardware query mocked, the choice in metrics.json."""

import json

import numpy as np
import pytest

from sgt_tfmot import data, precision
from sgt_tfmot._checks import InputError
from sgt_tfmot.keras import keras
from sgt_tfmot.saving import load_model
from sgt_tfmot.training import TrainConfig, train

# Flags lines as Linux prints them; the first two CPUs have no native bfloat16.
AVX2 = "fpu vme de pse tsc msr pae mce cx8 apic sse sse2 avx avx2 fma"
AVX512 = AVX2 + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        (AVX2, False),
        (AVX512, False),  # AVX-512 alone: oneDNN emulates bfloat16, slower than float32
        (AVX512 + " avx512_bf16", True),  # Cooper Lake, Zen 4
        (AVX512 + " amx_bf16 amx_tile", True),  # Sapphire Rapids and newer
    ],
)
def test_cpu_bfloat16_is_read_from_the_cpu_flags(flags, native, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: {flags}\n\n")
    assert precision.cpu_has_bfloat16(cpuinfo) is native


def test_no_cpu_flags_means_no_bfloat16(tmp_path):
    assert precision.cpu_has_bfloat16(tmp_path / "missing") is False  # not Linux
    (tmp_path / "cpuinfo").write_text("processor\t: 0\n")  # no flags line
    assert precision.cpu_has_bfloat16(tmp_path / "cpuinfo") is False


def hardware(monkeypatch, *, cpu: bool, gpu: bool = False) -> None:
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda *args: cpu)
    monkeypatch.setattr(precision, "gpu_has_bfloat16", lambda: gpu)


@pytest.mark.parametrize(
    ("cpu", "gpu", "policy", "reason"),
    [
        (True, False, "mixed_bfloat16", "the CPU computes bfloat16 natively"),
        (False, True, "mixed_bfloat16", "a GPU with compute capability >= 8.0"),
        (False, False, "float32", "no native bfloat16 on this machine"),
    ],
)
def test_auto_resolves_from_the_hardware(cpu, gpu, policy, reason, monkeypatch):
    hardware(monkeypatch, cpu=cpu, gpu=gpu)
    chosen, why = precision.resolve("auto")
    assert chosen == policy and why.startswith("auto: ") and reason in why


@pytest.mark.parametrize(("bits", "policy"), [(None, "mixed_bfloat16"), (8, "mixed_bfloat16"),
                                              (4, "mixed_bfloat16"), (3, "float32"),
                                              (2, "float32")])  # fmt: skip
def test_auto_trains_low_bit_qat_in_float32(bits, policy, monkeypatch):
    hardware(monkeypatch, cpu=True)
    chosen, why = precision.resolve("auto", bits)
    assert chosen == policy
    if policy == "float32":
        assert why.startswith(f"auto: a {bits}-bit QAT model trains in float32")
    assert precision.resolve("mixed_bfloat16", 2) == ("mixed_bfloat16", "asked for")


def test_an_explicit_choice_ignores_the_hardware(monkeypatch):
    hardware(monkeypatch, cpu=True)
    assert precision.resolve("float32") == ("float32", "asked for")
    hardware(monkeypatch, cpu=False)
    assert precision.resolve("mixed_bfloat16") == ("mixed_bfloat16", "asked for")
    with pytest.raises(InputError, match="`mixed_precision` must be one of 'auto', "):
        precision.resolve("fp16")


class ComputeDtype(keras.callbacks.Callback):
    """Records the compute dtype of the model's convolutions and dense layers at the start."""

    def on_train_begin(self, logs=None):
        weighted = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
        self.dtypes = {
            layer.compute_dtype
            for layer in self.model.layers
            if isinstance(getattr(layer, "layer", layer), weighted)
        }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("native", "policy", "compute"),
    [(True, "mixed_bfloat16", "bfloat16"), (False, "float32", "float32")],
)
def test_train_uses_the_choice_and_writes_it_into_metrics_json(
    native, policy, compute, monkeypatch, tmp_path, capsys
):
    hardware(monkeypatch, cpu=native)
    out = tmp_path / "run"
    config = TrainConfig(model="mobilenet_tiny", sgt=False, max_steps=1, batch_size=16,
                         progress=0, out_dir=str(out))  # fmt: skip
    assert config.mixed_precision == "auto"  # the default
    probe = ComputeDtype()
    metrics = train(config, extra_callbacks=[probe])
    assert f"Precision: {policy} (auto: " in capsys.readouterr().out
    assert probe.dtypes == {compute}  # the model really trained in that precision
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["precision"] == metrics["precision"] == policy
    assert saved["precision_reason"].startswith("auto: ")
    assert saved["flags"]["mixed_precision"] == "auto"
    # The saved model is float32 either way; after a bf16 run its own accuracy is measured.
    model = load_model(out)
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}
    if policy == "float32":
        assert saved["saved_model_test_accuracy"] is None
    else:
        info, arrays = data.open_dataset(config.dataset)
        x, y = arrays.split("test")
        accuracy = np.mean(model.predict(x.astype("float32"), verbose=0).argmax(-1) == y)
        assert saved["saved_model_test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
