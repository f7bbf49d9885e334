"""Every extension point is one registry read at call time: a data source, a model builder, an
attribution method and a deployment target registered while the program runs reach the CLIs'
accepted values, their help, the reports and the checks, like the built-in ones."""

import importlib
import json
import pkgutil

import numpy as np
import pytest

import sgt_tfmot
from sgt_tfmot import _cli, convert, data, models, train as train_cli
from sgt_tfmot._checks import InputError
from sgt_tfmot._registry import Registry
from sgt_tfmot.conversion import checks
from sgt_tfmot.explain import __main__ as explain_cli, attributions, protocols
from sgt_tfmot.explain.evaluate import EvaluationOptions, default_methods
from sgt_tfmot.explain.report import METHOD_NAMES
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite import targets
from sgt_tfmot.training import TrainConfig

# --- four new entries, one of each kind ----------------------------------------------------


class Stripes(data.DataSource):
    """`stripes:N`: N images per split and class, 8x8 grey, horizontal or vertical stripes."""

    name, reference = "stripes", "stripes:N (N striped 8x8 images per class and split)"

    def claims(self, reference, data_dir):
        return reference.startswith("stripes:")

    def load(self, reference, data_dir, options):
        count = int(reference.split(":", 1)[1])
        rng = np.random.default_rng(0)
        rows = np.indices((8, 8))[0] % 2  # horizontal stripes; .T vertical
        splits = []
        for _ in ("train", "test"):
            labels = np.tile([0, 1], count)
            stripes = np.where(labels[:, None, None] == 0, rows, rows.T)
            noise = rng.integers(0, 40, (2 * count, 8, 8))
            splits += [(stripes * 200 + noise).astype(np.uint8), labels]
        return data.check_arrays(*splits, class_names=("horizontal", "vertical"),
                                 source=f"{count} striped images per class")  # fmt: skip


def tinynet(input_shape, num_classes, *, mean=None, std=None, weight_decay=1e-4, name="tinynet"):
    mean = np.broadcast_to(127.5 if mean is None else mean, input_shape[-1:])
    std = np.broadcast_to(127.5 if std is None else std, input_shape[-1:])
    layers = keras.layers
    inputs = keras.Input(input_shape, name="images")
    scale, offset = (1 / std).tolist(), (-mean / std).tolist()  # lists: a serializable config
    x = layers.Rescaling(scale, offset, name="normalization")(inputs)
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


class TinyNet(models.ModelBuilder):
    name, title = "tinynet", "one convolution and a dense layer"
    build = staticmethod(tinynet)


class GradientTimesInput(attributions.Attribution):
    """S = |x · ∂f_y/∂x| (Shrikumar et al. 2016), one value per input feature."""

    name, title, per_pixel = "gradxinput", "gradient × input", False

    def features(self, model, images, targets, options=None):
        signed = attributions.input_gradients(model, images, targets, absolute=False)
        return np.abs(np.asarray(images, np.float32) * signed)


class FlashBudget(targets.Target):
    """Compatible when the file fits a flash budget (in bytes)."""

    name, title, budget = "flash_budget", "a 64 kB flash budget", 64 * 1024

    def check(self, context):
        size = len(context.flatbuffer)
        fits = size <= self.budget
        failure = None if fits else f"{size:,} bytes exceed the flash budget of {self.budget:,}"
        return targets.TargetReport(
            self.name, self.title, fits, failure, (f"{size:,} of {self.budget:,} bytes",),
            {"bytes": size, "budget": self.budget},
        )  # fmt: skip


@pytest.fixture
def registered():
    """The four new entries, registered for one test."""
    entries = [(data, Stripes()), (models, TinyNet()), (attributions, GradientTimesInput()),
               (targets, FlashBudget())]  # fmt: skip
    for module, entry in entries:
        assert not module.supports(entry.name)
        module.register(entry)
    yield
    for module, entry in entries:
        module.unregister(entry.name)


def help_text(cli, capsys) -> str:
    assert cli.main(["prog", "--help"]) == 0
    return capsys.readouterr().out


# --- the registry --------------------------------------------------------------------------


class Thing:
    def __init__(self, name):
        self.name = name


