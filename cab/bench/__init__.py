"""`cab bench`: the efficiency of one attention layer against sequence length.

`job` is one bench job (an attention × pattern swept over lengths, one `kind: efficiency` record
per direction) and the `cab bench` command (its Hydra app); `measure` takes one point (time, peak
memory, FLOPs) in this process or a fresh one; `scaling` fits the derived figures (scaling
exponents, CAB's efficiency length, the measured crossing) with no torch, so the leaderboard can
use it; `report` is `cab bench table`; `flops` counts a whole model's forward FLOPs for the records
of `cab run`.
"""
