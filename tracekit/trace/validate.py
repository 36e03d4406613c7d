"""Validation of a trace bundle against every rule of `tracekit.trace.rules`, vectorized.

All findings are collected rather than stopping at the first; each names the rule, the table and
file, how many rows break it and the first five of them. For example, a bundle whose instruction
7 ends before it starts gives

    Finding(rule=Rule.END_BEFORE_START, table="instructions", file="instructions.parquet",
            count=1, rows=(7,), examples=("id=7 start=120 end=100",), ...)

Row numbers count from 0 in file order. Checks on rows run as polars or NumPy operations over
whole columns; nothing loops over rows in Python.

Most bundles break no rule, so each table is first checked the cheap way (`_Validator.clean`):
only the columns some rule still needs are read, as Arrow arrays (names as dictionary codes), and
each rule only asks whether any row breaks it. A table that may break one is checked again the
exact way, which finds and describes every offending row. The quick check of a command
(`require_valid`) also settles rules from the Parquet footer's statistics (null counts, minima
and maxima, which the writer computed from the data and the manifest's sha256 protects), so that
it reads no column those settle; `validate` reads every column a rule covers.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.errors import InvalidTraceError, first_line
from tracekit.trace.bundle import bundle_dir, file_sha256, outside_link
from tracekit.trace.manifest import is_count, is_sha256, manifest_problems, read_manifest_json
from tracekit.trace.rules import RULES, Rule, Severity
from tracekit.trace.schema import (
    MANIFEST_FILE,
    ON_CHIP_SPACES,
    PARQUET_KEY_TABLE,
    PARQUET_KEY_VERSION,
    REFERENCES,
    TABLES,
    ColumnSpec,
    ColumnType,
    MemSpace,
    SemOp,
    TableSpec,
    column_type_ok,
    duplicate_names,
)
from tracekit.trace.upgrade import version_problem

MAX_ROWS_SHOWN = 5
"""How many offending rows a finding lists."""

BATCH_ROWS = 1 << 21
"""Rows per batch when reading a table whose rules are all row by row."""


@dataclass(frozen=True)
class Finding:
    """One broken rule: where, how many rows, the first few of them, and what to do."""

    rule: Rule
    severity: Severity
    message: str
    table: str | None = None
    file: str | None = None
    column: str | None = None
    count: int = 1
    rows: tuple[int, ...] = ()
    examples: tuple[str, ...] = ()

    @property
    def fix(self) -> str:
        return RULES[self.rule].fix

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.value,
            "severity": self.severity.value,
            "table": self.table,
            "file": self.file,
            "column": self.column,
            "count": self.count,
            "rows": list(self.rows),
            "examples": list(self.examples),
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class _Tally:
    """One row rule's offending rows, summed over the batches of a table."""

    rule: Rule
    spec: TableSpec
    column: str | None
    what: str
    count: int = 0
    rows: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    values: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ValidationReport:
    """Every finding of one bundle, in the fixed order the checks run."""

    path: Path
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    def ok(self, strict: bool = False) -> bool:
        """Valid: no errors, and with `strict` no warnings either."""
        return not (self.findings if strict else self.errors)

    def rules_broken(self) -> set[Rule]:
        return {f.rule for f in self.findings}

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "valid": self.ok(strict),
            "strict": strict,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
        }


def validate(path: str | os.PathLike[str]) -> ValidationReport:
    """Check the bundle at `path` against every rule and return all findings.

    Raises TraceNotFoundError or ManifestError only when there is no bundle to check (no such
    folder, no manifest, a manifest that is not JSON); everything else becomes a finding.
    """
    bundle = bundle_dir(path)
    return _Validator(bundle, footer=False).run()


