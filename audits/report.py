"""The whole-file audit: format, PII, duplicates and difficulty in one streamed pass.

Pure module (stdlib + numpy/scipy + phonenumbers); no Django.  The Django
layer (``AuditRun`` task, ``audit_dataset`` command, admin) calls
:func:`audit_file` and stores :meth:`AuditReport.to_contract_dict`.

The file is read line by line (never whole).  With ``workers=2`` it is cut
into byte ranges at line boundaries and each range is audited in its own
process; only compact per-example fingerprints come back, and duplicates are
grouped across the whole file in the parent.

A report never holds the PII it found: counts, line numbers and masked
samples only.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audits import difficulty as difficulty_module
from audits.dedupe import (
    DEFAULT_THRESHOLD,
    NEAR_MAX_EXAMPLES,
    NUM_BINS,
    SAMPLE_LEVELS,
    DuplicateReport,
    ExampleFingerprints,
    FingerprintCollector,
    find_duplicates,
    normalise,
    sample_below_for,
    sample_limit,
)
from audits.formats import (
    DEFAULT_MAX_LINE_BYTES,
    FormatError,
    check_line,
    conversation_text,
    iter_raw_lines,
    iter_texts,
    unparsed_text,
)
from audits.pii import DEFAULT_PHONE_REGIONS, PII_TYPES, PiiMatch, mask, scan_text

#: Per-line difficulty level codes in :attr:`AuditReport.levels`.
NOT_AN_EXAMPLE = 255
LEVEL_CODES = {level: code for code, level in enumerate(difficulty_module.LEVELS)}

MAX_FORMAT_ERRORS = 1000
MAX_PII_SAMPLES_PER_TYPE = 5
MAX_PII_LINES_PER_TYPE = 1000
MAX_DIFFICULTY_EXAMPLES_PER_LEVEL = 3
MAX_GROUPS_IN_JSON = 100
# A group of near-identical examples can be most of the file; a report stays small.
MAX_LINES_PER_GROUP = 20
# Below this size one process is faster than starting workers.
_PARALLEL_MIN_BYTES = 8 * 1024 * 1024
_SLICES_PER_WORKER = 4  # finer slices: progress to report and work to balance

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes in total)


class UnreadableDataset(Exception):
    """The file cannot be read at all (missing, a directory, no permission)."""


@dataclass(frozen=True, slots=True)
class PiiSample:
    line: int
    type: str
    masked: str
    value_key: int = 0  # crc32 of the raw value: tells samples apart without keeping the value


@dataclass(frozen=True, slots=True)
class DifficultyExample:
    line: int
    score: float
    explanation: str


@dataclass
class AuditOptions:
    near_threshold: float = DEFAULT_THRESHOLD
    find_near_duplicates: bool = True
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_format_errors: int = MAX_FORMAT_ERRORS
    # Consistent sample of the near-duplicate signatures (audits/dedupe.py): SAMPLE_LEVELS keeps all.
    near_sample_below: int = SAMPLE_LEVELS
    near_max_examples: int = NEAR_MAX_EXAMPLES


@dataclass
class _SliceResult:
    """What one byte range yields, with line numbers local to the range (from 1)."""

    lines: int = 0
    valid: int = 0
    bytes_read: int = 0
    format_errors: list[tuple[int, str]] = field(default_factory=list)
    format_error_total: int = 0
    pii_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_TYPES, 0))
    pii_samples: list[PiiSample] = field(default_factory=list)
    pii_lines: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in PII_TYPES})
    pii_line_total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_TYPES, 0))
    levels: bytes = b""
    validity: bytes = b""  # 1 per valid line, 0 otherwise
    difficulty_examples: dict[str, list[DifficultyExample]] = field(
        default_factory=lambda: {level: [] for level in difficulty_module.LEVELS}
    )
    fingerprints: ExampleFingerprints = field(default_factory=ExampleFingerprints)


@dataclass
class AuditReport:
    """Everything an audit found.  ``to_contract_dict`` is the ``--json`` object."""

    path: str
    size_bytes: int
    lines: int
    valid: int
    examples: int  # valid examples: the difficulty mix is of these
    format_errors: list[FormatError]
    format_error_total: int
    pii_counts: dict[str, int]
    pii_samples: dict[str, list[PiiSample]]
    pii_lines: dict[str, list[int]]  # the first MAX_PII_LINES_PER_TYPE lines per type
    pii_line_total: dict[str, int]  # lines with at least one occurrence, per type
    duplicates: DuplicateReport
    difficulty_counts: dict[str, int]
    difficulty_examples: dict[str, list[DifficultyExample]]
    levels: np.ndarray  # uint8 per line (index = line - 1): LEVEL_CODES, NOT_AN_EXAMPLE for invalid lines
    valid_lines: np.ndarray  # bool per line (index = line - 1)
    seconds: float
    workers: int
    notes: list[str] = field(default_factory=list)
    # 1.0, or the share of examples near duplicates were looked for among (audits/dedupe.py).
    near_sampled_fraction: float = 1.0

    @property
    def difficulty(self) -> dict[str, float]:
        return difficulty_module.distribution(self.difficulty_counts)

    @property
    def has_findings(self) -> bool:
        """Anything a person should act on: bad lines, PII or duplicates."""
        return bool(
            self.format_error_total
            or any(self.pii_counts.values())
            or self.duplicates.exact
            or self.duplicates.near
        )

    def redundant_lines(self) -> set[int]:
        """Valid lines a deduplicated copy drops (see :meth:`DuplicateReport.redundant_lines`)."""
        return self.duplicates.redundant_lines(valid_lines=self.valid_lines)

    def examples_by_level(self, *, drop_duplicates: bool = True) -> dict[int, str]:
        """Line → level for the examples a rebalanced dataset may use (valid lines only: only they have a level)."""
        lines = np.flatnonzero(self.levels != NOT_AN_EXAMPLE) + 1
        redundant = self.redundant_lines() if drop_duplicates else set()
        names = difficulty_module.LEVELS
        return {int(line): names[self.levels[line - 1]] for line in lines.tolist() if line not in redundant}

    def level_of_line(self, line: int) -> str | None:
        code = int(self.levels[line - 1]) if 0 < line <= self.levels.size else NOT_AN_EXAMPLE
        return None if code == NOT_AN_EXAMPLE else difficulty_module.LEVELS[code]

    def to_contract_dict(self, *, max_groups: int = MAX_GROUPS_IN_JSON) -> dict[str, Any]:
        """The contract's ``audit_dataset --json`` object, plus extra keys.

        Contract keys: ``lines``, ``valid``, ``format_errors`` [{line, detail}],
        ``pii`` (every type, 0 when none), ``duplicates`` {exact, near},
        ``difficulty`` {easy, medium, hard} fractions.  Everything else is extra
        detail for people; none of it contains raw PII.
        """
        return {
            "lines": self.lines,
            "valid": self.valid,
            "format_errors": [{"line": error.line, "detail": error.detail} for error in self.format_errors],
            "pii": dict(self.pii_counts),
            "duplicates": {"exact": self.duplicates.exact, "near": self.duplicates.near},
            "difficulty": self.difficulty,
            # Extras.
            "file": {"path": self.path, "bytes": self.size_bytes},
            "examples": self.examples,
            "format_errors_total": self.format_error_total,
            "format_errors_truncated": self.format_error_total > len(self.format_errors),
            "pii_samples": {
                pii_type: [{"line": s.line, "masked": s.masked} for s in samples]
                for pii_type, samples in self.pii_samples.items()
            },
            "pii_lines": {pii_type: lines for pii_type, lines in self.pii_lines.items()},
            "pii_lines_total": dict(self.pii_line_total),
            "duplicate_groups": {
                "exact": [_capped_group(group) for group in self.duplicates.exact_groups[:max_groups]],
                "near": [_capped_group(group) for group in self.duplicates.near_groups[:max_groups]],
                "exact_total": len(self.duplicates.exact_groups),
                "near_total": len(self.duplicates.near_groups),
                "near_threshold": self.duplicates.threshold,
                "near_sampled_fraction": round(self.near_sampled_fraction, 4),
            },
            "difficulty_counts": dict(self.difficulty_counts),
            "difficulty_examples": {
                level: [{"line": e.line, "score": e.score, "explanation": e.explanation} for e in examples]
                for level, examples in self.difficulty_examples.items()
            },
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "notes": list(self.notes),
        }


def _capped_group(group: list[int]) -> dict[str, Any]:
    """A duplicate group as stored and shown: its first lines (the first is the one kept) and its size."""
    return {"lines": group[:MAX_LINES_PER_GROUP], "total": len(group)}


# --------------------------------------------------------------------------- one range


def _audit_range(
    path: str,
    start: int,
    end: int | None,
    options: AuditOptions,
    progress: ProgressCallback | None = None,
    total_bytes: int = 0,
) -> _SliceResult:
    """Audit the lines that start in [start, end) of the file.

    ``progress`` (in-process only) hears (bytes done, ``total_bytes``) every
    10 000 lines.
    """
    result = _SliceResult()
    collector = FingerprintCollector(near=options.find_near_duplicates, sample_below=options.near_sample_below)
    levels = bytearray()
    validity = bytearray()
    difficulty_examples = result.difficulty_examples
    samples_per_type = dict.fromkeys(PII_TYPES, 0)
    with open(path, "rb") as stream:
        stream.seek(start)
        for raw in iter_raw_lines(stream, end_offset=end, max_line_bytes=options.max_line_bytes):
            line = raw.number
            result.lines += 1
            checked = check_line(raw, first_in_file=start == 0 and line == 1, max_line_bytes=options.max_line_bytes)
            validity.append(1 if checked.valid else 0)
            if checked.valid:
                result.valid += 1
            else:
                result.format_error_total += checked.error_count  # every problem, not just those listed
                room = options.max_format_errors - len(result.format_errors)
                if room > 0:
                    result.format_errors.extend((line, detail) for detail in checked.errors[:room])

            # PII: in every string, key and long number of a parsed line; otherwise in its text, strings decoded.
            # "\x00" joins them because no detector matches across it.
            text = "\x00".join(iter_texts(checked.record)) if checked.parsed else unparsed_text(checked.text)
            if text:
                matches = scan_text(text, phone_regions=options.phone_regions)
                if matches:
                    _record_pii(result, line, text, matches, samples_per_type)

            if checked.is_example:  # invalid ones too: their valid repeat is the line a deduplicated copy keeps
                collector.add_normalised(line=line, normalised=(normalised := normalise(conversation_text(checked.record))))
            if checked.is_example and checked.valid:  # the mix is of what can be trained on
                score = difficulty_module.quick_score(checked.record, normalised_conversation=normalised)
                level = difficulty_module.level_for(score)
                levels.append(LEVEL_CODES[level])
                if len(difficulty_examples[level]) < MAX_DIFFICULTY_EXAMPLES_PER_LEVEL:
                    explained = difficulty_module.score_example(checked.record, normalised_conversation=normalised)
                    difficulty_examples[level].append(DifficultyExample(line, explained.score, explained.explain()))
            else:
                levels.append(NOT_AN_EXAMPLE)
            if progress is not None and line % 10000 == 0:
                progress(stream.tell(), total_bytes)
        result.bytes_read = stream.tell() - start
    result.levels = bytes(levels)
    result.validity = bytes(validity)
    result.fingerprints = collector.finish()
    return result


def _record_pii(
    result: _SliceResult, line: int, text: str, matches: list[PiiMatch], samples_per_type: dict[str, int]
) -> None:
    """Count a line's PII; keep its line number and a masked sample of each distinct value (never the
    value itself: a repeat of a value already sampled is recognised by its checksum)."""
    types_on_line = set()
    for match in matches:
        result.pii_counts[match.type] += 1
        types_on_line.add(match.type)
        if samples_per_type[match.type] < MAX_PII_SAMPLES_PER_TYPE:
            value = match.value_in(text)
            key = zlib.crc32(value.encode("utf-8", "surrogatepass"))
            if any(sample.value_key == key and sample.type == match.type for sample in result.pii_samples):
                continue
            samples_per_type[match.type] += 1
            result.pii_samples.append(PiiSample(line, match.type, mask(value, match.type), key))
    for pii_type in types_on_line:
        result.pii_line_total[pii_type] += 1
        if len(result.pii_lines[pii_type]) < MAX_PII_LINES_PER_TYPE:
            result.pii_lines[pii_type].append(line)


def _line_start_offsets(path: str, size: int, pieces: int) -> list[int]:
    """Offsets where ``pieces`` ranges start, each at the beginning of a line."""
    offsets = [0]
    with open(path, "rb") as stream:
        for index in range(1, pieces):
            stream.seek(max(offsets[-1], size * index // pieces))
            if stream.tell() > 0:
                stream.seek(stream.tell() - 1)
                # Finish the line we landed in (or the "\n" before it), a chunk at a
                # time: one line may be most of the file.
                while True:
                    chunk = stream.readline(1 << 20)
                    if not chunk or chunk.endswith(b"\n"):
                        break
            position = stream.tell()
            if position >= size:
                break
            if position > offsets[-1]:
                offsets.append(position)
    return offsets


@dataclass
class _Findings:
    """The per-line findings of the whole file, merged from its parts (line numbers made global)."""

    format_errors: list[FormatError] = field(default_factory=list)
    format_error_total: int = 0
    pii_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_TYPES, 0))
    pii_samples: dict[str, list[PiiSample]] = field(default_factory=lambda: {t: [] for t in PII_TYPES})
    pii_lines: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in PII_TYPES})
    pii_line_total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_TYPES, 0))
    difficulty_examples: dict[str, list[DifficultyExample]] = field(
        default_factory=lambda: {level: [] for level in difficulty_module.LEVELS}
    )

    def add(self, part: _SliceResult, *, offset: int, options: AuditOptions) -> None:
        """Add a part whose first line is line `offset` + 1 of the file, within the report's caps."""
        for line, detail in part.format_errors:
            if len(self.format_errors) < options.max_format_errors:
                self.format_errors.append(FormatError(line + offset, f"line {line + offset}: {detail}"))
        self.format_error_total += part.format_error_total
        for pii_type in PII_TYPES:
            self.pii_counts[pii_type] += part.pii_counts[pii_type]
            self.pii_line_total[pii_type] += part.pii_line_total[pii_type]
            room = MAX_PII_LINES_PER_TYPE - len(self.pii_lines[pii_type])
            self.pii_lines[pii_type].extend(line + offset for line in part.pii_lines[pii_type][:room])
        for sample in part.pii_samples:
            kept = self.pii_samples[sample.type]
            if len(kept) < MAX_PII_SAMPLES_PER_TYPE and all(other.value_key != sample.value_key for other in kept):
                kept.append(PiiSample(sample.line + offset, sample.type, sample.masked, sample.value_key))
        for level, examples in part.difficulty_examples.items():
            for example in examples:
                if len(self.difficulty_examples[level]) < MAX_DIFFICULTY_EXAMPLES_PER_LEVEL:
                    self.difficulty_examples[level].append(
                        DifficultyExample(example.line + offset, example.score, example.explanation)
                    )


