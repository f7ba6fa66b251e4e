"""A training process for the kill-and-resume and multi-worker tests.

`python -m tests.keras_alexnet.training_worker DATA_DIR MODEL_DIR WEIGHTS.npz [options]`
trains the reduced model with `keras_alexnet.fit` and saves the weights it started
from (`start_i`) and ended with (`final_i`).
"""

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("model_dir")
    parser.add_argument("weights")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps-per-epoch", type=int, default=2)
    parser.add_argument("--strategy", default="towers")
    args = parser.parse_args()

    # Imported after parsing; the strategy comes first (multi-worker needs a fresh runtime).
    import keras

    from keras_alexnet.distribute import select_strategy
    from keras_alexnet.model import build_model
    from keras_alexnet.training import fit
    from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED

    strategy = select_strategy(args.strategy)
    keras.utils.set_random_seed(0)
    start = build_model(REDUCED, devices=("", "")).get_weights()
    keras.utils.set_random_seed(0)  # fit builds the same weights again
    history = fit(args.data_dir, args.model_dir, config=REDUCED, epochs=args.epochs,
                  steps_per_epoch=args.steps_per_epoch, strategy=strategy, **FIT_ARGS)
    np.savez(args.weights, **{f"start_{i}": w for i, w in enumerate(start)},
             **{f"final_{i}": w for i, w in enumerate(history.model.get_weights())})


if __name__ == "__main__":
    main()
