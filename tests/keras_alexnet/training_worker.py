"""A training process for the kill-and-resume and multi-worker tests.

`python -m tests.keras_alexnet.training_worker DATA_DIR MODEL_DIR WEIGHTS.npz [options]`
trains the reduced model with `keras_alexnet.fit` (nothing seeded but through `fit`'s
own `seed`) and saves the weights it started from (`start_i`, as `fit` builds them from
the seed) and ended with (`final_i`), and the number of training steps it ran (`steps`).
`--kill-at-step N` sends itself SIGKILL when N steps of the run are done, before the
next one.
"""

import argparse
import os
import signal

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("model_dir")
    parser.add_argument("weights")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps-per-epoch", type=int, default=2)
    parser.add_argument("--backup-every", type=int, default=0)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--strategy", default="towers")
    args = parser.parse_args()

    # Imported after parsing; the strategy comes first (multi-worker needs a fresh runtime).
    import keras

    from keras_alexnet.distribute import select_strategy
    from keras_alexnet.model import build_network
    from keras_alexnet.training import fit
    from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED

    strategy = select_strategy(args.strategy)
    start = build_network(REDUCED, devices=("", ""), seed=FIT_ARGS["seed"]).get_weights()

    class Steps(keras.callbacks.Callback):
        count = 0

        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == args.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_batch_end(self, batch, logs=None):
            Steps.count += 1

    history = fit(args.data_dir, args.model_dir, config=REDUCED, epochs=args.epochs,
                  steps_per_epoch=args.steps_per_epoch, strategy=strategy,
                  backup_every=args.backup_every, callbacks=[Steps()], **FIT_ARGS)
    np.savez(args.weights, steps=Steps.count, **{f"start_{i}": w for i, w in enumerate(start)},
             **{f"final_{i}": w for i, w in enumerate(history.model.get_weights())})


if __name__ == "__main__":
    main()