def require_valid(path: str | os.PathLike[str], display_path: Path | None = None,
                  strict: bool = False, tables: Collection[str] | None = None
                  ) -> ValidationReport:
    """Validate and raise InvalidTraceError (carrying the report) when the bundle is invalid.
    `tables`: check only these tables' rules (a command's quick check of what it reads; the
    manifest and every listed file's size and sha256 are checked all the same). Rules the
    Parquet footers' statistics settle are not checked on the rows again (the findings are
    those of `validate` all the same)."""
    shown = Path(display_path or path)
    report = _Validator(bundle_dir(path), shown, tables, footer=True).run()
    if not report.ok(strict):
        bad = report.findings if strict else report.errors
        first = bad[0]
        where = f"{first.file}: " if first.file else ""
        raise InvalidTraceError(
            f"{shown}: not a valid trace bundle ({len(bad)} finding(s); first: [{first.rule}] "
            f"{where}{first.message}). Run `tracekit validate {shown}` for every finding.",
            report,
        )
    return report


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class _IdIndex:
    """Membership test against the set of instruction ids. Ids are usually dense, so a bitmap
    over [min, max] answers by one gather; sparse ids fall back to a hash lookup."""

    def __init__(self, ids: pl.Series) -> None:
        self._ids = ids.drop_nulls()
        self._bitmap: np.ndarray | None = None
        if self._ids.len() == 0:
            self._lo = self._hi = 0
            return
        self._lo, self._hi = int(self._ids.min()), int(self._ids.max())  # type: ignore[arg-type]
        span = self._hi - self._lo + 1
        if span <= 4 * self._ids.len() + 1024:
            self._bitmap = np.zeros(span, dtype=np.bool_)
            self._bitmap[self._ids.to_numpy() - self._lo] = True

    def contains(self, values: pl.Series) -> pl.Series:
        """Boolean Series: does each value name an instruction? Nulls count as present (the
        not-null rule reports them)."""
        if self._ids.len() == 0:
            return values.is_null()
        if self._bitmap is None:
            return values.is_in(self._ids.implode()) | values.is_null()
        v = values.fill_null(self._lo).to_numpy()
        inside = (v >= self._lo) & (v <= self._hi)
        found = np.zeros(len(v), dtype=np.bool_)
        found[inside] = self._bitmap[v[inside] - self._lo]
        return pl.Series(values.name, found)


