"""The paper's pictures: each PNG is read back and its content checked against the model."""

import csv
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage

import keras_alexnet
from keras_alexnet.commands import main
from keras_alexnet.contract import InputContract
from keras_alexnet.figures import curves, kernels, neighbours, predictions
from keras_alexnet.figures.examples import load_examples
from keras_alexnet.model import fc7_features
from tfrecords_tools.stats import load_stats

TILE = 11 * 4  # an 11x11 kernel at the default scale 4


def minus_mean(images, data_dir):
    """A model without a contract takes the data's per-channel mean (numpy here)."""
    return images.astype(np.float32) - load_stats(data_dir).mean_rgb * 255.0


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], np.uint8)


def components(mask: np.ndarray) -> list[tuple[slice, slice]]:
    """Bounding boxes of the connected regions of a boolean mask."""
    labelled, _ = ndimage.label(mask)
    return ndimage.find_objects(labelled)


def he_initialise(model: keras.Model, seed: int) -> keras.Model:
    """Weights with unit-scale activations, so fc7 vectors of different images differ
    clearly (the paper's N(0, 0.01) start makes them almost equal)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        weight.assign(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def model():
    return he_initialise(keras_alexnet.build_model(keras_alexnet.reduced_config()), seed=1)


@pytest.fixture(scope="module")
def two_checkpoints(model, tmp_path_factory):
    """The module's model and a copy with other weights, as two `.keras` files."""
    directory = tmp_path_factory.mktemp("checkpoints")
    first, second = directory / "epoch-0001.keras", directory / "epoch-0002.keras"
    model.save(first)
    other = keras.models.clone_model(model)
    he_initialise(other, seed=2).save(second)
    return first, second


# --- Figure 3: conv1 kernels ----------------------------------------------------------------

def test_kernel_grid_of_the_paper_model_has_96_tiles_tower_a_above_tower_b():
    rng = np.random.default_rng(0)
    grid = kernels.kernel_grid(rng.normal(size=(2, 48, 11, 11, 3)))
    tiles = components((grid != kernels.BACKGROUND).any(axis=-1))
    assert len(tiles) == 96
    assert {(t[0].stop - t[0].start, t[1].stop - t[1].start) for t in tiles} == {(TILE, TILE)}
    tops = sorted({t[0].start for t in tiles})
    assert len(tops) == 6  # three rows of 16 a tower
    assert {sum(t[0].start == top for t in tiles) for top in tops} == {16}
    # The gap between tower a's last row and tower b's first is wider than the others.
    steps = np.diff(tops)
    assert steps[2] > steps[0] == steps[1] == steps[3] == steps[4]


def test_kernel_picture_shows_each_checkpoint_kernel_in_its_tower(two_checkpoints, tmp_path):
    pictures = []
    for checkpoint in two_checkpoints:
        output = tmp_path / f"{checkpoint.stem}.png"
        assert main(["pictures", "kernels", str(checkpoint), "-o", str(output),
                     "--columns", "4"]) == 0
        picture = read_png(output)
        loaded = keras.models.load_model(checkpoint)
        # 6 kernels a tower in rows of 4: 2 rows a tower, 4 rows in all.
        assert picture.shape == (2 + 4 * (TILE + 2) + 8, 2 + 4 * (TILE + 2), 3)
        for tower_index, tower in enumerate(("tower_a", "tower_b")):
            weights = loaded.get_layer(f"{tower}_conv1").layer.kernel.numpy()
            for i in range(6):
                kernel = weights[..., i]
                expected = np.round((kernel - kernel.min()) / np.ptp(kernel) * 255)
                row = tower_index * 2 + i // 4
                top = 2 + row * (TILE + 2) + tower_index * 8
                left = 2 + (i % 4) * (TILE + 2)
                tile = picture[top:top + TILE, left:left + TILE].astype(float)
                # Every 4x4 block of the tile is one kernel pixel.
                np.testing.assert_array_equal(tile[::4, ::4], expected)
                np.testing.assert_array_equal(tile[3::4, 3::4], expected)
        pictures.append(picture)
    assert (pictures[0] != pictures[1]).mean() > 0.5


def test_picture_commands_name_what_is_missing(two_checkpoints, tmp_path, capsys):
    assert main(["pictures", "kernels", str(tmp_path / "nowhere.keras")]) == 1
    assert "nowhere.keras: no such checkpoint" in capsys.readouterr().err
    assert main(["pictures", "predictions", str(two_checkpoints[0]), str(tmp_path),
                 "-o", str(tmp_path / "p.png")]) == 1
    assert f"{tmp_path}: no validation shards" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


# --- Figure 4 left: top-5 bars --------------------------------------------------------------

