"""Exact and near duplicates among training examples.

Pure module (stdlib + numpy + scipy); no Django.

* **Exact**: the text of an example (its message contents, see
  :func:`audits.formats.conversation_text`) is case-folded and its whitespace
  collapsed; equal 64-bit BLAKE2b hashes of that are the same example.
* **Near**: MinHash over word 3-shingles estimates the Jaccard similarity of
  two examples; LSH banding (bands and rows chosen for the threshold, see
  :func:`lsh_bands`) proposes candidate pairs within each bucket and a pair
  whose estimated similarity reaches ``threshold`` (default 0.8, at least
  ``MIN_THRESHOLD``) is a near duplicate.  Groups are the connected components
  of those pairs.  The threshold is a soft edge, softer for short texts: the
  detection curve by true similarity and length is measured by
  ``bench/dedupe/run.py`` (see MIN_ROWS_PER_BAND below and the README).

Counting follows the contract: a line counts when it repeats an *earlier*
line — a group of three identical lines counts 2 — and a line counted as an
exact duplicate is never counted again as a near one (near duplicates are
looked for among the first line of each exact group only).

Memory is bounded whatever the line count: every example keeps 16 bytes (its line and exact key), but
signatures (128 bytes each) are kept for at most about ``NEAR_MAX_EXAMPLES`` examples. In a file
with more examples, near duplicates are looked for among a *consistent sample*: the examples whose
first MinHash bin is below a limit (``sample_below`` of 256). Two near duplicates agree on that bin
with probability about their similarity, so they are kept or dropped together — a pair at 0.8
survives a 1/4 sample about 85 % as often as both being kept at random would be 1/16. The report then
says which fraction was sampled, and its near count is a lower bound. Exact duplicates are always
complete.

Why this MinHash: it runs in numpy over whole batches of examples, one hash
per shingle ("one permutation hashing", Li, Owen & Zhang 2012, densified by
rotation, Shrivastava & Li 2014) instead of 128 hashes per shingle, and keeps
8 bits per bin (b-bit MinHash, Li & König 2010) so 100 000 examples need
12.8 MB.  Hashes are deterministic (no ``hash()``), so worker processes agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

DEFAULT_THRESHOLD = 0.8
NUM_BINS = 128  # signature length; split into LSH bands by lsh_bands(threshold)
# With 8-bit bins two unrelated examples agree on a bin 1 time in 256, so a band needs at least 3
# rows (a chance match of 1 in 16.7 million) or the candidate pairs of a big file explode; with 3
# rows, 128 bins still make a pair 0.1 above MIN_THRESHOLD an LSH *candidate* 9 times in 10 (the
# curve 1 - (1 - p**rows)**bands, for long texts). What is *flagged* also depends on the estimate's
# noise, which grows as a text gets shorter (one permutation hashing: a text of n shingles fills at
# most n of the 128 bins). Measured by bench/dedupe/run.py at the default 0.8 (README "Training-data
# audits"): a pair of true similarity 0.85-0.90 is flagged 78 % of the time at 10 words, 82 % at 20,
# 92 % at 40, 97-99 % at 80-300; 0.70-0.75 is flagged 29 % at 10 words, 22 % at 20, 2-4 % at 80-300.
MIN_ROWS_PER_BAND = 3
MIN_THRESHOLD = 0.3
# A bucket member is compared with this many members after it (all of them in smaller buckets):
# one huge bucket (thousands of examples sharing a band) must not cost a quadratic number of pairs.
BUCKET_WINDOW = 32
SHINGLE_WORDS = 3
# Signatures kept at most (≈ 38 MB of them); see the module doc for the sampling above it.
NEAR_MAX_EXAMPLES = 300_000
SAMPLE_LEVELS = 256  # the first bin is a uint8: an example is sampled when it is below `sample_below`
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
_MASK64 = 0xFFFFFFFFFFFFFFFF
_BYTE_BASE = np.uint64(0x100000001B3)  # FNV prime: odd, so invertible modulo 2**64
_BYTE_BASE_INVERSE = np.uint64(pow(0x100000001B3, -1, 1 << 64))


def check_threshold(threshold: float) -> None:
    """The one check of a near-duplicate threshold (the command, the services, the API and the admin
    all come here)."""
    if not MIN_THRESHOLD <= threshold <= 1.0:
        raise ValueError(
            f"near-duplicate threshold must be between {MIN_THRESHOLD:g} and 1, got {threshold:g}: "
            f"the MinHash signature ({NUM_BINS} 8-bit bins) cannot find examples less similar than "
            f"{MIN_THRESHOLD:g} reliably; 0.8 is the usual choice"
        )


def _agreement(similarity: np.ndarray) -> np.ndarray:
    """Chance that two signatures agree on one bin, for examples of this Jaccard similarity."""
    return similarity + (1.0 - similarity) / 256


@lru_cache(maxsize=64)
def lsh_bands(threshold: float) -> tuple[int, int]:
    """(bands, rows per band) for ``threshold``, as datasketch's ``_optimal_param`` chooses them:
    the split of the signature whose candidate curve 1 - (1 - p**rows)**bands best separates
    pairs below the threshold from pairs above it. Missing a pair costs more than proposing one
    (every candidate is verified), so misses weigh three times as much."""
    check_threshold(threshold)
    similarity = np.linspace(0.0, 1.0, 201)
    below = similarity < threshold
    best: tuple[float, int, int] | None = None
    for rows in range(MIN_ROWS_PER_BAND, NUM_BINS + 1):
        bands = NUM_BINS // rows
        candidate = 1.0 - (1.0 - _agreement(similarity) ** rows) ** bands
        cost = 0.25 * np.trapezoid(np.where(below, candidate, 0.0), similarity) + 0.75 * np.trapezoid(
            np.where(below, 0.0, 1.0 - candidate), similarity
        )
        if best is None or cost < best[0]:
            best = (float(cost), bands, rows)
    assert best is not None
    return best[1], best[2]


def normalise(text: str) -> str:
    """Case-folded, whitespace collapsed: what "the same text" means here."""
    return " ".join(text.casefold().split())


def word_shingles(normalised: str) -> frozenset[tuple[str, ...]]:
    """The set the MinHash signature estimates Jaccard similarity on, computed exactly: every
    SHINGLE_WORDS consecutive words of normalised text; a text with fewer words is one shingle of all
    its words (as :func:`minhash_signatures` treats it). For callers that can afford exact similarity."""
    words = normalised.split()
    if len(words) < SHINGLE_WORDS:
        return frozenset({tuple(words)}) if words else frozenset()
    return frozenset(tuple(words[start : start + SHINGLE_WORDS]) for start in range(len(words) - SHINGLE_WORDS + 1))


def exact_key(normalised: str) -> int:
    """A 64-bit fingerprint of normalised text (BLAKE2b, so stable across processes)."""
    return int.from_bytes(hashlib.blake2b(normalised.encode("utf-8"), digest_size=8).digest(), "little")


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit.  In place."""
    values ^= values >> np.uint64(30)
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    values ^= values >> np.uint64(31)
    return values


