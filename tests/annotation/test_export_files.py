"""Export files: formats load with `datasets`, manifest hashes, atomic publish, trl training."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from annotation.datafiles.digest import sha256_tree
from annotation.datafiles.export import (
    DEFAULT_CHUNK_ROWS,
    MANIFEST_NAME,
    PAIR_FIELDS,
    RANKING_FIELDS,
    TABLE_FIELDS,
    ComparisonBlock,
    ExportWriter,
)
from annotation.datafiles.rows import CandidateText, pair_rows, ranking_row
from annotation.rules.splits import split_for_prompt


def write_export(
    out_dir,
    *,
    pairs,
    rankings=(),
    fmt="jsonl",
    prompt_format=None,
    chunk_rows=DEFAULT_CHUNK_ROWS,
    **finish,
):
    """Write pair rows then ranking rows through an ExportWriter and publish them."""
    with ExportWriter(out_dir, fmt=fmt, prompt_format=prompt_format, chunk_rows=chunk_rows) as w:
        w.write_pairs(pairs)
        w.write_rankings(rankings)
        return w.finish(**finish)


WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "then",
    "ran",
    "to",
    "see",
    "its",
    "friend",
    "dog",
    "who",
    "was",
    "very",
    "happy",
    "today",
]


def synthetic_rows(*, n_prompts: int = 30, k: int = 4, chat: bool = True, seed: int = 0):
    """Pair rows and ranking rows of `n_prompts` comparisons ranked by two labelers each."""
    rng = random.Random(seed)
    pairs, rankings = [], []
    annotation_id = 0
    for cid in range(n_prompts):
        text = " ".join(rng.choices(WORDS, k=5)) + f" #{cid}"
        prompt = [{"role": "user", "content": text}] if chat else text
        split = split_for_prompt(prompt, test_fraction=0.3)
        ids = [cid * 10 + j for j in range(k)]
        candidates = {
            c: CandidateText(
                " ".join(rng.choices(WORDS, k=rng.randint(1, 6))) + f" {c}", f"m{c % 2}"
            )
            for c in ids
        }
        for labeler in ("L1", "L2"):
            annotation_id += 1
            order = ids[:]
            rng.shuffle(order)
            tiers = [[order[0]], order[1:3], order[3:]] if labeler == "L2" else [[c] for c in order]
            common = dict(
                prompt=prompt,
                candidates=candidates,
                tiers=tiers,
                split=split,
                comparison_id=cid,
                annotation_id=annotation_id,
                labeler=labeler,
            )
            pairs += pair_rows(pairing="all_pairs", **common)
            rankings.append(ranking_row(order=ids, **common))
    return pairs, rankings


def load_json(path: Path, cache: Path):
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_jsonl_chat_export_loads_with_datasets(tmp_path):
    pairs, rankings = synthetic_rows()
    result = write_export(tmp_path / "out", pairs=pairs, rankings=rankings, source={"project": "p"})
    assert leftovers(tmp_path / "out") == ["manifest.json", "pairs.jsonl", "rankings.jsonl"]

    ds = load_json(result.files["pairs"], tmp_path / "cache")
    assert ds.column_names == list(PAIR_FIELDS)
    assert len(ds) == len(pairs) == 30 * (6 + 5)  # strict K=4: 6 pairs; 1/2/1 tiers: 5 pairs
    assert ds[0]["prompt"] == pairs[0]["prompt"]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": pairs[0]["chosen"][0]["content"]}]
    assert ds.to_list() == pairs

    ranks = load_json(result.files["rankings"], tmp_path / "cache")
    assert ranks.column_names == list(RANKING_FIELDS)
    assert ranks.to_list() == rankings


def test_jsonl_text_export_loads_with_datasets(tmp_path):
    pairs, rankings = synthetic_rows(chat=False)
    result = write_export(tmp_path, pairs=pairs, rankings=rankings)
    ds = load_json(result.files["pairs"], tmp_path / "cache")
    assert isinstance(ds[0]["prompt"], str) and isinstance(ds[0]["chosen"], str)
    assert ds.to_list() == pairs
    assert result.manifest["prompt_format"] == "text"


def test_weights_sum_to_one_per_annotation(tmp_path):
    pairs, _ = synthetic_rows()
    totals: dict[int, float] = {}
    for row in pairs:
        totals[row["annotation_id"]] = totals.get(row["annotation_id"], 0.0) + row["weight"]
    assert all(t == pytest.approx(1.0) for t in totals.values())
    assert len(totals) == 60


def test_split_never_puts_one_prompt_in_both(tmp_path):
    pairs, _ = synthetic_rows(n_prompts=80)
    result = write_export(tmp_path, pairs=pairs)
    ds = load_json(result.files["pairs"], tmp_path / "cache")
    split_of: dict[str, set[str]] = {}
    for row in ds:
        split_of.setdefault(json.dumps(row["prompt"]), set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert {"train", "test"} == set().union(*split_of.values())
    assert result.counts["pairs_train"] + result.counts["pairs_test"] == len(pairs)
    assert result.counts["pairs_test"] == sum(r["split"] == "test" for r in pairs)


def test_manifest_hash_and_counts_match_the_files(tmp_path):
    pairs, rankings = synthetic_rows()
    options = {"pairing": "all_pairs", "aggregate": "none", "test_fraction": 0.3}
    result = write_export(
        tmp_path,
        pairs=pairs,
        rankings=rankings,
        options=options,
        source={"project": "demo"},
        extra_counts={"annotations_skipped": 2},
    )
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest == result.manifest
    assert manifest["schema_version"] == 1
    assert manifest["options"] == options
    assert manifest["source"] == {"project": "demo"}
    assert manifest["format"] == "jsonl"
    assert manifest["counts"]["pairs"] == len(pairs)
    assert manifest["counts"]["rankings"] == len(rankings) == 60
    assert manifest["counts"]["annotations_skipped"] == 2
    for table in ("pairs", "rankings"):
        entry = manifest["files"][table]
        digest = hashlib.sha256((tmp_path / entry["path"]).read_bytes()).hexdigest()
        assert entry["sha256"] == digest == result.sha256[table]
    assert manifest["created_at"].endswith("+00:00")


def test_parquet_export_matches_jsonl(tmp_path):
    pytest.importorskip("pyarrow")
    datasets = pytest.importorskip("datasets")
    pairs, rankings = synthetic_rows()
    # Small row groups so the chunked writer path is exercised.
    result = write_export(tmp_path, pairs=pairs, rankings=rankings, fmt="parquet", chunk_rows=50)
    assert leftovers(tmp_path) == ["manifest.json", "pairs.parquet", "rankings.parquet"]
    import pyarrow.parquet as pq

    assert pq.ParquetFile(result.files["pairs"]).num_row_groups == -(-len(pairs) // 50)
    ds = datasets.load_dataset(
        "parquet",
        data_files=str(result.files["pairs"]),
        split="train",
        cache_dir=str(tmp_path / "c"),
    )
    assert ds.to_list() == pairs
    assert result.sha256["pairs"] == hashlib.sha256(result.files["pairs"].read_bytes()).hexdigest()
    ranks = pq.read_table(result.files["rankings"]).to_pylist()
    assert ranks == rankings


def test_hf_export_is_a_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    pairs, rankings = synthetic_rows(n_prompts=5, chat=False)
    result = write_export(tmp_path / "out", pairs=pairs, rankings=rankings, fmt="hf")
    assert leftovers(tmp_path / "out") == ["manifest.json", "pairs", "rankings"]
    ds = datasets.load_from_disk(str(result.files["pairs"]))
    assert ds.to_list() == pairs
    assert datasets.load_from_disk(str(result.files["rankings"])).to_list() == rankings
    assert result.manifest["files"]["pairs"]["sha256"] == sha256_tree(result.files["pairs"])


@pytest.mark.parametrize("with_rankings", [False, True])
def test_hf_export_with_no_pairs_is_a_valid_empty_dataset(tmp_path, with_rankings):
    # Zero rows was a 500 (from_generator fails on an empty generator, and zero shards do
    # not load back); an empty table is one empty shard that load_from_disk reads.
    datasets = pytest.importorskip("datasets")
    _, rankings = synthetic_rows(n_prompts=2, chat=False)
    rankings = rankings if with_rankings else []
    result = write_export(tmp_path / "out", pairs=[], rankings=rankings, fmt="hf")
    pairs = datasets.load_from_disk(str(result.files["pairs"]))
    assert len(pairs) == 0 and list(pairs.features) == list(TABLE_FIELDS["pairs"])
    assert datasets.load_from_disk(str(result.files["rankings"])).to_list() == rankings
    assert result.manifest["counts"]["pairs"] == 0
    assert result.manifest["files"]["pairs"]["sha256"] == sha256_tree(result.files["pairs"])


def failing(rows, after: int):
    for n, row in enumerate(rows):
        if n == after:
            raise RuntimeError("database went away")
        yield row


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_failure_leaves_nothing_under_a_final_name(tmp_path, fmt):
    pairs, rankings = synthetic_rows()
    with pytest.raises(RuntimeError, match="went away"):
        write_export(tmp_path, pairs=failing(pairs, 100), rankings=rankings, fmt=fmt, chunk_rows=30)
    assert leftovers(tmp_path) == []
    with pytest.raises(RuntimeError, match="went away"):
        write_export(tmp_path, pairs=pairs, rankings=failing(rankings, 10), fmt=fmt)
    assert leftovers(tmp_path) == []


def test_mixing_text_and_chat_prompts_is_refused(tmp_path):
    chat_pairs, _ = synthetic_rows(n_prompts=2)
    text_pairs, _ = synthetic_rows(n_prompts=2, chat=False)
    with pytest.raises(ValueError, match="all-text or all-chat"):
        write_export(tmp_path, pairs=chat_pairs + text_pairs)
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="all-text or all-chat"):
        write_export(tmp_path, pairs=text_pairs, prompt_format="chat")


def test_wrong_fields_are_refused(tmp_path):
    pairs, _ = synthetic_rows(n_prompts=1)
    bad = {k: v for k, v in pairs[0].items() if k != "margin"} | {"score": 1}
    with pytest.raises(ValueError, match=r"missing \['margin'\], unexpected \['score'\]"):
        write_export(tmp_path, pairs=[bad])
    with pytest.raises(ValueError, match="fields"):
        write_export(tmp_path, pairs=[pairs[0], {"prompt": pairs[0]["prompt"]}])
    assert leftovers(tmp_path) == []


def test_an_existing_export_is_never_overwritten(tmp_path):
    pairs, _ = synthetic_rows(n_prompts=1)
    write_export(tmp_path, pairs=pairs)
    before = (tmp_path / "pairs.jsonl").read_bytes()
    with pytest.raises(FileExistsError):
        write_export(tmp_path, pairs=pairs[:1])
    assert (tmp_path / "pairs.jsonl").read_bytes() == before


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        ExportWriter(tmp_path, fmt="csv")


def test_writer_without_finish_publishes_nothing(tmp_path):
    pairs, _ = synthetic_rows(n_prompts=1)
    with ExportWriter(tmp_path) as writer:
        writer.write_pairs(pairs)
    assert leftovers(tmp_path) == []


# --- trl trains on the exported file unchanged ----------------------------------------------


@pytest.fixture(scope="module")
def chat_export(tmp_path_factory):
    pairs, rankings = synthetic_rows(n_prompts=8)
    out = tmp_path_factory.mktemp("export")
    return write_export(out, pairs=pairs, rankings=rankings)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from training.tiny import build_tiny_causal_lm

    texts = [" ".join(WORDS)] * 4 + [f"{w} {i}" for i, w in enumerate(WORDS)]
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("tiny"), texts, n_layer=2, n_embd=32, chat_template=True
    )


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _changed(before, model) -> bool:
    return any(not before[n].equal(p.detach()) for n, p in model.named_parameters() if n in before)


@pytest.mark.ml
def test_reward_trainer_runs_a_step_on_the_export(chat_export, tiny_chat_model, tmp_path):
    pytest.importorskip("trl")
    import math

    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    train = load_json(chat_export.files["pairs"], tmp_path / "cache")
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_chat_model, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    before = _params(model)
    args = RewardConfig(
        output_dir=str(tmp_path / "rm"),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        max_length=128,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    output = trainer.train()
    assert output.global_step == 1
    assert math.isfinite(output.training_loss)
    assert _changed(before, model)


@pytest.mark.ml
def test_dpo_trainer_runs_a_step_on_the_export(chat_export, tiny_chat_model, tmp_path):
    pytest.importorskip("trl")
    import math

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    train = load_json(chat_export.files["pairs"], tmp_path / "cache")
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    before = _params(model)
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        max_length=128,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    output = trainer.train()
    assert output.global_step == 1
    assert math.isfinite(output.training_loss)
    assert _changed(before, model)


def test_jsonl_lines_are_exactly_json_dumps_of_each_row(tmp_path):
    pairs, rankings = synthetic_rows(n_prompts=3)
    odd = dict(pairs[0]) | {
        "prompt": [{"role": "user", "content": 'Ünïcode "quotes" \\ and \n newline ✓'}],
        "labeler": "é",
        "chosen_model": None,
        "weight": 1 / 3,
        "comparison_id": 2**40,
    }
    rows = [odd, *pairs]
    result = write_export(tmp_path, pairs=rows, rankings=rankings)
    expected = "".join(
        json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows
    ).encode()
    assert result.files["pairs"].read_bytes() == expected


def test_jsonl_fields_come_in_table_order_and_nan_is_refused(tmp_path):
    pairs, rankings = synthetic_rows(n_prompts=1)
    shuffled = dict(reversed(list(pairs[0].items())))
    result = write_export(tmp_path / "a", pairs=[shuffled], rankings=[rankings[0]])
    line = result.files["pairs"].read_text()
    assert list(json.loads(line)) == list(PAIR_FIELDS)
    assert line == json.dumps(pairs[0], ensure_ascii=False, separators=(",", ":")) + "\n"
    with pytest.raises(ValueError):
        write_export(tmp_path / "b", pairs=[pairs[0] | {"weight": float("nan")}])
    assert leftovers(tmp_path / "b") == []


def _blocks(chat: bool):
    """Comparisons with Unicode, ties, a missing annotation id and odd models."""
    candidates = {
        7: CandidateText("plain answer", "m-α"),
        3: CandidateText('quote " backslash \\ newline \n tab \t ✓', ""),
        9: CandidateText("third", "m9"),
        4: CandidateText("fourth é", "m4"),
    }
    prompt = [{"role": "user", "content": "Grüß dich?"}] if chat else "Grüß dich?"
    return [
        (
            ComparisonBlock(
                prompt=prompt,
                split=split,
                comparison_id=cid,
                order=[7, 3, 9, 4],
                candidates=candidates,
            ),
            tiers,
            aid,
            labeler,
        )
        for cid, split, tiers, aid, labeler in [
            (11, "train", [[7], [3], [9], [4]], 1, "labeler-a"),
            (11, "train", [[3, 9], [7], [4]], 2, "labeler-é"),
            (12, "test", [[4], [7, 3, 9]], None, "consensus"),
            (12, "test", [[4, 7, 3, 9]], 5, "labeler-b"),  # no preference: no rows
        ]
    ]


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("pairing", ["all_pairs", "best_vs_rest"])
def test_write_annotation_writes_exactly_the_generic_rows(tmp_path, chat, pairing):
    fast = ExportWriter(tmp_path / "fast")
    slow = ExportWriter(tmp_path / "slow")
    written = []
    for block, tiers, aid, labeler in _blocks(chat):
        written.append(
            fast.write_annotation(
                block, tiers=tiers, annotation_id=aid, labeler=labeler, pairing=pairing
            )
        )
        common = dict(
            prompt=block.prompt,
            candidates=block.candidates,
            tiers=tiers,
            split=block.split,
            comparison_id=block.comparison_id,
            annotation_id=aid,
            labeler=labeler,
        )
        pairs = pair_rows(pairing=pairing, **common)
        if pairs:
            slow.write_pairs(pairs)
            slow.write_ranking(ranking_row(order=block.order, **common))
    fast_result, slow_result = fast.finish(), slow.finish()
    assert written[-1] == 0 and sum(written) == fast_result.counts["pairs"] > 0
    for table in ("pairs", "rankings"):
        assert fast_result.files[table].read_bytes() == slow_result.files[table].read_bytes()
    assert fast_result.counts == slow_result.counts


def test_write_annotation_in_parquet_matches_the_jsonl_rows(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    results = {}
    for fmt in ("jsonl", "parquet"):
        writer = ExportWriter(tmp_path / fmt, fmt=fmt)
        for block, tiers, aid, labeler in _blocks(chat=True):
            writer.write_annotation(block, tiers=tiers, annotation_id=aid, labeler=labeler)
        results[fmt] = writer.finish()
    assert pq.read_table(results["parquet"].files["pairs"]).to_pylist() == read_rows(
        results["jsonl"].files["pairs"]
    )


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_write_annotation_refuses_bad_rankings(tmp_path):
    block, _, _, _ = _blocks(chat=False)[0]
    with ExportWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="exactly"):
            writer.write_annotation(block, tiers=[[7], [3]], annotation_id=1, labeler="x")
        with pytest.raises(ValueError, match="twice"):
            writer.write_annotation(
                block, tiers=[[7], [3, 7], [9, 4]], annotation_id=1, labeler="x"
            )
        with pytest.raises(ValueError, match="all-text or all-chat"):
            chat_block, _, _, _ = _blocks(chat=True)[0]
            writer.write_annotation(block, tiers=[[7], [3], [9], [4]], annotation_id=1, labeler="x")
            writer.write_annotation(
                chat_block, tiers=[[7], [3], [9], [4]], annotation_id=1, labeler="x"
            )


def test_write_annotation_handles_long_rankings_and_missing_models(tmp_path):
    ids = list(range(12))
    candidates = {c: CandidateText(f"answer {c}", None if c == 3 else f"m{c}") for c in ids}
    block = ComparisonBlock(
        prompt="q", split="train", comparison_id=1, order=ids, candidates=candidates
    )
    tiers = [[c] for c in ids]  # 12 tiers: margins up to 11
    with ExportWriter(tmp_path / "out") as writer:
        assert writer.write_annotation(block, tiers=tiers, annotation_id=1, labeler="x") == 66
        result = writer.finish()
    rows = read_rows(result.files["pairs"])
    assert max(r["margin"] for r in rows) == 11.0
    assert {r["chosen_model"] for r in rows if r["rejected"] == "answer 11"} >= {None, "m0"}
    (ranking,) = read_rows(result.files["rankings"])
    assert ranking["models"][3] is None and ranking["tiers"] == [[i] for i in ids]
