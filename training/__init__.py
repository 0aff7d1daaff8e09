"""Training: the ML code (plain modules, no Django) and the Django app that records runs.

Hub kernels are off unless asked for. transformers 5.2x with its `kernels` dependency swaps
layers for kernels fetched from the Hugging Face Hub when a model first switches to training
on a GPU: offline (HF_HUB_OFFLINE, as on air-gapped clusters) that raises in the middle of a
run, at `model.train()`; online it runs code downloaded at run time that a run's identity
does not record. `USE_HUB_KERNELS=YES` in the environment turns them back on.
"""

import os

os.environ.setdefault("USE_HUB_KERNELS", "NO")