class _Validator:
    def __init__(self, bundle: Path, shown: Path | None = None,
                 tables: Collection[str] | None = None, *, footer: bool = False) -> None:
        self.bundle = bundle
        self.shown = shown or bundle
        self.tables = set(TABLES) if tables is None else {"instructions", *tables}
        self.footer = footer  # settle rules by the footers' statistics where they can
        self.findings: list[Finding] = []
        self._ids: _IdIndex | np.ndarray | None = None
        self.id_span: tuple[int, int] | None = None  # ids are every integer in [lo, hi]
        self.tallies: dict[tuple[Rule, str | None], _Tally] = {}
        self.offset = 0  # row number in the file of the current batch's first row
        self.escaping: set[str] = set()  # entries that are links out of the bundle
        self.hashes: dict[str, Future[str]] = {}

    @property
    def ids(self) -> _IdIndex | None:
        """The instruction ids, for references (None until instructions were read)."""
        if isinstance(self._ids, np.ndarray):
            self._ids = _IdIndex(pl.Series("id", self._ids))
        return self._ids

    @ids.setter
    def ids(self, index: _IdIndex) -> None:
        self._ids = index

    # -- recording ------------------------------------------------------------------------

    def add(self, rule: Rule, message: str, spec: TableSpec | None = None, *,
            column: str | None = None, count: int = 1, rows: tuple[int, ...] = (),
            examples: tuple[str, ...] = (), file: str | None = None) -> None:
        self.findings.append(Finding(
            rule=rule, severity=RULES[rule].severity, message=message,
            table=spec.name if spec else None, file=file or (spec.file if spec else None),
            column=column, count=count, rows=rows, examples=examples,
        ))

    def add_rows(self, rule: Rule, spec: TableSpec, frame: pl.DataFrame, mask: pl.Series,
                 what: str, show: list[str], column: str | None = None,
                 values: set[str] | None = None) -> None:
        """Tally a row rule broken where `mask` is true in the current batch, keeping the
        first rows by `show`; `what` may name the collected `values` as {values}."""
        tally = self.tallies.setdefault((rule, column), _Tally(rule, spec, column, what))
        mask = mask.fill_null(False)
        count = int(mask.sum())
        if count == 0:
            return
        tally.count += count
        tally.values |= values or set()
        room = MAX_ROWS_SHOWN - len(tally.rows)
        if room > 0:
            rows = mask.arg_true().head(room)
            shown = frame.select(pl.col(show).gather(rows))
            tally.rows += [self.offset + int(r) for r in rows]
            tally.examples += [
                " ".join(f"{name}={_show(value)}" for name, value in zip(show, row, strict=True))
                for row in shown.iter_rows()
            ]

    def flush_rows(self) -> None:
        """Turn the tallies of the table just read into findings, in the order checks ran."""
        for tally in self.tallies.values():
            if tally.count:
                shown = ", ".join(repr(v) for v in sorted(tally.values)[:MAX_ROWS_SHOWN])
                what = tally.what.format(values=shown)
                self.add(tally.rule, f"{_plural(tally.count, 'row')} {what}", tally.spec,
                         column=tally.column, count=tally.count, rows=tuple(tally.rows),
                         examples=tuple(tally.examples))
        self.tallies = {}
        self.offset = 0

    # -- the bundle -----------------------------------------------------------------------

    def run(self) -> ValidationReport:
        self.check_links()
        if MANIFEST_FILE in self.escaping:
            return ValidationReport(path=self.shown, findings=tuple(self.findings))
        raw = read_manifest_json(self.bundle)
        if self.check_manifest(raw):
            entries = raw.get("tables") if isinstance(raw.get("tables"), dict) else {}
            self.check_files(entries)
            # The files' sha256 are worked out on a second thread while the rows are checked
            # (hashing, like reading Parquet, runs without the interpreter lock).
            with ThreadPoolExecutor(max_workers=1) as hasher:
                for spec in TABLES.values():
                    self.hash_later(hasher, spec, entries.get(spec.name))
                for spec in TABLES.values():
                    self.check_table(spec, entries.get(spec.name), raw["schema_version"])
        return ValidationReport(path=self.shown, findings=tuple(self.findings))

    def hash_later(self, hasher: ThreadPoolExecutor, spec: TableSpec, entry: Any) -> None:
        """Start hashing a table's file when `check_hash` will need its sha256."""
        path = self.bundle / spec.file
        if not isinstance(entry, dict) or spec.file in self.escaping or not path.is_file():
            return
        try:
            size = path.stat().st_size
        except OSError:
            return  # check_hash reports it
        if is_count(entry.get("bytes")) and entry["bytes"] != size:
            return
        if is_sha256(entry.get("sha256")):
            self.hashes[spec.name] = hasher.submit(file_sha256, path)

    def check_links(self) -> None:
        """Entries that are symbolic links out of the bundle: reported, never read."""
        for raw_name in sorted(os.listdir(self.bundle)):
            target = outside_link(self.bundle, raw_name)
            if target is not None:
                name = raw_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                self.escaping.add(raw_name)
                self.add(Rule.OUTSIDE_LINK, f"{name} is a symbolic link to {target}, outside "
                         f"the bundle; it is not read", file=name)

    def check_manifest(self, raw: dict[str, Any]) -> bool:
        """Manifest fields; False when the schema version rules out reading the tables."""
        problem = version_problem(raw.get("schema_version"))
        if problem is not None:
            self.add(Rule.SCHEMA_VERSION, problem, file=MANIFEST_FILE)
            return False
        for key, what in manifest_problems(raw):
            if key != "schema_version":
                self.add(Rule.MANIFEST_FIELD, f"{key} {what}", file=MANIFEST_FILE)
        return True

    def check_files(self, entries: dict[str, Any]) -> None:
        listed = {MANIFEST_FILE} | {TABLES[name].file for name in entries if name in TABLES}
        for raw_name in sorted(os.listdir(self.bundle)):
            if raw_name not in listed:
                # A name that is not valid UTF-8 is shown with replacement characters.
                name = raw_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                self.add(Rule.UNLISTED_FILE, f"{name} is in the bundle but not in the manifest; "
                         f"every reader ignores it", file=name)
        if "instructions" not in entries:
            self.add(Rule.TABLE_MISSING, "the manifest lists no instructions table, which every "
                     "bundle needs", TABLES["instructions"], file=MANIFEST_FILE)

    def check_table(self, spec: TableSpec, entry: Any, version: int) -> None:
        if entry is None:
            return
        path = self.bundle / spec.file
        if spec.file in self.escaping:
            return  # an outside-link finding; neither hashed nor read
        if not path.is_file():
            what = "is not a file" if path.exists() else "missing"
            self.add(Rule.TABLE_MISSING, f"{spec.file} is listed in the manifest but {what}",
                     spec)
            return
        first = len(self.findings)
        self.check_rows_of(spec, path, entry, version)
        if isinstance(entry, dict):
            # The file's own findings come first, as if hashed before it was read.
            rows_findings = self.findings[first:]
            del self.findings[first:]
            try:
                self.check_hash(spec, path, entry)
            except OSError as exc:
                self.add(Rule.TABLE_UNREADABLE, f"cannot read the file: {exc.strerror}", spec)
                return
            self.findings += rows_findings

    def check_rows_of(self, spec: TableSpec, path: Path, entry: Any, version: int) -> None:
        """The table's footer, columns and rows (when the caller reads the table)."""
        if spec.name not in self.tables:
            return  # a table the caller does not read: its file is intact, its rows unchecked
        try:
            with pq.ParquetFile(path) as parquet:
                file_schema, num_rows = parquet.schema_arrow, parquet.metadata.num_rows
        except (pa.ArrowException, OSError, ValueError) as exc:
            self.add(Rule.TABLE_UNREADABLE, f"not a readable Parquet file: {first_line(exc)}", spec)
            return
        if isinstance(entry, dict) and is_count(entry.get("rows")) and entry["rows"] != num_rows:
            self.add(Rule.ROW_COUNT, f"the file holds {num_rows:,} rows; the manifest says "
                     f"{entry['rows']:,}", spec)
        self.check_metadata(spec, file_schema, version)
        readable = self.check_columns(spec, file_schema)
        needed = [c.name for c in spec.columns if c.name in readable and _has_row_rules(c)]
        if not needed:
            return
        missing = [c for c in spec.columns
                   if c.nullable and _has_row_rules(c) and c.name not in file_schema.names]
        if self.clean(spec, path, needed, [c.name for c in missing]):
            return
        try:
            # Read through pyarrow, which reports damaged pages as errors where polars' reader
            # can panic or abort. Instructions are read whole (ids and queue order are global
            # rules); the other tables' rules are row by row, so they are read in batches and
            # validation of any size of table holds one batch at a time.
            with pq.ParquetFile(path) as parquet:
                if spec.name == "instructions":
                    batches = iter([parquet.read(columns=needed)])
                else:
                    batches = (pa.Table.from_batches([b]) for b in
                               parquet.iter_batches(batch_size=BATCH_ROWS, columns=needed))
                for batch in batches:
                    frame = pl.from_arrow(batch)
                    # Cast to the logical types; nullable columns the file leaves out read as
                    # nulls, as open_trace reads them, so the rules see what readers will see.
                    frame = frame.with_columns(
                        [pl.col(c.name).cast(pl.Int64) for c in spec.columns
                         if c.name in needed and c.type is ColumnType.INT64]
                        + [pl.lit(None, dtype=c.polars_type).alias(c.name) for c in missing])
                    self.check_rows(spec, frame)
                    self.offset += frame.height
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException, pa.ArrowException,
                OSError, ValueError) as exc:
            # (polars panics on some damage, such as strings that are not UTF-8)
            self.flush_rows()
            self.add(Rule.TABLE_UNREADABLE, f"reading the data failed: {first_line(exc)}", spec)
            return
        finally:
            # pyarrow keeps what it freed in its own pool: hand it back before the command
            # reads the tables again (a column of long distinct names is read at several
            # times its size).
            pa.default_memory_pool().release_unused()
        self.flush_rows()

    # -- the cheap pass ---------------------------------------------------------------------

    def clean(self, spec: TableSpec, path: Path, needed: list[str], missing: list[str]) -> bool:
        """Whether the table's rows certainly break no row rule, found the cheap way: rules
        the footer settles (with `footer`) are not checked again, only the columns the others
        need are read, and each rule asks only whether a row breaks it. False when one may
        be broken (or anything is unusual: a column of another storage type, a damaged
        page): `check_table` then checks the rows the exact way."""
        try:
            with pq.ParquetFile(path) as parquet:
                file_schema = parquet.schema_arrow
                if any(file_schema.field(name).type != spec.column(name).arrow_type
                       for name in needed):
                    return False  # widened integers, plain strings: the exact checks cast them
                if {"start", "end", "partition", "partitions"} & set(missing):
                    return False  # a rule pairs them with a column that is present
                read = needed
                if self.footer:
                    settled = self.settled(spec, parquet.metadata, needed)
                    read = [name for name in needed if name not in settled]
                if spec.name == "instructions":
                    return self.clean_instructions(spec, parquet.read(columns=read))
                if not read:
                    return True
                return all(self.clean_batch(spec, pa.Table.from_batches([batch]))
                           for batch in parquet.iter_batches(batch_size=BATCH_ROWS,
                                                             columns=read))
        except (pa.ArrowException, OSError, ValueError):
            return False  # the exact checks read it again and report the damage

    def settled(self, spec: TableSpec, meta: pq.FileMetaData, needed: list[str]) -> set[str]:
        """The columns whose every rule the footer's statistics settle: no nulls where none
        may be, no negative minimum, references inside the span of the instruction ids, a
        nullable column that holds only nulls. Rules on a column together with others (ids,
        queue order, timing, partitions, self-dependencies, a wait's condition on its op)
        are never settled here."""
        stats = _footer_stats(meta, needed)
        rows = meta.num_rows
        out = set()
        for name in needed:
            col, found = spec.column(name), stats.get(name)
            if found is None:
                continue
            nulls, low, high = found
            if spec.name == "semaphores" and name == "cond" and nulls == rows:
                out.add(name)  # no condition anywhere: none on a row that is not a wait
                continue
            if (spec.name, name) in _TOGETHER or col.type is ColumnType.ENUM:
                continue
            if col.nullable and nulls == rows:
                out.add(name)  # only nulls, which every rule of a nullable column allows
                continue
            if not col.nullable and nulls:
                continue
            if col.non_negative and (low is None or low < 0):
                continue
            if (spec.name, name) in REFERENCES and not self.inside_ids(low, high):
                continue
            out.add(name)
        return out

    def inside_ids(self, low: int | None, high: int | None) -> bool:
        """Whether every value in [low, high] names an instruction (None: no values)."""
        if self._ids is None:
            return True  # the instructions were not read: references are not checked
        if low is None or high is None:
            return True
        return self.id_span is not None and self.id_span[0] <= low and high <= self.id_span[1]

    def clean_batch(self, spec: TableSpec, table: pa.Table) -> bool:
        """No rule of a table other than instructions broken on these rows."""
        for name in table.column_names:
            if not self.clean_column(spec, spec.column(name), table.column(name)):
                return False
        names = set(table.column_names)
        if spec.name == "semaphores" and {"op", "cond"} <= names:
            cond = table.column("cond")
            if cond.null_count < len(cond):
                # cond only on waits
                wait = _is_value(table.column("op"), SemOp.WAIT.value)
                if np.any(~wait & _valid(cond)):
                    return False
        if spec.name == "memory" and {"space", "partition", "partitions"} <= names:
            space = table.column("space")
            on_chip = _is_value(space, *(s.value for s in ON_CHIP_SPACES))
            hbm = _is_value(space, MemSpace.HBM.value)
            first, count = table.column("partition"), table.column("partitions")
            has_first, has_count = _valid(first), _valid(count)
            small = (pl.from_arrow(count) < 1).fill_null(False).to_numpy()  # type: ignore[union-attr]
            bad = (on_chip & (~has_first | ~has_count | small)) | (hbm & (has_first | has_count))
            if bad.any():
                return False
        if spec.name == "deps" and {"src", "dst"} <= names:
            if pc.any(pc.equal(table.column("src"), table.column("dst"))).as_py():
                return False
        return True

    def clean_column(self, spec: TableSpec, col: ColumnSpec, values: pa.ChunkedArray) -> bool:
        """No rule of this one column broken (not null, non-negative, legal names, the ids
        it refers to)."""
        if not col.nullable and values.null_count:
            return False
        if col.non_negative:
            low = pc.min(values).as_py()
            if low is not None and low < 0:
                return False
        if col.type is ColumnType.ENUM:
            legal = set(col.values)
            if any(not set(chunk.dictionary.to_pylist()) <= legal for chunk in values.chunks):
                return False  # (a name in a dictionary that no row uses: the exact check)
        if (spec.name, col.name) in REFERENCES and self.ids is not None:
            bounds = pc.min_max(values)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if not self.inside_ids(low, high) and not bool(
                    self.ids.contains(pl.from_arrow(values)).all()):  # type: ignore[union-attr]
                return False
        return True

    def clean_instructions(self, spec: TableSpec, table: pa.Table) -> bool:
        """No rule of the instructions table broken: unique ids (strictly increasing, as
        bundles are written), each engine's seq increasing with id, timing; the ids kept
        for the references of the other tables."""
        names = set(table.column_names)
        for name in table.column_names:
            if not self.clean_column(spec, spec.column(name), table.column(name)):
                return False
        if "id" not in names:
            return False
        ids = _numpy(table.column("id"))
        if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
            return False  # repeated or unsorted ids: the exact check tells which
        if {"engine", "seq"} <= names:
            engine = _codes(table.column("engine"))
            if not _increasing_per_group(engine, _numpy(table.column("seq"))):
                return False
        if {"start", "end"} <= names:
            start, end = table.column("start"), table.column("end")
            if start.null_count == 0 and end.null_count == 0:
                if not np.all(_numpy(end) >= _numpy(start)):
                    return False
            elif not (start.null_count == end.null_count == len(start)):
                return False  # partly timed: the exact checks pair them up
        self._ids = ids
        if ids.size and int(ids[-1]) - int(ids[0]) + 1 == ids.size:
            self.id_span = (int(ids[0]), int(ids[-1]))
        return True

    def check_rows(self, spec: TableSpec, frame: pl.DataFrame) -> None:
        """Every row rule of the table on one batch of its rows."""
        self.check_not_null(spec, frame)
        self.check_non_negative(spec, frame)
        self.check_enums(spec, frame)
        if spec.name == "instructions":
            self.check_instructions(spec, frame)
        if spec.name == "memory":
            self.check_partitions(spec, frame)
        if spec.name == "deps" and {"src", "dst"} <= set(frame.columns):
            self.add_rows(Rule.SELF_DEPENDENCY, spec, frame, frame["src"] == frame["dst"],
                          "where an instruction depends on itself (src == dst)",
                          ["src", "dst"])
        if spec.name == "semaphores" and {"op", "cond"} <= set(frame.columns):
            self.add_rows(Rule.WAIT_CONDITION, spec, frame,
                          (frame["cond"].is_not_null()
                           & (frame["op"].cast(pl.String) != SemOp.WAIT.value)).fill_null(False),
                          "with a cond on an operation that is not a wait",
                          _present(frame, ["inst", "sem", "op", "value", "cond"]))
        self.check_references(spec, frame)

    def check_hash(self, spec: TableSpec, path: Path, entry: dict[str, Any]) -> None:
        # Malformed manifest values are manifest-field findings; compare only well-formed ones.
        size = path.stat().st_size
        started = self.hashes.pop(spec.name, None)
        if is_count(entry.get("bytes")) and entry["bytes"] != size:
            self.add(Rule.FILE_HASH, f"the file is {size:,} bytes; the manifest says "
                     f"{entry['bytes']:,} (truncated or rewritten)", spec)
        elif is_sha256(entry.get("sha256")) and entry["sha256"] != (
                file_sha256(path) if started is None else started.result()):
            self.add(Rule.FILE_HASH, "the file's sha256 differs from the manifest's (the file "
                     "was modified after the bundle was written)", spec)

    def check_metadata(self, spec: TableSpec, file_schema: pa.Schema, version: int) -> None:
        meta = {k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in (file_schema.metadata or {}).items()}
        absent = [key for key in (PARQUET_KEY_TABLE, PARQUET_KEY_VERSION) if key not in meta]
        if absent:
            self.add(Rule.PARQUET_METADATA, f"the Parquet key-value metadata lacks "
                     f"{' and '.join(absent)}", spec)
        elif meta[PARQUET_KEY_TABLE] != spec.name or meta[PARQUET_KEY_VERSION] != str(version):
            self.add(Rule.PARQUET_METADATA, f"the Parquet metadata says table "
                     f"{meta[PARQUET_KEY_TABLE]!r}, schema version {meta[PARQUET_KEY_VERSION]}; "
                     f"the manifest says table {spec.name!r}, version {version}", spec)

    def check_columns(self, spec: TableSpec, file_schema: pa.Schema) -> set[str]:
        """Presence and types of columns; the names of the columns fit to read."""
        readable: set[str] = set()
        repeated = duplicate_names(file_schema)
        for name in repeated:
            self.add(Rule.DUPLICATE_COLUMN, f"column {name!r} appears "
                     f"{file_schema.names.count(name)} times", spec, column=name)
        for col in spec.columns:
            if col.name in repeated:
                continue
            index = file_schema.get_field_index(col.name)
            if index < 0:
                if not col.nullable:
                    self.add(Rule.COLUMN_MISSING, f"required column {col.name!r} "
                             f"({col.type.value}) is missing", spec, column=col.name)
                continue
            arrow_type = file_schema.field(index).type
            if column_type_ok(col, arrow_type):
                readable.add(col.name)
            else:
                self.add(Rule.COLUMN_TYPE, f"column {col.name!r} is {arrow_type}; the schema "
                         f"says {col.type.value}", spec, column=col.name)
        for name in dict.fromkeys(file_schema.names):
            if name not in spec.column_names:
                self.add(Rule.UNKNOWN_COLUMN, f"column {name!r} is not in the schema and is "
                         f"ignored", spec, column=name)
        return readable

    # -- row rules ------------------------------------------------------------------------

    def check_not_null(self, spec: TableSpec, frame: pl.DataFrame) -> None:
        for col in spec.columns:
            if not col.nullable and col.name in frame.columns and frame[col.name].has_nulls():
                self.add_rows(Rule.NOT_NULL, spec, frame, frame[col.name].is_null(),
                              f"with a null {col.name}", _key_columns(spec, frame),
                              column=col.name)

    def check_non_negative(self, spec: TableSpec, frame: pl.DataFrame) -> None:
        for col in spec.columns:
            if col.non_negative and col.name in frame.columns:
                series = frame[col.name]
                if series.min() is not None and series.min() < 0:  # type: ignore[operator]
                    show = list(dict.fromkeys([*_key_columns(spec, frame), col.name]))
                    self.add_rows(Rule.NEGATIVE_VALUE, spec, frame, series < 0,
                                  f"with a negative {col.name}", show, column=col.name)

    def check_enums(self, spec: TableSpec, frame: pl.DataFrame) -> None:
        for col in spec.columns:
            if col.type is not ColumnType.ENUM or col.name not in frame.columns:
                continue
            # Distinct values first (cheap on a dictionary column), strings only if needed.
            present = set(frame[col.name].unique().drop_nulls().cast(pl.String).to_list())
            illegal = sorted(present - set(col.values))
            if illegal:
                text = frame[col.name].cast(pl.String)
                self.add_rows(Rule.ENUM_VALUE, spec, frame, text.is_in(illegal),
                              f"with an illegal {col.name} ({{values}}; legal: "
                              f"{', '.join(col.values)})",
                              list(dict.fromkeys([*_key_columns(spec, frame), col.name])),
                              column=col.name, values=set(illegal))

    def check_instructions(self, spec: TableSpec, frame: pl.DataFrame) -> None:
        cols = set(frame.columns)
        strictly_increasing = False
        if "id" in cols:
            ids = frame["id"]
            self.ids = _IdIndex(ids)
            strictly_increasing = not ids.has_nulls() and bool(
                (ids.diff().drop_nulls() > 0).all())
            if not strictly_increasing:
                dup = ids.is_duplicated() & ids.is_not_null()
                self.add_rows(Rule.UNIQUE_ID, spec, frame, dup,
                              "whose id another instruction also has",
                              ["id", *_present(frame, ["engine", "seq"])])
        if {"id", "engine", "seq"} <= cols:
            self.check_engine_seq(spec, frame, strictly_increasing)
        if {"start", "end"} <= cols:
            self.check_timing(spec, frame)

    def check_engine_seq(self, spec: TableSpec, frame: pl.DataFrame, ids_sorted: bool) -> None:
        keyed = frame.select(
            pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), "id",
            pl.col("engine").cast(pl.Categorical).to_physical().alias("engine_code"), "seq",
        ).drop_nulls()
        if not ids_sorted:
            keyed = keyed.sort("id", maintain_order=True)
        keyed = keyed.with_columns(previous=pl.col("seq").shift(1).over("engine_code"))
        if keyed.filter(pl.col("seq") <= pl.col("previous")).height == 0:
            return  # seq strictly increasing along id inside every engine: also unique
        duplicated = keyed.filter(pl.struct("engine_code", "seq").is_duplicated())["row"]
        descending = keyed.filter(pl.col("seq") < pl.col("previous"))["row"]
        show = ["id", "engine", "seq"]
        self.add_rows(Rule.ENGINE_SEQ_UNIQUE, spec, frame, _mask(frame.height, duplicated),
                      "whose (engine, seq) another instruction also has", show)
        self.add_rows(Rule.ENGINE_SEQ_ORDER, spec, frame, _mask(frame.height, descending),
                      "whose seq is below that of the previous instruction (by id) on the same "
                      "engine", show)

    def check_timing(self, spec: TableSpec, frame: pl.DataFrame) -> None:
        start, end = frame["start"], frame["end"]
        show = _present(frame, ["id", "engine", "start", "end"])
        unpaired = start.is_null() != end.is_null()
        self.add_rows(Rule.TIMING_PAIR, spec, frame, unpaired,
                      "with only one of start and end set", show)
        self.add_rows(Rule.END_BEFORE_START, spec, frame, end < start,
                      "where end < start", show)
        timed = int((start.is_not_null() & end.is_not_null()).sum())
        untimed = start.is_null() & end.is_null()  # rows with one of the two: timing-pair
        if timed and untimed.any():
            self.add_rows(Rule.PARTIAL_TIMING, spec, frame, untimed,
                          f"untimed, while {_plural(timed, 'row')} are timed", show)

    def check_partitions(self, spec: TableSpec, frame: pl.DataFrame) -> None:
        if not {"space", "partition", "partitions"} <= set(frame.columns):
            return
        space = frame["space"].cast(pl.String)
        first, count = frame["partition"], frame["partitions"]
        on_chip = space.is_in([s.value for s in ON_CHIP_SPACES])
        bad = (on_chip & (first.is_null() | count.is_null() | (count < 1)).fill_null(True)) | (
            (space == MemSpace.HBM.value) & (first.is_not_null() | count.is_not_null()))
        self.add_rows(Rule.PARTITION_RANGE, spec, frame, bad,
                      "whose partition range does not fit the space (SBUF and PSUM need "
                      "partition and partitions >= 1; HBM needs neither)",
                      _present(frame, ["inst", "space", "partition", "partitions"]))

    def check_references(self, spec: TableSpec, frame: pl.DataFrame) -> None:
        if self.ids is None:
            return
        for table, column in REFERENCES:
            if table == spec.name and column in frame.columns:
                missing = ~self.ids.contains(frame[column])
                self.add_rows(Rule.DANGLING_REFERENCE, spec, frame, missing,
                              f"whose {column} names no instruction",
                              _key_columns(spec, frame), column=column)


