"""Keras 3 models, made the way a user of TensorFlow 2.21 makes them (tests/test_keras3.py).

    python tests/_keras3_models.py OUT_DIR MNIST_SUBSET_NPZ

Runs without TF_USE_LEGACY_KERAS and without importing sgt_tfmot: `import keras` is Keras 3.
Writes into OUT_DIR, for each model NAME below, NAME.keras and NAME.h5, and outputs.npz:
`images` (the first 8 test images, 0..255), NAME = the model's outputs on them, and
`cnn_test` = the cnn's outputs on the whole test split.

* cnn: Rescaling, Conv2D, MaxPooling2D, BatchNormalization, Flatten, Dense softmax; trained
  for three epochs on the embedded MNIST subset, so its predictions mean something;
* sequential: a Sequential model of the other common layers (Normalization adapted,
  ZeroPadding2D, DepthwiseConv2D, SeparableConv2D, LeakyReLU, AveragePooling2D, ...);
* graph: a Functional model with Add, Concatenate, Multiply, a nested Sequential and a
  nested Functional model, ReLU6, swish, Reshape, GlobalMaxPooling2D, a Softmax layer;
* augmented: the Keras tutorials' data augmentation in the model (RandomFlip, RandomRotation,
  a nested Sequential of RandomTranslation and RandomContrast) and a GaussianNoise;
* hard: Keras 3's hard activations (hard_silu fused into a Conv2D, an Activation("hard_swish")
  layer, a squeeze-and-excitation gate with hard_sigmoid, Keras 3's relu6(x + 3) / 6);
* unsupported: three layers tf_keras has no counterpart for (a Lambda, celu, hard_tanh).
"""

import os
import sys

os.environ.pop("TF_USE_LEGACY_KERAS", None)

import keras  # noqa: E402
import numpy as np  # noqa: E402

L = keras.layers
SHAPE = (28, 28, 1)


def randomise_statistics(model, seed: int) -> None:
    """Moving statistics of every BatchNormalization away from (0, 1), so they matter."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, L.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))


def cnn(x_train, y_train):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = L.Rescaling(1 / 255.0)(inputs)
    x = L.MaxPooling2D()(L.Conv2D(16, 3, activation="relu")(x))
    x = L.BatchNormalization()(x)
    x = L.MaxPooling2D()(L.Conv2D(32, 3, activation="relu")(x))
    model = keras.Model(inputs, L.Dense(10, activation="softmax")(L.Flatten()(x)))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    return model


def sequential(x_train):
    keras.utils.set_random_seed(1)
    normalization = L.Normalization()
    normalization.adapt(x_train[:256])
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            normalization,
            L.ZeroPadding2D(1),
            L.Conv2D(6, 3, strides=2, use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.DepthwiseConv2D(3, padding="same"),
            L.SeparableConv2D(8, 3, padding="same"),
            L.LeakyReLU(0.1),
            L.AveragePooling2D(2),
            L.Dropout(0.25),
            L.Flatten(),
            L.Dense(10),
            L.Softmax(),
        ]
    )
    randomise_statistics(model, 1)
    return model


def graph():
    keras.utils.set_random_seed(2)
    inputs = keras.Input(SHAPE)
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = L.Conv2D(8, 3, padding="same", activation="relu6")(x)
    branch = keras.Sequential(
        [keras.Input((28, 28, 8)), L.Conv2D(8, 1), L.BatchNormalization(), L.ReLU(6.0)],
        name="branch",
    )
    inner = keras.Input((28, 28, 8))
    block = keras.Model(inner, L.Activation("swish")(L.Conv2D(8, 3, padding="same")(inner)),
                        name="block")  # fmt: skip
    added = L.Add()([branch(x), block(x)])
    gated = L.Multiply()([added, L.Activation("sigmoid")(x)])
    merged = L.Concatenate()([gated, x])
    merged = L.SpatialDropout2D(0.1)(L.MaxPooling2D(4)(merged))
    pooled = L.GlobalMaxPooling2D()(merged)
    flat = L.Reshape((7 * 7 * 16,))(merged)
    features = L.Concatenate()([pooled, L.Dense(16, activation="tanh")(flat)])
    outputs = L.Softmax()(L.Dense(10)(features))
    model = keras.Model(inputs, outputs)
    randomise_statistics(model, 2)
    return model


def augmented():
    keras.utils.set_random_seed(4)
    augment = keras.Sequential([L.RandomTranslation(0.1, 0.1), L.RandomContrast(0.2)],
                               name="augment")  # fmt: skip
    inputs = keras.Input(SHAPE)
    x = augment(L.RandomRotation(0.1)(L.RandomFlip("horizontal")(inputs)))
    x = L.Conv2D(8, 3, strides=2, activation="relu")(L.Rescaling(1 / 255.0)(x))
    x = L.GaussianNoise(0.1)(L.BatchNormalization()(x))
    outputs = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    randomise_statistics(model, 4)
    return model


def hard():
    keras.utils.set_random_seed(5)
    inputs = keras.Input(SHAPE)
    x = L.Conv2D(8, 3, padding="same", activation="hard_silu")(L.Rescaling(1 / 255.0)(inputs))
    x = L.Activation("hard_swish")(L.BatchNormalization()(L.DepthwiseConv2D(3)(x)))
    gate = L.Dense(8, activation="hard_sigmoid")(L.GlobalAveragePooling2D()(x))
    x = L.Multiply()([x, L.Reshape((1, 1, 8))(gate)])
    outputs = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    randomise_statistics(model, 5)
    return model


def unsupported():
    keras.utils.set_random_seed(3)
    inputs = keras.Input(SHAPE)
    x = L.Lambda(lambda t: t / 255.0, name="scale_by_code")(inputs)
    x = L.Conv2D(4, 3, activation="celu", name="conv_celu")(x)
    x = L.Flatten()(x)
    outputs = L.Dense(10, activation="hard_tanh", name="dense_hard_tanh")(x)
    return keras.Model(inputs, outputs)


def main(out_dir: str, mnist_subset: str) -> None:
    data = np.load(mnist_subset)
    x_train = data["x_train"][..., None].astype("float32")
    x_test = data["x_test"][..., None].astype("float32")
    models = {
        "cnn": cnn(x_train, data["y_train"]),
        "sequential": sequential(x_train),
        "graph": graph(),
        "augmented": augmented(),
        "hard": hard(),
        "unsupported": unsupported(),
    }
    images = x_test[:8]
    outputs = {"images": images}
    for name, model in models.items():
        model.save(os.path.join(out_dir, f"{name}.keras"))
        model.save(os.path.join(out_dir, f"{name}.h5"))
        outputs[name] = model.predict(images, verbose=0)
    outputs["cnn_test"] = models["cnn"].predict(x_test, verbose=0)
    np.savez(os.path.join(out_dir, "outputs.npz"), **outputs)


if __name__ == "__main__":
    main(*sys.argv[1:])
