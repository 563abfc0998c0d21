"""The hyperparameter search of the training regimes: its spaces (`space`), and the selection that
turns a group's search trials into scored cells, on validation tasks only (`select`)."""