_TOGETHER = {("instructions", "id"), ("instructions", "engine"), ("instructions", "seq"),
             ("instructions", "start"), ("instructions", "end"), ("memory", "space"),
             ("memory", "partition"), ("memory", "partitions"), ("deps", "src"),
             ("deps", "dst"), ("semaphores", "op"), ("semaphores", "cond")}
"""Columns that rules read together with others: the footer settles none of their rules."""


def _footer_stats(meta: pq.FileMetaData, names: list[str]
                  ) -> dict[str, tuple[int, int | None, int | None]]:
    """Per column (of those whose every row group has statistics): its nulls, and its
    minimum and maximum (None when it holds only nulls, or is not an integer column)."""
    index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    out: dict[str, tuple[int, int | None, int | None]] = {}
    for name in names:
        if name not in index:
            continue
        nulls, low, high = 0, None, None
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            stats = group.column(index[name]).statistics
            if stats is None or not stats.has_null_count:
                break
            nulls += stats.null_count
            if stats.null_count == group.num_rows:
                continue
            if not stats.has_min_max:
                break
            if stats.physical_type == "INT64":
                low = stats.min if low is None else min(low, stats.min)
                high = stats.max if high is None else max(high, stats.max)
        else:
            out[name] = (nulls, low, high)
    return out


