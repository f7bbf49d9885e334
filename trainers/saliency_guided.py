"""Saliency-Guided Training (SGT) as a `keras.Model.train_step` override.

`SaliencyGuidedModel(model)` wraps a Functional (or Sequential) classifier and trains it with
the SGT step of Ismail, Corrada Bravo & Feizi (NeurIPS 2021), Algorithm 1 of Maleki et al.
(arXiv 2412.03915); on a QAT model from `sgt_tfmot.quantize_model` this is their Algorithm 2
(SGT + PACT). For a batch (x, y), with f the wrapped model in training mode:

    z   = f(x)                                     one forward pass, shared by 1. and 4.
    S   = ∂ z[target] / ∂x                         target = true label or predicted class
    M   = the ⌊mask_fraction · n⌋ lowest-saliency units, pixels or patches (`sgt_tfmot.masking`)
    x̃   = where(M, fill, x)
    L   = compiled_loss(y, z) + Σ model.losses + kl_weight · KL(softmax z ‖ softmax f(x̃))

then one optimizer step on L. Gradients flow through both f(x) and f(x̃); the saliency itself
is a constant (no second-order graph). `test_step`/`predict` are the wrapped model's own.

Example:

>>> import numpy as np
>>> from sgt_tfmot.keras import keras
>>> inputs = keras.Input((8, 8, 1))
>>> h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
>>> outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
>>> sgt = SaliencyGuidedModel(keras.Model(inputs, outputs), kl_weight=0.1, seed=0)
>>> sgt.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> history = sgt.fit(np.zeros((4, 8, 8, 1)), np.arange(4), verbose=0)
>>> sorted(history.history)
['cross_entropy', 'kl', 'loss', 'masked_accuracy']
>>> sgt.save_inner_model("classifier.keras")   # the plain Functional model, for export
"""

from __future__ import annotations

import random

from sgt_tfmot import _checks, heads, keras3, masking
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.trainers.multi_worker import report_synchronised_metrics

TARGETS = ("label", "predicted")

_NON_FINITE_MESSAGE = "SaliencyGuidedModel: the input batch contains NaN or Inf values"

__all__ = ["SaliencyGuidedModel"]


def _check_model(model) -> None:
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError(
            "`model` must be a Functional or Sequential tf_keras classifier with a defined "
            f"input (build Sequential models with an Input). Received: {model!r}"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "SGT needs a model with exactly one input and one output. Received a model with "
            f"{len(model.inputs)} input(s) and {len(model.outputs)} output(s)."
        )
    shape = model.outputs[0].shape
    if shape.rank != 2 or shape[-1] is None or shape[-1] < 2:
        raise ValueError(
            "SGT needs a classifier output of shape (batch, num_classes) with num_classes >= 2 "
            f"(logits or softmax). Received output shape: {tuple(shape)}"
        )


def _check_seed(seed):
    if seed is None:
        return random.randint(0, 2**31 - 1)  # follows keras.utils.set_random_seed
    return _checks.check_int(seed, "seed", 0)


def _class_ids(y: tf.Tensor, num_classes: int) -> tuple[tf.Tensor, bool]:
    """Class ids (B,) from integer ids (B,) / (B, 1) or one-hot (B, num_classes) labels.

    Decided at trace time from the static shape and dtype. Returns (ids, is_one_hot).
    """
    shape, dtype = y.shape, y.dtype
    if shape.rank in (1, 2) and (shape.rank == 1 or shape[-1] == 1):
        if dtype.is_integer:
            return tf.reshape(tf.cast(y, tf.int32), [-1]), False
    elif shape.rank == 2 and shape[-1] == num_classes and (dtype.is_floating or dtype.is_integer):
        return tf.argmax(y, axis=-1, output_type=tf.int32), True
    raise ValueError(
        "Labels must be integer class ids of shape (batch,) or (batch, 1), or one-hot of "
        f"shape (batch, {num_classes}). Received labels of shape {tuple(shape)} and dtype "
        f"{dtype.name} (cast float class ids to an integer dtype)."
    )


