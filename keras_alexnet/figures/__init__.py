"""The paper's pictures as PNG files, for any checkpoint and any converted dataset.

- `kernels`: the conv1 kernels, tower a above tower b [paper Figure 3].
- `predictions`: top-5 predictions per image with score bars [paper Figure 4, left].
- `neighbours`: nearest training images by fc7 distance [paper Figure 4, right].
- `curves`: loss, top-1/top-5 error and learning rate from `training_log.csv`.

Drawing uses matplotlib's object API on the Agg canvas (no pyplot, no display), so
it works on headless machines and in threads.
"""