def test_a_registry_looks_up_its_entries_when_called():
    registry = Registry("thing", Thing, "thing", [Thing("a"), Thing("b")])
    assert registry.names() == ("a", "b") and registry.supports("a")
    assert not registry.supports("c") and not registry.supports(["a"])
    with pytest.raises(InputError, match=r"^`thing` must be one of 'a', 'b'\. Received: thing='c'"):
        registry.get("c")
    with pytest.raises(InputError, match=r"^`other` must be one of 'a', 'b'"):
        registry.get("c", "other")
    c = registry.register(Thing("c"), before="b")
    assert registry.names() == ("a", "c", "b") and registry.get("c") is c
    assert registry.names(lambda thing: thing.name != "a") == ("c", "b")
    assert registry.parse("b, a") == ("b", "a")
    with pytest.raises(InputError, match=r"must name each of 'a', 'c', 'b' at most once"):
        registry.parse("a,a")
    replaced = registry.register(Thing("a"))
    assert registry.names() == ("c", "b", "a") and registry.get("a") is replaced
    assert registry.unregister("c") is c and list(registry) == [registry.get("b"), replaced]
    for bad in (object(), Thing(""), "a"):
        with pytest.raises(TypeError, match=r"A thing is a `Thing` instance with a `name`"):
            registry.register(bad)


@pytest.mark.parametrize(
    "module, base",
    [
        (data, data.DataSource),
        (models, models.ModelBuilder),
        (attributions, attributions.Attribution),
        (protocols, protocols.Protocol),
        (targets, targets.Target),
    ],
)
def test_each_extension_point_is_one_registry_of_its_base_class(module, base):
    assert isinstance(module.REGISTRY, Registry) and module.REGISTRY.base is base
    text = "reference" if module is data else "title"  # what help texts show of an entry
    assert all(isinstance(entry, base) and getattr(entry, text) for entry in module.REGISTRY)
    assert module.names() == module.REGISTRY.names() and len(module.names()) >= 3
    assert all(module.get(name).name == name and module.supports(name) for name in module.names())


def _package_modules():
    paths = [(sgt_tfmot.__path__, "sgt_tfmot.")]
    paths += [(importlib.import_module(f"sgt_tfmot.{sub}").__path__, f"sgt_tfmot.{sub}.")
              for sub in ("tflite", "trainers")]  # fmt: skip
    for path, prefix in paths:
        for info in pkgutil.walk_packages(path, prefix):
            yield importlib.import_module(info.name)


def test_no_module_keeps_a_copy_of_a_registrys_names():
    lists = {"data": data.names(), "models": models.names(), "targets": targets.names(),
             "protocols": protocols.names(), "attributions": attributions.names(),
             "feature methods": attributions.feature_methods(),
             "layer methods": attributions.layer_methods(),
             "gradient methods": attributions.names(gradient_free=False)}  # fmt: skip
    copies = []
    for module in _package_modules():
        for attribute, value in vars(module).items():
            if isinstance(value, tuple | list) and len(value) > 1:
                for kind, names in lists.items():
                    if tuple(value) in (names, tuple(sorted(names))):
                        copies.append(f"{module.__name__}.{attribute} copies the {kind}")
    assert copies == []


# --- a new entry of each kind, without running anything slow -------------------------------


def test_a_new_data_source_is_claimed_before_tfds_and_listed(registered, capsys):
    assert data.names()[-2:] == ("stripes", "tfds")
    info = data.info("stripes:6")
    assert info.image_shape == (8, 8, 1) and info.num_classes == 2 and info.train_size == 12
    assert info.class_names == ("horizontal", "vertical")
    assert info.source == "6 striped images per class"
    x, y = data.load_arrays("stripes:6", "test")
    assert (x[y == 0][:, 1] > x[y == 0][:, 0]).all()  # odd rows bright: horizontal stripes
    assert (x[y == 1][:, :, 1] > x[y == 1][:, :, 0]).all()  # odd columns bright
    assert _cli.resolve_dataset("stripes:6", None, [])[0] == "stripes:6"
    for cli in (train_cli, convert, explain_cli):
        assert "stripes:N (N striped 8x8 images" in help_text(cli, capsys).replace("\n    ", " ")


def test_a_new_model_builder_is_accepted_built_and_listed(registered, capsys, tmp_path):
    assert TrainConfig(model="tinynet", out_dir=str(tmp_path)).check().model == "tinynet"
    model = models.build("tinynet", (8, 8, 1), 2, mean=(100.0,), std=(50.0,))
    assert model.name == "tinynet" and model.output_shape == (None, 2)
    assert models.takes("tinynet", "mean") and not models.takes("tinynet", "width")
    with pytest.raises(InputError, match=r"--width applies to mobilenet_v2; --model is 'tinynet'"):
        TrainConfig(model="tinynet", width=0.5, out_dir=str(tmp_path)).check()
    with pytest.raises(InputError, match=r"Known models: .*'tinynet', or a \.h5/\.keras file"):
        models.build("vgg", (8, 8, 1), 2)
    text = help_text(train_cli, capsys).replace("\n    ", " ")
    assert "tinynet = one convolution and a dense layer" in text