_power_cache: tuple[np.ndarray, np.ndarray] | None = None


def _power_tables(size: int) -> tuple[np.ndarray, np.ndarray]:
    """base**k and base**-k (mod 2**64) for k < size, kept between batches
    (cumprod is sequential and slow; batches are all about the same size)."""
    global _power_cache
    if _power_cache is None or _power_cache[0].size < size:
        capacity = max(size, 1 << 20)
        powers = np.full(capacity, _BYTE_BASE, dtype=np.uint64)
        powers[0] = 1
        inverse = np.full(capacity, _BYTE_BASE_INVERSE, dtype=np.uint64)
        inverse[0] = 1
        _power_cache = (np.cumprod(powers, dtype=np.uint64), np.cumprod(inverse, dtype=np.uint64))
    return _power_cache


def minhash_signatures(normalised_texts: list[str]) -> np.ndarray:
    """MinHash signatures, one row of ``NUM_BINS`` uint8 per text.

    A text with no words gets an all-255 row and should not be compared.
    """
    count = len(normalised_texts)
    signatures = np.full((count, NUM_BINS), 255, dtype=np.uint8)
    if count == 0:
        return signatures
    encoded = [text.encode("utf-8") for text in normalised_texts]
    lengths = np.fromiter((len(item) for item in encoded), dtype=np.int64, count=count)
    # Texts are joined by "\n", which normalised text never contains.
    buffer = np.frombuffer(b"\n".join(encoded), dtype=np.uint8)
    if buffer.size == 0:
        return signatures
    doc_starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    words = _word_hashes(buffer)
    if words is None:
        return signatures
    word_starts, word_hashes = words
    word_docs = np.searchsorted(doc_starts, word_starts, side="right") - 1
    words_per_doc = np.bincount(word_docs, minlength=count)
    shingle, shingle_docs = _shingles(word_hashes, word_docs, words_per_doc)
    _write_densified(signatures, _bin_minima(shingle, shingle_docs, count))
    return signatures


