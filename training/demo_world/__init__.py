"""The demo world (SPEC section 7): instruction prompts, a gold judge, an SFT corpus, a tiny policy.

Everything is generated from fixed tables and seeds, so the demo and its tests need no
download. The judge is usable as `--judge training.demo_world.judge:judge`.
"""

from training.demo_world.judge import judge, score
from training.demo_world.prompts import load_prompts, parse_prompt, write_prompts_jsonl

__all__ = ["judge", "load_prompts", "parse_prompt", "score", "write_prompts_jsonl"]