def _codes(values: pa.ChunkedArray) -> np.ndarray:
    """A dictionary column's codes (one dictionary over every chunk), nulls as -1."""
    unified = values.unify_dictionaries()
    if unified.num_chunks == 0:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate([_indices(chunk) for chunk in unified.chunks])


def _numpy(values: pa.ChunkedArray) -> np.ndarray:
    """An integer column without nulls as one NumPy array (no copy when it is one chunk)."""
    parts = [_buffer(chunk) for chunk in values.chunks]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _buffer(chunk: pa.Array) -> np.ndarray:
    """The values of an integer array as NumPy sees them, read from its data buffer (pyarrow's
    own conversion imports pandas, a quarter of a second)."""
    dtype = np.dtype(f"int{chunk.type.bit_width}")
    return np.frombuffer(chunk.buffers()[1], dtype=dtype, count=len(chunk),
                         offset=chunk.offset * dtype.itemsize)


def _indices(chunk: pa.DictionaryArray) -> np.ndarray:
    """A dictionary array's codes, nulls as -1."""
    codes = _buffer(chunk.indices)
    if chunk.null_count == 0:
        return codes
    return np.where(_valid(pa.chunked_array([chunk])), codes, -1)


def _is_value(values: pa.ChunkedArray, *names: str) -> np.ndarray:
    """Per row, whether a dictionary column holds one of `names` (False for null)."""
    parts = []
    for chunk in values.chunks:
        hit = np.isin(np.asarray(chunk.dictionary.to_pylist(), dtype=object), list(names))
        codes = _indices(chunk)
        parts.append(np.r_[hit, False][codes])  # code -1 (null) reads the False at the end
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.bool_)