def bars_in(picture: np.ndarray) -> list[tuple[int, int, int, bool]]:
    """(top, left, length, is_red) of every score bar, in reading order."""
    found = []
    for colour, red in ((predictions.BAR_COLOUR, False), (predictions.TRUE_LABEL_COLOUR, True)):
        for rows, columns in components((picture == rgb(colour)).all(axis=-1)):
            found.append((rows.start, columns.start, columns.stop - columns.start, red))
    cell = predictions.CELL_WIDTH
    return sorted(found, key=lambda bar: (bar[0] // cell, bar[1] // cell, bar[0]))


def test_bars_follow_the_probabilities_and_the_true_label_is_red(tmp_path):
    probabilities = np.array([[0.05, 0.4, 0.1, 0.25, 0.2, 0.0],
                              [0.8, 0.05, 0.0, 0.03, 0.04, 0.08]])
    labels = [3, 2]  # first: in the top 5 (second place); second: not in it
    images = np.full((2, 64, 64, 3), 128, np.uint8)  # grey: no bar colour in the images
    figure = predictions.draw_predictions(images, probabilities, labels,
                                          [f"class {i}" for i in range(6)], columns=2)
    path = tmp_path / "predictions.png"
    picture = read_png(predictions.save_png(figure, path))
    assert picture.shape == (predictions.CELL_HEIGHT, 2 * predictions.CELL_WIDTH, 3)

    bars = bars_in(picture)
    assert len(bars) == 10
    full_length = (predictions.CELL_WIDTH - predictions.NAMES_WIDTH - 15)  # the 0..1 axis
    for image, row in enumerate(probabilities):
        mine = bars[5 * image:5 * image + 5]
        top5 = np.sort(row)[::-1][:5]
        lengths = np.array([length for _, _, length, _ in mine])
        np.testing.assert_allclose(lengths, top5 * full_length, atol=1.5)
        assert [top for top, *_ in mine] == sorted(top for top, *_ in mine)  # best on top
        reds = [red for *_, red in mine]
        assert reds == ([False, True, False, False, False] if image == 0 else [False] * 5)


def test_predictions_command_draws_the_model_top5(model, two_checkpoints, converted_shards,
                                                  tmp_path):
    output = tmp_path / "p.png"
    assert main(["pictures", "predictions", str(two_checkpoints[0]), str(converted_shards),
                 "--count", "3", "--columns", "3", "-o", str(output)]) == 0
    picture = read_png(output)
    assert picture.shape == (predictions.CELL_HEIGHT, 3 * predictions.CELL_WIDTH, 3)
    examples = load_examples(converted_shards, "validation",
                             InputContract.from_data(converted_shards, 64), 3)
    expected = model.predict(minus_mean(examples.images, converted_shards), verbose=0)
    full_length = (predictions.CELL_WIDTH - predictions.NAMES_WIDTH - 15)
    bars = bars_in(picture)
    visible = np.sort(expected, axis=1)[:, ::-1][:, :5] * full_length >= 1
    assert len(bars) == visible.sum()
    lengths = np.array([length for _, _, length, _ in bars])
    np.testing.assert_allclose(lengths, (np.sort(expected, axis=1)[:, ::-1][:, :5]
                                         * full_length)[visible], atol=1.5)


# --- Figure 4 right: nearest neighbours by fc7 ----------------------------------------------

def test_index_is_built_once_reused_and_rebuilt_for_other_weights(model, two_checkpoints,
                                                                   converted_shards, tmp_path):
    index_dir = tmp_path / "index"
    index, built = neighbours.open_index(model, converted_shards, index_dir)
    assert built
    features_file = index_dir / "features.f32"
    stamp = features_file.stat().st_mtime_ns
    again, built = neighbours.open_index(model, converted_shards, index_dir)
    assert not built and features_file.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.features, index.features)
    other = keras.models.load_model(two_checkpoints[1])
    _, built = neighbours.open_index(other, converted_shards, index_dir)
    assert built


def test_index_is_rebuilt_when_the_shards_are_rewritten(model, converted_shards, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(converted_shards, data_dir)
    index_dir = tmp_path / "index"
    first, _ = neighbours.open_index(model, data_dir, index_dir)
    shard = sorted(data_dir.glob("train-*"))[0]
    records = list(tf.data.TFRecordDataset(str(shard)).take(3).as_numpy_iterator())
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    second, built = neighbours.open_index(model, data_dir, index_dir)
    assert built and len(second) < len(first)


def test_a_training_image_is_its_own_nearest_neighbour(model, converted_shards, tmp_path):
    index = neighbours.build_index(model, converted_shards, tmp_path / "index")
    queries = load_examples(converted_shards, "train",
                            InputContract.from_data(converted_shards, 64), 4, start=7)
    features = fc7_features(model).predict(minus_mean(queries.images, converted_shards),
                                           verbose=0)
    rows, distances = index.search(features, k=5)
    assert index.keys(rows[:, 0]) == list(zip(queries.shards, queries.offsets.tolist(),
                                              strict=True))
    assert (distances[:, 0] <= 1e-4 * distances[:, 1]).all()
    assert (np.diff(distances, axis=1) >= 0).all()
    # Exact Euclidean distances, checked against a brute-force computation.
    brute = np.linalg.norm(np.asarray(index.features)[None] - features[:, None], axis=-1)
    np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :5], rtol=1e-4, atol=1e-4)


