"""configs/accelerate/*.yaml load, and an Accelerator (and engine) builds from each on CPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
pytestmark = pytest.mark.ml


def test_the_four_configs_exist():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert {"single_gpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3"} <= names


# Run in a fresh interpreter per config: DeepSpeed keeps process groups in module globals,
# so a second engine in the same process fails after the first group is destroyed.
BUILD = """
import os, sys, torch
from accelerate import Accelerator
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DeepSpeedPlugin
cfg = load_config_from_file(sys.argv[1])
ds = cfg.deepspeed_config
assert cfg.mixed_precision == "bf16", cfg.mixed_precision
plugin = DeepSpeedPlugin(
    zero_stage=ds["zero_stage"], gradient_clipping=ds["gradient_clipping"],
    offload_optimizer_device=ds["offload_optimizer_device"],
    offload_param_device=ds["offload_param_device"], zero3_init_flag=ds["zero3_init_flag"])
accelerator = Accelerator(deepspeed_plugin=plugin, mixed_precision=cfg.mixed_precision)
assert accelerator.state.distributed_type == "DEEPSPEED", accelerator.state.distributed_type
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters())
loader = torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=2)
engine, _, _ = accelerator.prepare(model, optimizer, loader)
assert type(engine).__name__ == "DeepSpeedEngine", type(engine)
assert engine.zero_optimization_stage() == ds["zero_stage"]
print("engine stage", engine.zero_optimization_stage())
"""


@pytest.mark.parametrize("name", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_config_builds_an_engine_on_cpu(name):
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("needs the deepspeed package (pip install -e '.[deepspeed]')")
    # What `accelerate launch` exports for one process of this config.
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29600 + os.getpid() % 300),
           "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "ACCELERATE_USE_DEEPSPEED": "true"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(CONFIGS / f"{name}.yaml")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "engine stage" in done.stdout


@pytest.mark.parametrize("name", ["single_gpu", "multi_gpu"])
def test_gpu_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert cfg.mixed_precision == "bf16" and not cfg.use_cpu
    assert cfg.distributed_type in ("NO", "MULTI_GPU")