def _merged_fingerprints(parts: list[_SliceResult]) -> ExampleFingerprints:
    """The parts' fingerprints in one set of arrays (line numbers made global). Copied part by part,
    freeing each part's as it goes, so the parent never holds them twice."""
    example_count = sum(part.fingerprints.lines.size for part in parts)
    signature_count = sum(part.fingerprints.signatures.shape[0] for part in parts)
    merged = ExampleFingerprints(
        np.empty(example_count, dtype=np.int64),
        np.empty(example_count, dtype=np.uint64),
        np.empty((signature_count, NUM_BINS), dtype=np.uint8),
        np.empty(signature_count, dtype=np.int64),
    )
    offset = filled = signed = 0
    for part in parts:
        piece = part.fingerprints
        stop = filled + piece.lines.size
        merged.lines[filled:stop] = piece.lines + offset
        merged.exact_keys[filled:stop] = piece.exact_keys
        signed_stop = signed + piece.signatures.shape[0]
        merged.signatures[signed:signed_stop] = piece.signatures
        merged.signature_rows[signed:signed_stop] = piece.rows_with_signatures() + filled  # type: ignore[index]
        signed = signed_stop
        filled = stop
        part.fingerprints = ExampleFingerprints()
        offset += part.lines
    return merged


def _merge(path: str, size: int, parts: list[_SliceResult], options: AuditOptions) -> AuditReport:
    findings = _Findings()
    offset = 0
    for part in parts:
        findings.add(part, offset=offset, options=options)
        offset += part.lines
    all_fingerprints = _merged_fingerprints(parts)
    signature_count = all_fingerprints.signatures.shape[0]
    levels = np.frombuffer(b"".join(part.levels for part in parts), dtype=np.uint8)
    counts = np.bincount(levels[levels != NOT_AN_EXAMPLE], minlength=len(difficulty_module.LEVELS))
    difficulty_counts = {level: int(counts[code]) for level, code in LEVEL_CODES.items()}
    # The workers sampled from an estimate of the example count; with more than that, the sample is
    # made tighter here (consistently: the same rule with a lower limit).
    sample_below = options.near_sample_below
    if signature_count > options.near_max_examples * 5 // 4:
        first_bins = np.bincount(all_fingerprints.signatures[:, 0], minlength=SAMPLE_LEVELS)
        sample_below = min(sample_below, sample_limit(signature_count, first_bins, cap=options.near_max_examples))
        all_fingerprints = all_fingerprints.sample_signatures(sample_below)
    duplicates = find_duplicates(
        all_fingerprints,
        threshold=options.near_threshold,
        near=options.find_near_duplicates,
    )
    lines = sum(part.lines for part in parts)
    if lines == 0:
        findings.format_errors = [FormatError(0, "the file is empty: it has no lines, so no examples to train on")]
        findings.format_error_total = 1
    return AuditReport(
        path=path,
        size_bytes=size,
        lines=lines,
        valid=sum(part.valid for part in parts),
        examples=int(sum(difficulty_counts.values())),
        format_errors=findings.format_errors,
        format_error_total=findings.format_error_total,
        pii_counts=findings.pii_counts,
        pii_samples=findings.pii_samples,
        pii_lines=findings.pii_lines,
        pii_line_total=findings.pii_line_total,
        duplicates=duplicates,
        difficulty_counts=difficulty_counts,
        difficulty_examples=findings.difficulty_examples,
        levels=levels,
        valid_lines=np.frombuffer(b"".join(part.validity for part in parts), dtype=np.uint8).astype(bool),
        seconds=0.0,
        workers=1,
        near_sampled_fraction=sample_below / SAMPLE_LEVELS,
    )