def test_a_new_attribution_method_is_accepted_computed_and_named(registered, capsys):
    # A linear model f = x·W + b: ∂f_y/∂x = W[:, y], so S = |x · W[:, y]| per feature.
    inputs = keras.Input((2, 2, 1))
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    kernel = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    model.layers[-1].set_weights([kernel, np.zeros(3, np.float32)])
    images = np.random.default_rng(0).normal(size=(5, 2, 2, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 1, 0])
    expected = np.abs(images.reshape(5, 4) * kernel[:, labels].T).reshape(images.shape)
    found = attributions.saliency_maps(model, images, labels, method="gradxinput")
    np.testing.assert_allclose(found, expected, rtol=1e-6)
    maps = attributions.attribution_maps(model, images, labels, "gradxinput")
    np.testing.assert_allclose(maps, expected[..., 0], rtol=1e-6)  # one channel: the same
    assert "gradxinput" in attributions.feature_methods() and "gradxinput" in default_methods()
    options = EvaluationOptions(methods=["vanilla", "gradxinput"], curve_method="gradxinput")
    assert options.methods == ("vanilla", "gradxinput")
    assert METHOD_NAMES["gradxinput"] == "gradient × input"
    assert "any of vanilla, smoothgrad, gradcam, gradcampp, occlusion, gradxinput" in (
        help_text(explain_cli, capsys).replace("\n    ", " ")
    )
    assert "any of vanilla, smoothgrad, gradxinput." in (
        help_text(convert, capsys).replace("\n    ", " ")
    )


def test_a_new_target_is_required_by_name_and_gates(registered, capsys):
    thresholds = checks.Thresholds(require=("flash_budget",))
    assert thresholds.require == ("flash_budget",)
    with pytest.raises(InputError, match=r"`require` must be one of 'edgetpu', 'mediapipe', "
                       r"'tflm', 'flash_budget'\. Received: require='flash'"):  # fmt: skip
        checks.Thresholds(require=("flash",))
    context = targets.TargetContext(bytes(70_000), "m.tflite", np.zeros((0, 8, 8, 1)), None, None)
    report = targets.get("flash_budget").check(context)
    assert report.compatible is False and report.to_dict()["bytes"] == 70_000
    accuracy = checks.AccuracyComparison(0.9, 0.9, 1.0, 10)
    assert checks.gate(thresholds, accuracy, None, [report]) == [
        "70,000 bytes exceed the flash budget of 65,536 and --require flash_budget is set"
    ]
    assert checks.gate(checks.Thresholds(), accuracy, None, [report]) == []
    text = help_text(convert, capsys).replace("\n    ", " ")
    assert "tflm (TensorFlow Lite Micro), flash_budget (a 64 kB flash budget)." in text


def test_unregistered_entries_are_gone_everywhere(capsys):
    assert not data.supports("stripes") and not models.supports("tinynet")
    with pytest.raises(InputError, match=r"`methods` must each be one of .*Received: "):
        EvaluationOptions(methods=["gradxinput"])
    assert "flash_budget" not in help_text(convert, capsys)


# --- end to end: train, convert and explain with the four new entries -----------------------


@pytest.mark.slow
def test_new_entries_reach_the_run_the_reports_and_the_gate(registered, tmp_path, capsys):
    run, tflite, report = tmp_path / "run", tmp_path / "m.tflite", tmp_path / "report.json"
    assert train_cli.main(["train", "--dataset", "stripes:64", "--model", "tinynet",
                           "--max_steps", "6", "--batch_size", "32", "--progress", "0",
                           "--out_dir", str(run)]) == 0  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["flags"]["model"] == "tinynet" and metrics["flags"]["dataset"] == "stripes:64"
    assert (run / "labels.txt").read_text().split() == ["horizontal", "vertical"]

    code = convert.main(["convert", "--int8", str(run), "--output", str(tflite), "--report",
                         str(report), "--require", "flash_budget", "--saliency", "gradxinput",
                         "--fidelity_images", "32", "--occlusion_images", "0",
                         "--max_accuracy_drop", "100", "--min_agreement", "0",
                         "--max_fidelity_gap", "100"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    section = json.loads(report.read_text())
    assert section["targets"]["flash_budget"] == {
        "compatible": True, "failure": None, "bytes": tflite.stat().st_size, "budget": 65536
    }  # fmt: skip
    assert section["fidelity"]["method"] == "gradxinput"
    assert f"{tflite.stat().st_size:,} of 65,536 bytes" in out

    code = explain_cli.main(["explain", "--model", str(run), "--out_dir", str(tmp_path / "x"),
                             "--methods", "vanilla,gradxinput", "--curve_method", "gradxinput",
                             "--protocol", "pixel", "--curve_images", "32",
                             "--agreement_images", "8", "--num_images", "2"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert set(summary["models"][0]["sanity"]) == {"vanilla", "gradxinput"}
    text = (tmp_path / "x" / "report.md").read_text()
    assert "gradient × input" in text