def _checked_batch(x, y, num_classes: int) -> tuple[tf.Tensor, tf.Tensor, bool]:
    """(x as floats, class ids, labels are one-hot) of a training batch; x passes through an
    in-graph check that stops the step, before anything runs or updates, on NaN or Inf."""
    if y is None:
        raise ValueError("SaliencyGuidedModel needs labels: call fit(x, y) or yield (x, y).")
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    ids, one_hot = _class_ids(tf.convert_to_tensor(y), num_classes)
    finite = tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(x)), [_NON_FINITE_MESSAGE], name="sgt_inputs_finite"
    )
    with tf.control_dependencies([finite]):  # nothing runs, nor updates, on a bad batch
        x = tf.identity(x)
    return x, ids, one_hot


_SPARSE_LOSSES = ("SparseCategoricalCrossentropy", "sparse_categorical_crossentropy")
_ONE_HOT_LOSSES = ("CategoricalCrossentropy", "categorical_crossentropy")


def _label_spec(x, y) -> tuple[tuple, bool] | None:
    """(shape, is integer) of the labels `fit` will see, when known without reading data."""
    if y is not None:
        shape, dtype = getattr(y, "shape", None), getattr(y, "dtype", None)
        if shape is None or dtype is None:
            return None
        integer = (
            tf.as_dtype(dtype).is_integer if not hasattr(dtype, "kind") else dtype.kind in "iu"
        )
        return tuple(shape), integer
    spec = getattr(x, "element_spec", None)
    if isinstance(spec, tuple) and len(spec) >= 2 and isinstance(spec[1], tf.TensorSpec):
        return tuple(spec[1].shape), spec[1].dtype.is_integer
    return None


def _check_labels_suit_loss(loss, spec, num_classes: int) -> None:
    """One clear error for one-hot labels with a sparse loss, and the reverse."""
    if spec is None:
        return
    name = loss if isinstance(loss, str) else type(loss).__name__
    shape, integer = spec
    one_hot = len(shape) == 2 and shape[-1] == num_classes and num_classes > 1
    ids = len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1)
    if name in _SPARSE_LOSSES and one_hot:
        raise ValueError(
            f"The labels are one-hot, shape {shape}, but the loss {name} takes class ids of "
            "shape (batch,): pass y.argmax(-1), or compile with CategoricalCrossentropy."
        )
    if name in _ONE_HOT_LOSSES and ids and integer:
        raise ValueError(
            f"The labels are class ids, shape {shape}, but the loss {name} takes one-hot "
            "labels: compile with SparseCategoricalCrossentropy, or one-hot encode them."
        )


def _log_probabilities(y_pred: tf.Tensor, from_logits: bool) -> tf.Tensor:
    """log softmax(z) for logits, log(clip(p, ε, 1)) for probabilities; in float32."""
    y_pred = tf.cast(y_pred, tf.float32)
    if from_logits:
        return tf.nn.log_softmax(y_pred, axis=-1)
    return tf.math.log(tf.clip_by_value(y_pred, keras.backend.epsilon(), 1.0))


def kl_divergence(log_p: tf.Tensor, log_q: tf.Tensor) -> tf.Tensor:
    """Per-example KL(p ‖ q) = Σ_c p_c (log p_c − log q_c) from log-probabilities (B, C).

    Gradients flow into both arguments (SGT trains both branches).
    """
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


