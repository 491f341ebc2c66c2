"""`cab run`: one cell of the grid, from a composed Hydra config to one written record.

`app` is the Hydra application (compose, check the cell, run, print one line); `runner` the job's
lifecycle (skip a finished cell, mark the job as running, write exactly one record whatever
happens); `training` the training loop, evaluation and cost measurement of one cell; `factory` the
`AttentionFactory` a task builds its backbone with (the mechanism under test in the pattern under
test, softmax elsewhere); `callbacks`, `sweep`, `progress` and `loggers` the end-of-sweep summary,
the per-job progress bar and the optional wandb mirror.
"""