def _start_method() -> str:
    """"fork" when this process has a single thread (workers start in
    milliseconds, with everything imported); "spawn" otherwise, because forking
    a threaded process (a web server, a threaded worker) can copy a lock that
    another thread holds into the child."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _can_start_processes() -> str | None:
    """Why worker processes cannot be started here, or None when they can."""
    if multiprocessing.current_process().daemon:
        return "this process is a daemon (e.g. a multiprocessing pool worker), which may not have children"
    return None


def audit_file(
    path: str | os.PathLike[str],
    *,
    workers: int = 1,
    near_threshold: float = DEFAULT_THRESHOLD,
    find_near_duplicates: bool = True,
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_format_errors: int = MAX_FORMAT_ERRORS,
    progress: ProgressCallback | None = None,
    near_max_examples: int = NEAR_MAX_EXAMPLES,
) -> AuditReport:
    """Audit a chat JSONL file: format, PII, duplicates, difficulty.

    ``workers`` > 1 audits byte ranges of the file in that many processes
    (files under 8 MB, or a process that may not fork, use one).  ``progress``
    is called with (bytes done, bytes in total) as ranges finish.

    Raises :class:`UnreadableDataset` when the file cannot be opened.
    """
    started = time.perf_counter()
    path_text = os.fspath(path)
    try:
        size = Path(path_text).stat().st_size
        with open(path_text, "rb") as probe:
            probe.read(1)
    except OSError as error:
        raise UnreadableDataset(f"cannot read {path_text}: {error.strerror or error}") from error
    options = AuditOptions(
        near_threshold=near_threshold,
        find_near_duplicates=find_near_duplicates,
        phone_regions=tuple(phone_regions),
        max_line_bytes=max_line_bytes,
        max_format_errors=max_format_errors,
        near_sample_below=sample_below_for(_estimated_lines(path_text, size), cap=near_max_examples),
        near_max_examples=near_max_examples,
    )
    notes: list[str] = []
    parts, used_workers = _audit_parts(path_text, size, workers=workers, options=options, progress=progress, notes=notes)
    report = _merge(path_text, size, parts, options)
    report.workers = used_workers
    report.notes.extend(notes)
    report.seconds = time.perf_counter() - started
    if report.near_sampled_fraction < 1.0:
        report.notes.append(
            f"near duplicates were looked for among about {report.near_sampled_fraction:.0%} of the examples "
            f"(a consistent MinHash sample, to keep memory bounded above {near_max_examples:,} examples): "
            "the near count is a lower bound; exact duplicates are complete"
        )
    return report


def _audit_parts(
    path: str, size: int, *, workers: int, options: AuditOptions, progress: ProgressCallback | None, notes: list[str]
) -> tuple[list[_SliceResult], int]:
    """(the audited parts of the file, the processes used): byte ranges in `workers` processes when
    the file is large enough and processes can start, else the whole file here (saying why in `notes`)."""
    if workers > 1 and size >= _PARALLEL_MIN_BYTES:
        refusal = _can_start_processes()
        if refusal is None:
            offsets = _line_start_offsets(path, size, workers * _SLICES_PER_WORKER)
            ranges = list(zip(offsets, offsets[1:] + [None]))
            try:
                return _audit_in_processes(path, size, ranges, workers, options, progress), workers
            except (OSError, RuntimeError) as error:  # e.g. no /dev/shm, fork refused
                notes.append(f"ran in one process: could not start {workers} workers ({error})")
        else:
            notes.append(f"ran in one process: {refusal}")
    parts = [_audit_range(path, 0, None, options, progress, size)]
    if progress is not None:
        progress(size, size)
    return parts, 1


def _estimated_lines(path: str, size: int, *, probe_bytes: int = 1 << 20) -> int:
    """Lines in the file, from the mean length of those in its first MB (for sizing, not counting)."""
    with open(path, "rb") as stream:
        head = stream.read(probe_bytes)
    newlines = head.count(b"\n")
    if not head or newlines == 0:
        return 1
    return size * newlines // len(head)


def _audit_in_processes(
    path: str,
    size: int,
    ranges: list[tuple[int, int | None]],
    workers: int,
    options: AuditOptions,
    progress: ProgressCallback | None,
) -> list[_SliceResult]:
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(max_workers=min(workers, len(ranges)), mp_context=context) as pool:
        futures = [pool.submit(_audit_range, path, start, end, options) for start, end in ranges]
        parts: list[_SliceResult] = []
        done = 0
        for future in futures:  # in file order, so line numbers can be shifted
            part = future.result()
            parts.append(part)
            done += part.bytes_read
            if progress is not None:
                progress(min(done, size), size)
    return parts
