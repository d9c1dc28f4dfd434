"""Keras 3 on TensorFlow, as its tutorials write it: simple-2conv, model.fit, Adam 1e-3, arrays scaled by /255.

Run by benchmarks.peers with benchmarks/.venv-keras's python.
`python keras_run.py DATA.npz --epochs 10 --batch-size 128`
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from protocol import Stopwatch, array_script_args, emit  # noqa: E402


def simple_2conv() -> keras.Model:
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(),
        L.Conv2D(64, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(),
        L.Flatten(), L.Dense(128, activation="relu"), L.Dense(64, activation="relu"), L.Dense(10),
    ])


class TestEveryEpoch(keras.callbacks.Callback):
    def __init__(self, x, y) -> None:
        super().__init__()
        self.x, self.y = x, y

    def on_epoch_end(self, epoch, logs=None) -> None:
        with Stopwatch() as w:
            pred = self.model.predict(self.x, batch_size=1024, verbose=0).argmax(1)
        emit(epoch + 1, float((pred == self.y).mean()), w.seconds)


def main() -> None:
    a = array_script_args()
    keras.utils.set_random_seed(0)
    d = np.load(a.npz)
    x = d["x_train"].astype("float32")[..., None] / 255.0
    xt = d["x_test"].astype("float32")[..., None] / 255.0
    model = simple_2conv()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, d["y_train"], epochs=a.epochs, batch_size=a.batch_size, verbose=0,
              callbacks=[TestEveryEpoch(xt, d["y_test"])])
    model.save("model.keras")


if __name__ == "__main__":
    main()
