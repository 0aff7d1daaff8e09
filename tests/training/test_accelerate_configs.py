"""configs/accelerate/*.yaml load, and an Accelerator (and engine) builds from each on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
pytestmark = pytest.mark.ml


def test_the_three_configs_exist():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert names == {"single_gpu", "multi_gpu", "deepspeed_zero2"}  # ZeRO-3 is refused


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


@pytest.mark.parametrize("name", ["deepspeed_zero2"])
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


@pytest.mark.parametrize(("stage", "refused"), [(2, False), (3, True), (None, False)])
def test_zero3_is_refused_before_training(stage, refused):
    # Under ZeRO-3 the unwrapped model the main process saves holds empty tensors.
    from types import SimpleNamespace

    from training.distributed import refuse_zero3

    plugin = None if stage is None else SimpleNamespace(zero_stage=stage)
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin))
    if refused:
        with pytest.raises(ValueError, match="ZeRO stage 3 is not supported.*deepspeed_zero2"):
            refuse_zero3(accelerator)
    else:
        refuse_zero3(accelerator)


ZERO3_PPO = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from accelerate.utils import DeepSpeedPlugin
from training.ppo import PPOConfig, train_ppo
from training.tiny import build_tiny_causal_lm
import accelerate
real = accelerate.Accelerator
def zero3(**kwargs):  # what `accelerate launch` with a ZeRO-3 config gives train_ppo
    plugin = DeepSpeedPlugin(zero_stage=3, zero3_init_flag=False)
    return real(deepspeed_plugin=plugin, **{k: v for k, v in kwargs.items() if k != "cpu"})
accelerate.Accelerator = zero3  # train_ppo imports it when it runs
lm = build_tiny_causal_lm(sys.argv[2] + "/lm", ["hello there"] * 5, vocab_size=80)
try:
    train_ppo(str(lm), lambda p, r: [0.0] * len(r), ["hello"] * 4, sys.argv[2] + "/out",
              PPOConfig(total_episodes=4, batch_size=4, eval_every=0, device="cpu"))
except ValueError as exc:
    print("refused:", exc)
"""


def test_train_ppo_refuses_a_real_zero3_accelerator(tmp_path):
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("needs the deepspeed package (pip install -e '.[deepspeed]')")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29900 + os.getpid() % 90),
           "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "ACCELERATE_USE_DEEPSPEED": "true",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    root = str(CONFIGS.parents[1])
    done = subprocess.run(
        [sys.executable, "-c", ZERO3_PPO, root, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "refused: DeepSpeed ZeRO stage 3 is not supported" in done.stdout, done.stderr[-3000:]
    assert not (tmp_path / "out" / "model.safetensors").exists()


ZERO2_PPO = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DeepSpeedPlugin
from training.ppo import PPOConfig, train_ppo
from training.tiny import build_tiny_causal_lm
import accelerate
ds = load_config_from_file(sys.argv[3]).deepspeed_config
real = accelerate.Accelerator
plugins = []
def zero2(**kwargs):  # what `accelerate launch` with the shipped ZeRO-2 config gives train_ppo
    plugin = DeepSpeedPlugin(
        zero_stage=ds["zero_stage"], gradient_clipping=ds["gradient_clipping"],
        offload_optimizer_device="none", offload_param_device="none", zero3_init_flag=False)
    plugins.append(plugin)
    kwargs = {k: v for k, v in kwargs.items() if k != "cpu"}
    return real(deepspeed_plugin=plugin, **{**kwargs, "mixed_precision": "bf16"})
accelerate.Accelerator = zero2  # train_ppo imports it when it runs
texts = [f"the cat number {i} sat on the mat and said hello {i % 7}" for i in range(60)]
lm = build_tiny_causal_lm(sys.argv[2] + "/lm", texts, vocab_size=200)
train_ppo(str(lm), lambda p, r: [float(len(x)) for x in r], [f"the cat {i}" for i in range(8)],
          sys.argv[2] + "/out", PPOConfig(total_episodes=8, batch_size=8, mini_batches=1,
          response_length=6, eval_every=0, max_grad_norm=0.5, device="cpu"))
first = json.loads(open(sys.argv[2] + "/out/metrics.jsonl").readline())
print(json.dumps({"kl": first["kl"], "clip": plugins[0].deepspeed_config["gradient_clipping"]}))
"""


def test_train_ppo_runs_under_the_shipped_zero2_config(tmp_path):
    # accelerate refused to prepare without a dataloader; the reference stayed in fp32 while
    # DeepSpeed ran the policy in bf16 (a KL above zero before any update); DeepSpeed clipped
    # at the yaml's 1.0 whatever --max-grad-norm said.
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("needs the deepspeed package (pip install -e '.[deepspeed]')")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29700 + os.getpid() % 90),
           "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "ACCELERATE_USE_DEEPSPEED": "true",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    root = str(CONFIGS.parents[1])
    done = subprocess.run(
        [sys.executable, "-c", ZERO2_PPO, root, str(tmp_path), str(CONFIGS / "deepspeed_zero2.yaml")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["kl"] == 0.0  # policy and reference are one model, in one precision
    assert figures["clip"] == 0.5
    assert (tmp_path / "out" / "model.safetensors").exists()