def _valid(values: pa.ChunkedArray) -> np.ndarray:
    """Per row, whether it is not null."""
    return pl.from_arrow(pc.is_valid(values)).to_numpy()  # type: ignore[union-attr]


def _increasing_per_group(group: np.ndarray, values: np.ndarray) -> bool:
    """Whether `values` increase strictly along the rows within each group (codes >= 0)."""
    if group.size < 2:
        return True
    groups = int(group.max()) + 1
    if groups <= 16:  # a pass per engine over the codes costs less than ordering them
        for g in range(groups):
            mine = values[group == g]
            if mine.size > 1 and not np.all(mine[1:] > mine[:-1]):
                return False
        return True
    # Rows by group, in row order within each (a stable radix sort of small codes).
    order = np.argsort(group.astype(np.int16 if groups < 2**15 else np.int32), kind="stable")
    ordered, same = values[order], group[order]
    return bool(np.all((ordered[1:] > ordered[:-1]) | (same[1:] != same[:-1])))


def _has_row_rules(col: ColumnSpec) -> bool:
    return (not col.nullable or col.non_negative or col.type is ColumnType.ENUM
            or col.name in ("start", "end", "partition", "partitions"))


def _key_columns(spec: TableSpec, frame: pl.DataFrame) -> list[str]:
    """Columns that identify a row in messages: the table's first columns that were read."""
    keys = {"instructions": ["id", "engine", "seq"], "semaphores": ["inst", "sem", "op"],
            "memory": ["inst", "space", "access"], "deps": ["src", "dst", "kind"]}[spec.name]
    return _present(frame, keys)


def _present(frame: pl.DataFrame, names: list[str]) -> list[str]:
    return [n for n in names if n in frame.columns]


def _mask(height: int, rows: pl.Series) -> pl.Series:
    mask = np.zeros(height, dtype=np.bool_)
    mask[rows.to_numpy()] = True
    return pl.Series(mask)


def _show(value: Any) -> str:
    return "null" if value is None else str(value)
