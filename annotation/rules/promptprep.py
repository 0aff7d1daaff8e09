"""Prompt preparation at import: length bounds, personal data, duplicates, a cap per source.

One `PromptFilter` sees the rows of a file in order and decides, for each, keep (perhaps
redacted) or remove, with the filter that removed it. The filters run in this order:

1. length: the prompt's characters (all turns) outside `min_chars`..`max_chars`;
2. pii: `redact` replaces personal data with typed placeholders (`pii.py`), `drop` removes
   the prompt;
3. exact: the same turns as an earlier row of the file (after redaction). Rows with an
   `external_id` are exempt in `exact` mode: other files refer to them by id, and today's
   import keeps them;
4. near: with `dedup="near"`, Jaccard similarity >= `near_threshold` over character
   5-gram shingles (lower-cased, whitespace collapsed) with an earlier kept row or a prompt
   already stored, estimated by MinHash LSH: datasketch computes the signatures and picks
   the bands; each band's buckets are a Bloom filter sized for the expected rows (the
   LSHBloom layout), so memory is fixed up front (about 30 bytes a row) instead of growing
   by kilobytes a row as with dict buckets. LSH finds pairs above the threshold with high
   probability and some a little below it; the Bloom filters add false matches at about
   `BLOOM_FP` per band and row;
5. source: more than `max_per_source` kept rows from one source (the row's `source`
   field, else `metadata.source`); the first ones in file order stay.

Everything is deterministic: same file and options, same decisions.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from annotation.rules import pii

DEDUP_MODES = ("none", "exact", "near")
PII_MODES = ("keep", "redact", "drop")
FILTERS = ("length", "pii", "exact", "near", "source")
SHINGLE = 5
NUM_PERM = 128
BLOOM_FP = 1e-5  # per band; a row is a near duplicate when any of its bands matches
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class PrepOptions:
    dedup: str = "exact"
    near_threshold: float = 0.8
    pii: str = "keep"
    pii_region: str | None = "US"
    min_chars: int | None = None
    max_chars: int | None = None
    max_per_source: int | None = None

    def __post_init__(self):
        if self.dedup not in DEDUP_MODES:
            raise ValueError(f"dedup must be one of {', '.join(DEDUP_MODES)}, not {self.dedup!r}")
        if self.pii not in PII_MODES:
            raise ValueError(f"pii must be one of {', '.join(PII_MODES)}, not {self.pii!r}")
        # Above 0.98, 128 permutations leave LSH a single band; exact dedup covers 1.0.
        if not 0.05 <= self.near_threshold <= 0.98:
            raise ValueError(f"near threshold must be in [0.05, 0.98], not {self.near_threshold}")
        for name in ("min_chars", "max_chars", "max_per_source"):
            value = getattr(self, name)
            if value is not None and value < (1 if name == "max_per_source" else 0):
                raise ValueError(f"{name} must be positive, not {value}")
        bounds = (self.min_chars, self.max_chars)
        if None not in bounds and bounds[0] > bounds[1]:
            raise ValueError(f"min_chars {self.min_chars} is above max_chars {self.max_chars}")


@dataclass(frozen=True, slots=True)
class Decision:
    keep: bool
    messages: list[dict]  # the turns to store (redacted where personal data was found)
    filter: str | None = None  # what removed the row (FILTERS), None when kept
    detail: str = ""
    redacted: Counter = field(default_factory=Counter)


def prompt_chars(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


def normalized_text(messages: list[dict]) -> str:
    return _SPACE.sub(" ", "\n".join(m["content"] for m in messages)).strip().lower()


def shingles(text: str, size: int = SHINGLE) -> set[bytes]:
    if len(text) <= size:
        return {text.encode("utf-8")}
    return {text[i : i + size].encode("utf-8") for i in range(len(text) - size + 1)}


class BandBloom:
    """Bloom filters over LSH band digests, one per band, sized for `expected` rows."""

    def __init__(self, bands: int, expected: int, fp: float = BLOOM_FP):
        import numpy as np

        self.hashes = max(1, math.ceil(-math.log2(fp)))
        self.bits = max(64, math.ceil(expected * self.hashes / math.log(2)))
        self.tables = np.zeros((bands, (self.bits + 7) // 8), dtype=np.uint8)
        self._steps = np.arange(self.hashes, dtype=np.uint64)
        self._rows = np.arange(bands)[:, None]

    def _positions(self, bands: list[bytes]):
        """(bands, hashes) bit positions by double hashing of each band's blake2b digest."""
        import numpy as np

        digests = b"".join(hashlib.blake2b(band, digest_size=16).digest() for band in bands)
        h = np.frombuffer(digests, dtype="<u8").reshape(len(bands), 2)
        h1, h2 = h[:, :1], h[:, 1:] | np.uint64(1)
        return (h1 + self._steps * h2) % np.uint64(self.bits)  # wraps mod 2**64: still uniform

    def contains_any(self, bands: list[bytes]) -> bool:
        pos = self._positions(bands)
        bits = (self.tables[self._rows, pos >> 3] >> (pos & 7).astype("u1")) & 1
        return bool(bits.all(axis=1).any())

    def add(self, bands: list[bytes]) -> None:
        import numpy as np

        pos = self._positions(bands)
        np.bitwise_or.at(self.tables, (self._rows, pos >> 3), (1 << (pos & 7)).astype("u1"))

    @property
    def nbytes(self) -> int:
        return int(self.tables.nbytes)