def test_neighbours_picture_puts_the_image_itself_first(two_checkpoints, converted_shards,
                                                        tmp_path):
    output = tmp_path / "n.png"
    argv = ["pictures", "neighbours", str(two_checkpoints[0]), str(converted_shards),
            "--split", "train", "--start", "3", "--count", "2", "-k", "3", "-o", str(output)]
    assert main(argv) == 0
    picture = read_png(output)
    assert picture.shape == (2 * neighbours.CELL_HEIGHT, 4 * neighbours.CELL_WIDTH, 3)
    index_dir = two_checkpoints[0].with_name("epoch-0001.fc7-index-train")
    assert (index_dir / "index.json").exists()

    def tile(row, column):
        left = column * neighbours.CELL_WIDTH + (neighbours.CELL_WIDTH - neighbours.TILE) // 2
        top = row * neighbours.CELL_HEIGHT + 8
        inner = slice(6, neighbours.TILE - 6)  # inside the query's frame
        return picture[top:top + neighbours.TILE, left:left + neighbours.TILE][inner, inner]

    for row in range(2):
        query = tile(row, 0).astype(int)
        assert np.abs(query - tile(row, 1)).mean() < 1  # itself, at distance 0
        assert query.std() > 10  # an image, not a blank tile
    assert np.abs(tile(0, 0).astype(int) - tile(1, 0)).mean() > 5  # two different queries
    stamp = (index_dir / "features.f32").stat().st_mtime_ns
    assert main(argv) == 0
    assert (index_dir / "features.f32").stat().st_mtime_ns == stamp  # reused


# --- training curves ------------------------------------------------------------------------

def write_log(path, epochs=10):
    """A log in Keras's own CSVLogger format: error falls, the rate drops after epoch 6."""
    logger = keras.callbacks.CSVLogger(str(path))
    logger.on_train_begin()
    for epoch in range(epochs):
        logger.on_epoch_end(epoch, {
            "loss": 2.3 - 0.2 * epoch, "top1": 0.1 + 0.08 * epoch, "top5": 0.5 + 0.05 * epoch,
            "learning_rate": 0.01 if epoch < 6 else 0.001, "val_loss": 2.3 - 0.15 * epoch,
            "val_top1": 0.1 + 0.07 * epoch, "val_top5": 0.5 + 0.04 * epoch})
    logger.on_train_end()
    return path


def line_pixels(picture, axes, colour):
    """(rows, columns) of the pixels of `colour` inside `axes`, legend excluded."""
    height = picture.shape[0]
    mask = np.zeros(picture.shape[:2], bool)
    box = axes.get_window_extent()
    mask[int(height - box.y1) + 2:int(height - box.y0) - 2, int(box.x0) + 2:int(box.x1) - 2] = True
    legend = axes.get_legend().get_window_extent()
    mask[int(height - legend.y1) - 2:int(height - legend.y0) + 2,
         int(legend.x0) - 2:int(legend.x1) + 2] = False
    return np.nonzero(mask & (picture == rgb(colour)).all(axis=-1))


def test_curves_show_falling_error_and_the_learning_rate_step(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    write_log(model_dir / "training_log.csv")
    output = tmp_path / "curves.png"
    assert main(["pictures", "curves", str(model_dir), "-o", str(output)]) == 0
    picture = read_png(output)
    figure = curves.draw_curves(curves.read_training_log(model_dir))
    figure.canvas.draw()
    assert picture.shape == (int(figure.bbox.height), int(figure.bbox.width), 3)
    _, error_axes, rate_axes = figure.axes

    # Training top-1 error falls from 90% to 18%: its line descends left to right.
    rows, columns = line_pixels(picture, error_axes, curves.TRAIN_COLOUR)
    left, right = rows[columns < columns.min() + 10], rows[columns > columns.max() - 10]
    assert left.mean() < right.mean() - 100
    # The rate is flat for epochs 1-6, then one step down.
    rows, columns = line_pixels(picture, rate_axes, curves.LR_COLOUR)
    x_step = rate_axes.transData.transform((7, 0.01))[0]
    before = rows[columns < x_step - 3]
    after = rows[columns > x_step + 3]
    assert np.ptp(before) <= 3 and np.ptp(after) <= 3
    assert after.mean() - before.mean() > 50


def test_curves_name_the_missing_column_and_the_bad_cell(tmp_path):
    path = tmp_path / "training_log.csv"
    path.write_text("epoch,top1\n0,0.5\n")
    with pytest.raises(ValueError, match=r"training_log.csv: missing column\(s\) loss"):
        curves.read_training_log(path)
    path.write_text("epoch,loss\n0,2.3\n1,oops\n")
    with pytest.raises(ValueError, match=r"training_log.csv:3: column 'loss': 'oops'"):
        curves.read_training_log(path)
    with pytest.raises(FileNotFoundError, match="no training log"):
        curves.read_training_log(tmp_path / "elsewhere")


def test_curves_read_what_csvlogger_writes(tmp_path):
    log = curves.read_training_log(write_log(tmp_path / "log.csv", epochs=3))
    with open(tmp_path / "log.csv", newline="") as lines:
        assert next(csv.reader(lines))[0] == "epoch"
    np.testing.assert_allclose(log["epoch"], [0, 1, 2])
    np.testing.assert_allclose(log["top1"], [0.1, 0.18, 0.26])
