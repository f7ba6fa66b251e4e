"""keras_alexnet.callbacks: the paper's learning-rate schedule [paper §5]."""

import keras
import pytest

import keras_alexnet
from keras_alexnet.callbacks import DivideLearningRateOnPlateau


def small_model():
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    net.compile(keras_alexnet.PaperSGD(0.01), "mse")
    return net


def test_the_learning_rate_schedule_divides_at_plateaus_and_replays_from_the_log():
    accuracies = [0.1, 0.3, 0.3, 0.2, 0.4, 0.4, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    schedule = DivideLearningRateOnPlateau(0.01, patience=2, say=lambda line: None)
    schedule.set_model(small_model())
    schedule.on_train_begin()
    rows = []
    for epoch, accuracy in enumerate(accuracies):
        logs = {"val_top1": accuracy}
        schedule.on_epoch_end(epoch, logs)
        rows.append({"learning_rate": str(logs["learning_rate"]), "val_top1": str(accuracy)})
    rates = [float(row["learning_rate"]) for row in rows]
    # Divided after two epochs without a better accuracy at the current rate, and only
    # three times: 0.01 (epochs 0-3), 0.001 (4-6), 1e-4 (7-9), 1e-5 from then on.
    assert rates == pytest.approx([0.01] * 4 + [0.001] * 3 + [1e-4] * 3 + [1e-5] * 4)

    # A run resumed after epoch 8 (rate 1e-4, one epoch without gain) divides after one more.
    resumed = DivideLearningRateOnPlateau(0.01, patience=2, trained=rows[:9])
    resumed.set_model(small_model())
    resumed.model.optimizer.learning_rate = 1e-4
    resumed.on_train_begin()
    resumed.on_epoch_end(9, {"val_top1": 0.5})
    assert float(resumed.model.optimizer.learning_rate.numpy()) == pytest.approx(1e-5)


def test_a_learning_rate_of_zero_is_refused_not_divided_by():
    with pytest.raises(ValueError, match="learning_rate must be positive, got 0"):
        DivideLearningRateOnPlateau(0.0)