class PromptFilter:
    """Decides row by row; holds the exact-duplicate digests and the MinHash LSH index."""

    def __init__(self, options: PrepOptions, *, expected_rows: int = 100_000):
        """`expected_rows`: rows the near-duplicate index will hold (the file and the stored
        prompts); more than that raises the false-match rate, not the memory."""
        self.options = options
        self.removed = Counter()  # filter -> rows removed
        self.redacted_rows = 0
        self.redacted = Counter()  # kind of personal data -> occurrences replaced
        self._exact: set[bytes] = set()
        self._per_source = Counter()
        self._lsh: BandBloom | None = None
        if options.dedup == "near":
            from datasketch import MinHash
            from datasketch.lsh import _optimal_param

            self._template = MinHash(num_perm=NUM_PERM, seed=1)
            bands, self._rows = _optimal_param(options.near_threshold, NUM_PERM, 0.5, 0.5)
            self._lsh = BandBloom(bands, max(expected_rows, 1000))
            # In near mode exact repeats go to a Bloom filter too: memory stays fixed.
            self._exact_bloom = BandBloom(1, max(expected_rows, 1000))

    def _bands(self, messages: list[dict]) -> list[bytes]:
        """The row's LSH band keys: its MinHash signature cut into bands of `_rows` values."""
        from datasketch import MinHash

        t = self._template  # sharing the permutations saves 2/3 of the time per row
        signature = MinHash(NUM_PERM, seed=1, permutations=t.permutations, scheme=t.scheme)
        signature.update_batch(list(shingles(normalized_text(messages))))
        values, r = signature.hashvalues, self._rows
        return [values[i : i + r].tobytes() for i in range(0, len(self._lsh.tables) * r, r)]

    def add_stored(self, messages: list[dict]) -> None:
        """Index a prompt already in the project, so near duplicates of it are removed too."""
        if self._lsh is not None:
            self._lsh.add(self._bands(messages))

    def _remove(self, name: str, messages: list[dict], detail: str) -> Decision:
        self.removed[name] += 1
        return Decision(False, messages, name, detail)

    def clean(self, messages: list[dict]) -> Decision:
        """Length bounds and personal data: run first, on the row as read."""
        o = self.options
        chars = prompt_chars(messages)
        if o.min_chars is not None and chars < o.min_chars:
            return self._remove("length", messages, f"{chars} characters, fewer than {o.min_chars}")
        if o.max_chars is not None and chars > o.max_chars:
            return self._remove("length", messages, f"{chars} characters, more than {o.max_chars}")
        if o.pii == "keep":
            return Decision(True, messages)
        redacted, found = [], Counter()
        for message in messages:
            content, counts = pii.redact(message["content"], region=o.pii_region)
            redacted.append({**message, "content": content})
            found += counts
        if not found:
            return Decision(True, messages)
        if o.pii == "drop":
            kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(found.items()))
            return self._remove("pii", messages, f"personal data: {kinds}")
        self.redacted_rows += 1
        self.redacted += found
        return Decision(True, redacted, redacted=found)

    def dedupe(
        self,
        messages: list[dict],
        *,
        source: str | None = None,
        has_external_id: bool = False,
        stored: bool = False,
        stored_copy: bool = False,
    ) -> Decision:
        """Duplicates and the per-source cap, on the row as `clean` left it. `stored`: the
        row is already in the project (the import counts it unchanged), so it passes the
        duplicate filters untouched. `stored_copy`: a prompt with the same content is stored
        under another external_id (or none), so this row would be a second copy."""
        o = self.options
        if o.dedup != "none" and not stored:
            digest = hashlib.blake2b(
                "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in messages).encode(),
                digest_size=16,
            ).digest()
            exempt = has_external_id and o.dedup == "exact"
            if stored_copy and not exempt:
                return self._remove("exact", messages, "same text as a stored prompt")
            if self._lsh is not None:
                seen = self._exact_bloom.contains_any([digest])
            else:
                seen = digest in self._exact
            if seen and not exempt:
                return self._remove("exact", messages, "same text as an earlier row")
            if self._lsh is not None:
                bands = self._bands(messages)
                if self._lsh.contains_any(bands):
                    return self._remove(
                        "near", messages, f"Jaccard >= {o.near_threshold} with an earlier prompt"
                    )
                self._lsh.add(bands)
                self._exact_bloom.add([digest])
            else:
                self._exact.add(digest)
        if o.max_per_source is not None and source:
            # A row without a source belongs to no source: it is not capped (one bucket for
            # them all kept only N prompts of a file that names no sources).
            key = source
            if self._per_source[key] >= o.max_per_source:
                return self._remove(
                    "source", messages, f"source {key!r} already has {o.max_per_source} prompts"
                )
            self._per_source[key] += 1
        return Decision(True, messages)