def _word_hashes(buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(start offset, hash) of every word of `buffer`, or None when it has none."""
    # Word boundaries: a word is a maximal run of bytes that are not " " or "\n".
    is_separator = (buffer == 32) | (buffer == 10)
    is_word = ~is_separator
    edges = np.diff(np.concatenate(([False], is_word, [False])).astype(np.int8))
    word_starts = np.flatnonzero(edges == 1)
    word_ends = np.flatnonzero(edges == -1)
    if word_starts.size == 0:
        return None

    # Polynomial hash of each word's bytes from prefix sums (mod 2**64):
    # hash[a, b) = (P[b] - P[a]) * base**(b - 1), P[j] = Σ_{k<j} s_k · base**-k.
    size = buffer.size
    powers, inverse_powers = _power_tables(size)
    prefix = np.zeros(size + 1, dtype=np.uint64)
    terms = buffer.astype(np.uint64)
    terms += np.uint64(1)
    terms *= inverse_powers[:size]
    np.cumsum(terms, dtype=np.uint64, out=prefix[1:])
    del terms
    word_hashes = prefix[word_ends]
    word_hashes -= prefix[word_starts]
    word_hashes *= powers[word_ends - 1]
    return word_starts, _mix(word_hashes)


def _shingles(word_hashes: np.ndarray, word_docs: np.ndarray, words_per_doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hash, document) of every shingle: SHINGLE_WORDS consecutive words of one document; a document
    with fewer words is one shingle of all its words."""
    shingle = word_hashes.copy()
    for offset in range(1, SHINGLE_WORDS):
        shifted = np.zeros_like(word_hashes)
        shifted[:-offset] = word_hashes[offset:]
        shingle = _mix(shingle * np.uint64(0x9E3779B97F4A7C15) + shifted)
    position_in_doc = np.arange(word_hashes.size) - np.concatenate(([0], np.cumsum(words_per_doc)[:-1]))[word_docs]
    full_shingle = position_in_doc + SHINGLE_WORDS <= words_per_doc[word_docs]
    # For short documents take the shingle starting at their first word, built
    # from as many words as they have (shorter windows wrap into the next doc,
    # so recompute them explicitly).
    short_docs = np.flatnonzero((words_per_doc > 0) & (words_per_doc < SHINGLE_WORDS))
    keep = full_shingle
    if short_docs.size:
        first_word = np.concatenate(([0], np.cumsum(words_per_doc)[:-1]))[short_docs]
        one_word = word_hashes[first_word]
        next_word = word_hashes[np.minimum(first_word + 1, word_hashes.size - 1)]
        two_words = _mix(one_word * np.uint64(0x9E3779B97F4A7C15) + next_word)
        shingle[first_word] = np.where(words_per_doc[short_docs] > 1, two_words, one_word)
        keep = keep.copy()
        keep[first_word] = True
    return _mix(shingle[keep]), word_docs[keep]


def _bin_minima(shingle: np.ndarray, shingle_docs: np.ndarray, count: int) -> np.ndarray:
    """One permutation hashing: the top 7 bits choose the bin, the rest is the value; each bin keeps
    its minimum (`_EMPTY` when no shingle fell in it). One row of NUM_BINS per document."""
    bins = (shingle >> np.uint64(57)).astype(np.int64)
    values = shingle & np.uint64(0x01FFFFFFFFFFFFFF)
    flat = np.full(count * NUM_BINS, _EMPTY, dtype=np.uint64)
    np.minimum.at(flat, shingle_docs * NUM_BINS + bins, values)
    return flat.reshape(count, NUM_BINS)


def _write_densified(signatures: np.ndarray, minima: np.ndarray) -> None:
    """Fill the rows of `signatures` of documents with words from their bin minima.

    Densify by rotation: an empty bin borrows the next non-empty bin to its
    right (circularly), salted with the distance, so short texts still get
    full signatures that estimate Jaccard similarity without bias.
    """
    empty = minima == _EMPTY
    if not empty.any():
        signatures[:] = _mix(minima).astype(np.uint8)
        return
    index = np.where(empty, 2 * NUM_BINS, np.arange(NUM_BINS))
    doubled = np.concatenate((index, index + NUM_BINS), axis=1)
    next_full = np.minimum.accumulate(doubled[:, ::-1], axis=1)[:, ::-1][:, :NUM_BINS]
    has_any = ~empty.all(axis=1)
    next_full = np.where(has_any[:, None], next_full, np.arange(NUM_BINS))
    distance = (next_full - np.arange(NUM_BINS)).astype(np.uint64)
    borrowed = np.take_along_axis(minima, next_full % NUM_BINS, axis=1)
    densified = _mix(borrowed + distance * np.uint64(0x9E3779B97F4A7C15))
    minima = np.where(empty & has_any[:, None], densified, minima)
    signatures[has_any] = _mix(minima[has_any]).astype(np.uint8)


def estimated_similarity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Jaccard estimates for row pairs of 8-bit signatures (corrected for chance matches)."""
    agreement = (first == second).mean(axis=-1)
    return np.clip((agreement - 1 / 256) / (1 - 1 / 256), 0.0, 1.0)


@dataclass
class DuplicateReport:
    """Groups of line numbers; the first line of each group is the one kept."""

    exact_groups: list[list[int]] = field(default_factory=list)
    near_groups: list[list[int]] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD

    @property
    def exact(self) -> int:
        """Lines that repeat an earlier line exactly."""
        return sum(len(group) - 1 for group in self.exact_groups)

    @property
    def near(self) -> int:
        """Lines that nearly repeat an earlier line (and were not exact repeats)."""
        return sum(len(group) - 1 for group in self.near_groups)

    def redundant_lines(self, *, valid_lines: np.ndarray | None = None) -> set[int]:
        """Every line a deduplicated dataset drops: in each group of duplicates (an exact group,
        joined with the exact groups its near group links), every line but the first.

        With ``valid_lines`` (bool per line, index = line - 1) only valid lines count: the first
        *valid* line of a group is kept, because when the first line is broken its valid repeat is
        the copy worth keeping, not a duplicate of a line that is dropped anyway; invalid lines are
        dropped as invalid, not as duplicates, so they are not in the answer.
        """
        exact_by_first = {group[0]: group for group in self.exact_groups}
        in_near_group: set[int] = set()
        groups: list[list[int]] = []
        for near_group in self.near_groups:
            # A near group holds the first line of each exact group it links.
            members = [line for first in near_group for line in exact_by_first.get(first, [first])]
            in_near_group.update(near_group)
            groups.append(sorted(members))
        groups.extend(group for group in self.exact_groups if group[0] not in in_near_group)
        redundant: set[int] = set()
        for group in groups:
            kept_or_dropped = group if valid_lines is None else [line for line in group if valid_lines[line - 1]]
            redundant.update(kept_or_dropped[1:])
        return redundant


@dataclass
class ExampleFingerprints:
    """What duplicate detection needs per example, in compact arrays.

    Built incrementally (``add``) in one process, or from several workers'
    pieces with :meth:`concatenate`.
    """

    lines: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    exact_keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    signatures: np.ndarray = field(default_factory=lambda: np.empty((0, NUM_BINS), dtype=np.uint8))
    # Positions (into `lines`) of the examples `signatures` belongs to, in order; None: every example.
    signature_rows: np.ndarray | None = None

    def rows_with_signatures(self) -> np.ndarray:
        return np.arange(self.lines.size) if self.signature_rows is None else self.signature_rows

    @classmethod
    def concatenate(cls, parts: list[ExampleFingerprints]) -> ExampleFingerprints:
        if not parts:
            return cls()
        offsets = np.cumsum([0] + [part.lines.size for part in parts[:-1]])
        return cls(
            np.concatenate([part.lines for part in parts]),
            np.concatenate([part.exact_keys for part in parts]),
            np.concatenate([part.signatures for part in parts]),
            np.concatenate([part.rows_with_signatures() + offset for part, offset in zip(parts, offsets)]),
        )

    def sample_signatures(self, below: int) -> ExampleFingerprints:
        """Keep the signatures whose first bin is below `below` (a tighter consistent sample)."""
        keep = self.signatures[:, 0] < below
        return ExampleFingerprints(self.lines, self.exact_keys, self.signatures[keep], self.rows_with_signatures()[keep])


def sample_limit(signature_count: int, first_bins: np.ndarray, *, cap: int = NEAR_MAX_EXAMPLES) -> int:
    """The largest `below` that keeps at most `cap` of the signatures whose first bins are counted
    in `first_bins` (a bincount of length SAMPLE_LEVELS); SAMPLE_LEVELS when all fit."""
    if signature_count <= cap:
        return SAMPLE_LEVELS
    kept = np.cumsum(first_bins)
    return max(1, int(np.searchsorted(kept, cap, side="right")))


def sample_below_for(estimated_examples: int, *, cap: int = NEAR_MAX_EXAMPLES) -> int:
    """The first sampling limit for a file expected to hold `estimated_examples` examples."""
    if estimated_examples <= cap:
        return SAMPLE_LEVELS
    return max(1, SAMPLE_LEVELS * cap // estimated_examples)


class FingerprintCollector:
    """Accumulates examples and hashes them in numpy batches (bounded memory)."""

    def __init__(self, *, batch_size: int = 2048, batch_bytes: int = 1 << 20, near: bool = True,
                 sample_below: int = SAMPLE_LEVELS) -> None:
        # Batches of about 1 MB of text keep numpy's temporaries small (and
        # reused), which matters more than batch count on this kind of machine.
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._pending_bytes = 0
        self._near = near
        self._sample_below = sample_below
        self._count = 0
        self._pending_lines: list[int] = []
        self._pending_texts: list[str] = []
        self._lines: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._signatures: list[np.ndarray] = []
        self._signature_rows: list[np.ndarray] = []

    def add(self, *, line: int, text: str) -> None:
        """Record one example's text (raw; it is normalised here). Empty text is ignored."""
        self.add_normalised(line=line, normalised=normalise(text))

    def add_normalised(self, *, line: int, normalised: str) -> None:
        """Record text already passed through :func:`normalise`."""
        if not normalised:
            return
        self._pending_lines.append(line)
        self._pending_texts.append(normalised)
        self._pending_bytes += len(normalised)
        if len(self._pending_texts) >= self._batch_size or self._pending_bytes >= self._batch_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._pending_texts:
            return
        self._lines.append(np.asarray(self._pending_lines, dtype=np.int64))
        self._keys.append(np.fromiter((exact_key(t) for t in self._pending_texts), dtype=np.uint64))
        if self._near:
            signatures = minhash_signatures(self._pending_texts)
            kept = np.flatnonzero(signatures[:, 0] < self._sample_below)
            self._signatures.append(signatures if kept.size == len(signatures) else signatures[kept])
            self._signature_rows.append(kept + self._count)
        self._count += len(self._pending_texts)
        self._pending_lines = []
        self._pending_texts = []
        self._pending_bytes = 0

    def finish(self) -> ExampleFingerprints:
        self._flush()
        if not self._lines:
            return ExampleFingerprints()
        lines, keys = np.concatenate(self._lines), np.concatenate(self._keys)
        self._lines, self._keys = [], []
        if not self._signatures:
            return ExampleFingerprints(lines, keys, np.empty((0, NUM_BINS), dtype=np.uint8), np.empty(0, dtype=np.int64))
        signatures, rows = np.concatenate(self._signatures), np.concatenate(self._signature_rows)
        self._signatures, self._signature_rows = [], []
        return ExampleFingerprints(lines, keys, signatures, rows)


def _runs_of_equal(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of each run of equal adjacent values with length ≥ 2."""
    if sorted_values.size < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    boundaries = np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1
    starts = np.concatenate(([0], boundaries))
    stops = np.concatenate((boundaries, [sorted_values.size]))
    long = stops - starts >= 2
    return starts[long], stops[long]


def find_duplicates(
    fingerprints: ExampleFingerprints,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    near: bool = True,
) -> DuplicateReport:
    """Exact groups, then near groups among the first line of each exact group."""
    check_threshold(threshold)
    report = DuplicateReport(threshold=threshold)
    count = fingerprints.lines.size
    if count == 0:
        return report
    order = np.lexsort((fingerprints.lines, fingerprints.exact_keys))
    sorted_keys = fingerprints.exact_keys[order]
    starts, stops = _runs_of_equal(sorted_keys)
    representative = np.ones(count, dtype=bool)
    for start, stop in zip(starts.tolist(), stops.tolist()):
        members = order[start:stop]
        report.exact_groups.append(fingerprints.lines[members].tolist())
        representative[members[1:]] = False
    report.exact_groups.sort(key=lambda group: group[0])
    if not near:
        return report

    # Candidates: the first line of each exact group, among the examples with a signature. They are
    # masked rather than copied out: the signatures are the largest structure of a big audit.
    signature_rows = fingerprints.rows_with_signatures()
    signatures = fingerprints.signatures
    usable = representative[signature_rows]
    if np.count_nonzero(usable) < 2:
        return report
    first, second = _similar_pairs(signatures, usable, threshold)
    if first.size == 0:
        return report
    # Groups are the connected components of the verified pairs (a union-find over them).
    size = signature_rows.size
    graph = coo_matrix((np.ones(first.size, dtype=np.int8), (first, second)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    involved = np.unique(np.concatenate((first, second)))  # the others are groups of one
    member_lines = fingerprints.lines[signature_rows[involved]]
    label_order = np.lexsort((member_lines, labels[involved]))
    run_starts, run_stops = _runs_of_equal(labels[involved][label_order])
    for start, stop in zip(run_starts.tolist(), run_stops.tolist()):
        report.near_groups.append(member_lines[label_order[start:stop]].tolist())
    report.near_groups.sort(key=lambda group: group[0])
    return report


def _similar_pairs(signatures: np.ndarray, usable: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The (first, second) signature rows of the pairs among `usable` that share an LSH bucket and
    whose estimated similarity reaches `threshold`."""
    bands, rows = lsh_bands(threshold)
    verified_first: list[np.ndarray] = []
    verified_second: list[np.ndarray] = []
    for band in range(bands):
        first, second = _bucket_pairs(_band_keys(signatures, band * rows, rows), usable)
        # Verified band by band, so only similar pairs (few) are kept, never every candidate.
        similar = np.zeros(first.size, dtype=bool)
        for begin in range(0, first.size, 65536):
            end = begin + 65536
            similar[begin:end] = (
                estimated_similarity(signatures[first[begin:end]], signatures[second[begin:end]]) >= threshold
            )
        verified_first.append(first[similar])
        verified_second.append(second[similar])
    return np.concatenate(verified_first), np.concatenate(verified_second)


def _band_keys(signatures: np.ndarray, first_bin: int, rows: int) -> np.ndarray:
    """One 64-bit key per signature for the bins [first_bin, first_bin + rows)."""
    keys = np.zeros(signatures.shape[0], dtype=np.uint64)
    for column in range(first_bin, first_bin + rows):
        keys = _mix(keys * np.uint64(0x9E3779B97F4A7C15) + signatures[:, column].astype(np.uint64))
    return keys


def _bucket_pairs(keys: np.ndarray, usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of positions with equal keys: every pair of a bucket, except that in a bucket larger
    than BUCKET_WINDOW + 1 each member is paired only with the BUCKET_WINDOW members after it
    (in file order) — enough to chain a big group of duplicates together. Only `usable` positions
    (all when None) take part."""
    order = np.argsort(keys, kind="stable")
    if usable is not None:
        order = order[usable[order]]
    sorted_keys = keys[order]
    in_bucket = np.zeros(sorted_keys.size, dtype=bool)
    same = sorted_keys[1:] == sorted_keys[:-1]
    in_bucket[1:] |= same
    in_bucket[:-1] |= same
    order, sorted_keys = order[in_bucket], sorted_keys[in_bucket]
    firsts: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    seconds: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    for distance in range(1, BUCKET_WINDOW + 1):
        # Sorted, so equal keys `distance` apart are in one bucket; none at d means none beyond.
        positions = np.flatnonzero(sorted_keys[distance:] == sorted_keys[:-distance])
        if positions.size == 0:
            break
        firsts.append(order[positions])
        seconds.append(order[positions + distance])
    return np.concatenate(firsts), np.concatenate(seconds)