@keras.utils.register_keras_serializable(package="sgt_tfmot")
class SaliencyGuidedModel(keras.Model):
    """Trains a wrapped classifier with Saliency-Guided Training (SGT).

    One SGT step on a batch (x, y), see the module docstring for the formulas:
    1. z = f(x) once, in training mode, under the gradient tape of the update, with an inner
       tape on x; S = ∂ z[target]/∂x, taken with the outer tape paused (no second order);
    2. M = `saliency_mask(S, mask_fraction, reduce_channels, rank_by=saliency, patch_size)`;
    3. x̃ = `mask_input(x, M, fill, blur_sigma=..., impute_noise=...)`;
    4. L = compiled_loss(y, z) + Σ model.losses (e.g. PACT's α L2) + kl_weight · KL(p(x)‖p(x̃)),
       z reused from 1.; gradients reach the weights through both f(x) and f(x̃);
    5. `optimizer.minimize(L)`.

    Reported metrics: "loss" (L), "cross_entropy" (CE of f(x), for the record even when the
    compiled loss is something else), "kl", the compiled metrics on f(x), and
    "masked_accuracy" (accuracy of f(x̃)). `evaluate`, `predict` and `test_step` are those of
    the wrapped model (validation "loss" = compiled loss + regularization).

    Outputs: logits or softmax probabilities. With `from_logits=None` the kind is detected:
    an output layer with `activation="softmax"`, or a final `Softmax` layer (also inside TFMOT
    quantize wrappers), means probabilities; anything else means logits. Pass the flag to
    override. The saliency is taken on the output as it is (logit or probability of the target).

    Semantics to know:
    * Both forwards run in training mode (as in the original SGT code): BatchNormalization
      uses batch statistics in both; in training mode BN also couples the samples of a batch,
      so S includes the (small) cross-sample terms of the batch statistics.
    * Moving statistics (BatchNormalization's moving mean and variance, the EMA ranges of
      quantizers) follow the clean batches only: the state the masked forward writes is put
      back right after it. Masked images (half their pixels noise) have other statistics than
      the images the model will see; letting them into BN's moving variance cost 5 points of
      CIFAR-10 test accuracy (docs/RESULTS.md). `update_masked_statistics=True` keeps the
      original SGT code's behaviour (both forwards update them).
    * Distribution: the KL term is averaged like Keras's compiled loss (per-replica mean
      divided by the number of replicas), so with equal per-replica batches the summed update
      equals the one-device update on the global batch. The random fill draws its noise for
      the whole global batch from (seed, step) and each replica takes its own rows, so the
      masked inputs do not depend on the number of replicas either. The logged metrics are
      those of the global batch (`report_synchronised_metrics`).
    * Randomness: the random fill and the imputation's noise use a stateless RNG seeded with
      (seed, optimizer.iterations): a fixed seed gives the same run twice. Dropout inside the
      model uses TensorFlow's own RNG.
    * mixed_bfloat16: saliency, KL and the metrics are computed in float32.
    * Non-float inputs (e.g. uint8 images) are cast to float32 first. A batch with NaN or Inf
      stops training with a `ValueError`.

    Args:
      model: a Functional or Sequential classifier with one input, channels-last, and one
        output (batch, num_classes); a float model or a QAT model from `quantize_model`. A
        Keras 3 model is trained as its tf_keras translation (`sgt_tfmot.from_keras3`,
        `self.model`); the Keras 3 object itself is left unchanged.
      mask_fraction: share of the units (pixels, or patches) masked per sample, in (0, 1).
        Default 0.5 (paper).
      kl_weight: λ ≥ 0, weight of the KL term. Default 1.0, the original SGT code; the paper
        uses 0.1 (MNIST) and 0.05 (CIFAR-10).
      fill: "random" (default; uniform in each sample's [min, max] per channel, the original
        SGT fill), "zero", "mean" (sample's per-channel mean), "blur" (a Gaussian blur of the
        image, σ = `blur_sigma`), "impute" (ROAD's noisy linear imputation from the kept
        neighbours, noise `impute_noise`) or a callable `fill(x, mask) -> values` (register
        it as a Keras serializable to save the model). "blur" and "impute" take images
        (batch, height, width, channels); see `sgt_tfmot.masking.fill_values`.
      saliency: rank by "abs" (|S|, default) or "signed" (S, as the original code).
      patch_size: mask p x p patches ranked by their summed saliency (default 1: single
        pixels, the original SGT); must divide the input's height and width.
      blur_sigma: σ of the "blur" fill in pixels, in (0, 1000]. Default 2.
      impute_noise: noise of the "impute" fill, a share of the sample's range per channel,
        in [0, 1]. Default 0.01 (ROAD).
      reduce_channels: one mask per pixel from the channel "mean" (default, original) or
        "max" of the saliency, or None to rank every feature on its own.
      target: "label" (default, saliency of the true class) or "predicted" (argmax of f(x)).
      from_logits: True, False, or None to detect from the output layer (see above).
      seed: seed of the random fill; None draws one with Python's `random` (fixed by
        `keras.utils.set_random_seed`).
      update_masked_statistics: let the masked forward update the moving statistics too
        (default False, see above).
      **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
      ValueError: on a bad argument or a model that is not a single-output classifier; at the
        first `fit` step on labels that are neither integer class ids nor one-hot; during
        `fit` on inputs with NaN or Inf.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        mask_fraction: float = 0.5,
        kl_weight: float = 1.0,
        fill: str | masking.FillFn = "random",
        saliency: str = "abs",
        patch_size: int = 1,
        blur_sigma: float = masking.DEFAULT_BLUR_SIGMA,
        impute_noise: float = masking.DEFAULT_IMPUTE_NOISE,
        reduce_channels: str | None = "mean",
        target: str = "label",
        from_logits: bool | None = None,
        seed: int | None = None,
        update_masked_statistics: bool = False,
        **kwargs,
    ):
        if keras3.is_keras3_model(model):  # trained as its tf_keras translation
            model = keras3.from_keras3(model)
        _check_model(model)
        mask_fraction = _checks.check_open_fraction(mask_fraction, "mask_fraction")
        kl_weight = _checks.check_number(kl_weight, "kl_weight", 0.0)
        if not callable(fill):
            _checks.check_choice(fill, masking.FILLS, "fill")
        _checks.check_choice(saliency, masking.RANKINGS, "saliency")
        input_shape = model.inputs[0].shape
        patch_size = masking.check_patch_size(patch_size, input_shape[1:-1])
        blur_sigma = _checks.check_number(
            blur_sigma, "blur_sigma", 0.0, masking.MAX_BLUR_SIGMA, low_open=True
        )
        impute_noise = _checks.check_number(impute_noise, "impute_noise", 0.0, 1.0)
        if fill in masking.IMAGE_FILLS and input_shape.rank != 4:
            raise _checks.InputError(
                f"{fill!r} takes images (batch, height, width, channels); the model's input "
                f"has shape {tuple(input_shape)}",
                "fill",
                fill,
            )
        if reduce_channels == "none":
            reduce_channels = None
        _checks.check_choice(reduce_channels, masking.CHANNEL_REDUCTIONS, "reduce_channels")
        _checks.check_choice(target, TARGETS, "target")
        if from_logits is not None:
            from_logits = _checks.check_bool(from_logits, "from_logits")
        seed = _check_seed(seed)
        _checks.check_bool(update_masked_statistics, "update_masked_statistics")
        super().__init__(**kwargs)
        self.model = model
        self.mask_fraction = mask_fraction
        self.kl_weight = kl_weight
        self.fill = fill
        self.saliency = saliency
        self.patch_size = patch_size
        self.blur_sigma = blur_sigma
        self.impute_noise = impute_noise
        self.reduce_channels = reduce_channels
        self.target = target
        self.from_logits = (
            heads.output_head(model) == heads.LOGITS if from_logits is None else from_logits
        )
        self.seed = seed
        self.update_masked_statistics = update_masked_statistics
        self.num_classes = int(model.outputs[0].shape[-1])
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.masked_accuracy_tracker = keras.metrics.Mean(name="masked_accuracy")
        report_synchronised_metrics(self)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, after checking that the labels suit the compiled loss."""
        _check_labels_suit_loss(self.loss, _label_spec(x, y), self.num_classes)
        return super().fit(x, y, *args, **kwargs)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    # ----------------------------------------------------------------------------- steps
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, ids, one_hot = _checked_batch(x, y, self.num_classes)
        weights = None if sample_weight is None else tf.cast(sample_weight, tf.float32)

        with tf.GradientTape() as tape:
            # 1. one forward pass, and the input gradient of its target score.
            y_pred, grads = self._forward_and_saliency(x, ids, tape)
            regularization = list(self.losses)  # weight L2 (PACT's α) + f(x)'s activity losses
            # 2.-3. mask and fill (constants for the update), then f(x̃).
            y_pred_masked = self._masked_forward(x, grads, tape)

            # 4. loss; KL averaged per replica like the compiled loss (see class docstring).
            log_p = _log_probabilities(y_pred, self.from_logits)
            log_q = _log_probabilities(y_pred_masked, self.from_logits)
            kl = kl_divergence(log_p, log_q)
            kl_term = self.kl_weight * _batch_mean(kl, weights)
            loss = self.compiled_loss(
                y, y_pred, sample_weight, regularization_losses=regularization + [kl_term]
            )
        # 5. update.
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)

        self._update_sgt_metrics(y, ids, one_hot, log_p, log_q, kl, weights)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return self.get_metrics_result()

    def _forward_and_saliency(self, x, ids, tape):
        """z = f(x) in training mode (recorded by `tape`), and S = ∂ z[target] / ∂x from an
        inner tape on x, taken with `tape` paused: a constant for the update."""
        with tf.GradientTape(watch_accessed_variables=False) as input_tape:
            input_tape.watch(x)
            y_pred = self(x, training=True)
            target = ids if self.target == "label" else tf.argmax(y_pred, -1, tf.int32)
            score = tf.reduce_sum(
                tf.gather(tf.cast(y_pred, tf.float32), target[:, None], batch_dims=1)
            )
        with tape.stop_recording():
            grads = tf.stop_gradient(input_tape.gradient(score, x))
        return y_pred, grads

    def _masked_forward(self, x, grads, tape):
        """f(x̃) in training mode, x̃ = x with its lowest-saliency features filled (mask and
        fill are made with `tape` paused); the moving statistics f(x̃) wrote are put back
        unless `update_masked_statistics`."""
        with tape.stop_recording():
            mask = masking.saliency_mask(
                grads, self.mask_fraction, self.reduce_channels, rank_by=self.saliency,
                patch_size=self.patch_size,
            )  # fmt: skip
            distribution = masking.noise_distribution(self.fill)
            noise = self._fill_noise(x, distribution) if distribution else None
            x_masked = masking.mask_input(
                x, mask, self.fill, noise=noise, blur_sigma=self.blur_sigma,
                impute_noise=self.impute_noise,
            )  # fmt: skip
            state = [] if self.update_masked_statistics else _forward_state(self.model)
            clean_state = [tf.identity(variable) for variable in state]
        y_pred_masked = self(x_masked, training=True)
        with tape.stop_recording():
            for variable, value in zip(state, clean_state, strict=True):  # after f(x̃)'s updates
                variable.assign(value)
        return y_pred_masked

    def _update_sgt_metrics(self, y, ids, one_hot: bool, log_p, log_q, kl, weights) -> None:
        """cross_entropy (of f(x), whatever the compiled loss), kl and masked_accuracy."""
        if one_hot:
            cross_entropy = -tf.reduce_sum(tf.cast(y, tf.float32) * log_p, axis=-1)
        else:
            cross_entropy = -tf.gather(log_p, ids[:, None], batch_dims=1)[:, 0]
        masked_correct = tf.cast(tf.equal(tf.argmax(log_q, -1, tf.int32), ids), tf.float32)
        self.cross_entropy_tracker.update_state(cross_entropy, weights)
        self.kl_tracker.update_state(kl, weights)
        self.masked_accuracy_tracker.update_state(masked_correct, weights)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        self.compute_loss(x, y, y_pred, sample_weight)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        results = {}
        for metric in self.compiled_loss.metrics + self.compiled_metrics.metrics:
            result = metric.result()
            results.update(result if isinstance(result, dict) else {metric.name: result})
        return results

    def _fill_noise(self, x: tf.Tensor, distribution: str = "uniform") -> tf.Tensor:
        """The fill's noise, U[0, 1) ("uniform", the random fill) or N(0, 1) ("normal", the
        imputation), a function of (seed, step, global sample index).

        Under a distribution strategy every replica draws the noise of the whole global batch
        and keeps its own rows, so the masked batch does not depend on the replica count.
        """
        seed = tf.stack(
            [tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)]
        )
        shape = tf.shape(x)
        draw = {"uniform": tf.random.stateless_uniform, "normal": tf.random.stateless_normal}
        draw = draw[distribution]
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return draw(shape, seed=seed, dtype=x.dtype)
        sizes = context.all_gather(shape[:1], axis=0)
        offset = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
        global_shape = tf.concat([[tf.reduce_sum(sizes)], shape[1:]], axis=0)
        noise = draw(global_shape, seed=seed, dtype=x.dtype)
        return noise[offset : offset + shape[0]]

    def make_train_function(self, force=False):
        """Keras's train function, with the in-graph NaN/Inf check turned into a ValueError."""
        if self.train_function is not None and not force:
            return self.train_function
        train_function = super().make_train_function(force=force)

        def checked_train_function(*args, **kwargs):
            try:
                return train_function(*args, **kwargs)
            except tf.errors.InvalidArgumentError as error:
                if _NON_FINITE_MESSAGE not in str(error):
                    raise
                raise ValueError(
                    f"{_NON_FINITE_MESSAGE}; SGT stops instead of training on them. Clean or "
                    "normalize the data (e.g. check with np.isfinite(x).all())."
                ) from None

        self.train_function = checked_train_function
        return checked_train_function

    # ----------------------------------------------------------------------------- saving
    def save_inner_model(self, filepath, **kwargs) -> None:
        """Saves only the wrapped Functional model (`model.save`), e.g. for TFLite export."""
        self.model.save(filepath, **kwargs)

    def get_config(self) -> dict:
        fill = (
            self.fill
            if isinstance(self.fill, str)
            else keras.utils.serialize_keras_object(self.fill)
        )
        return {
            "name": self.name,
            "model": keras.layers.serialize(self.model),
            "mask_fraction": self.mask_fraction,
            "kl_weight": self.kl_weight,
            "fill": fill,
            "saliency": self.saliency,
            "patch_size": self.patch_size,
            "blur_sigma": self.blur_sigma,
            "impute_noise": self.impute_noise,
            "reduce_channels": self.reduce_channels,
            "target": self.target,
            "from_logits": self.from_logits,
            "seed": self.seed,
            "update_masked_statistics": self.update_masked_statistics,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from sgt_tfmot.quantize import quantize_scope  # TFMOT wrappers + our quantizers

        config = dict(config)
        with quantize_scope():  # a wrapped QAT model deserializes too
            model = keras.layers.deserialize(config.pop("model"), custom_objects=custom_objects)
            if isinstance(config.get("fill"), dict):
                config["fill"] = keras.utils.deserialize_keras_object(
                    config["fill"], custom_objects=custom_objects
                )
        return cls(model, **config)


def _forward_state(model: keras.Model) -> list[tf.Variable]:
    """The variables a training-mode forward of `model` may write: the own non-trainable
    weights of its trainable layers (BN moving statistics, quantizer EMA ranges, TFMOT's step
    counters). Frozen layers are left out: they run in inference mode and may be large."""
    state, seen = [], set()
    for layer in model.submodules:
        if not isinstance(layer, keras.layers.Layer) or not layer.trainable:
            continue
        for variable in layer._non_trainable_weights:
            if id(variable) not in seen:
                seen.add(id(variable))
                state.append(variable)
    return state


def _batch_mean(values: tf.Tensor, weights: tf.Tensor | None) -> tf.Tensor:
    """Σ_i w_i · v_i / B, Keras's SUM_OVER_BATCH_SIZE reduction (w = 1 without weights)."""
    if weights is None:
        return tf.reduce_mean(values)
    weights = tf.reshape(weights, tf.shape(values))
    return tf.reduce_sum(values * weights) / tf.cast(tf.size(values), values.dtype)
