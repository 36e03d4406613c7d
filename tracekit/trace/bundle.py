"""Reading and writing trace bundles: `open_trace` gives lazy polars frames over the Parquet
files; `write_trace` conforms frames to the schema and writes a bundle atomically.

Writing goes to a hidden temporary folder beside the target, which is renamed into place only
once every file and the manifest are complete: an interrupted write leaves no bundle behind, and
an existing bundle is replaced only with `overwrite=True`.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.errors import (
    ManifestError,
    OutputError,
    TableDataError,
    TableReadError,
    TraceExistsError,
    TraceNotFoundError,
    first_line,
)
from tracekit.trace.manifest import (
    Manifest,
    Producer,
    TableEntry,
    TimeUnit,
    is_count,
    is_sha256,
    manifest_problems,
    read_manifest_json,
)
from tracekit.trace.schema import (
    MANIFEST_FILE,
    SCHEMA_VERSION,
    TABLES,
    ColumnSpec,
    ColumnType,
    TableSpec,
    column_type_ok,
    duplicate_names,
)
from tracekit.trace.upgrade import check_version, upgrade

TableData = pl.DataFrame | pl.LazyFrame | pa.Table | Mapping[str, Any]
"""What the writer accepts for a table: a polars frame, an Arrow table, or columns by name
(sequences or NumPy arrays). pandas frames are accepted too. `write_trace` also takes a
callable returning any of these, called when that table's turn to be written comes."""

PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 1
ROW_GROUP_ROWS = 1 << 20


@dataclass(frozen=True)
class Trace:
    """An opened bundle: its manifest and a lazy polars frame per table.

    Frames have exactly the schema's columns and types (integers as Int64, names and enums as
    Categorical). An optional table the bundle lacks reads as an empty frame of its schema, so
    analyses need no special case; `has_table` tells the two apart.
    """

    path: Path
    manifest: Manifest
    frames: Mapping[str, pl.LazyFrame]
    scans: Mapping[str, tuple[pl.LazyFrame, Path]] = field(default_factory=dict)
    """Per table the frame `open_trace` made of its file, and the file: while a table's frame
    is still that one (not filtered by a window, not upgraded), a reader that wants the file's
    own encoding (dictionary codes, row groups) may read the file (`file_of`)."""

    def file_of(self, name: str) -> Path | None:
        """The file of table `name` when its frame reads that file unchanged, else None."""
        scan = self.scans.get(name)
        return scan[1] if scan is not None and self.frames.get(name) is scan[0] else None

    def has_table(self, name: str) -> bool:
        return name in self.manifest.tables

    def table(self, name: str) -> pl.LazyFrame:
        if name not in TABLES:
            raise KeyError(f"no table {name!r} in schema v{SCHEMA_VERSION}; tables are "
                           f"{', '.join(TABLES)}")
        frame = self.frames.get(name)
        if frame is None:
            return pl.LazyFrame(schema=TABLES[name].polars_schema())
        return frame

    def read(self, name: str, columns: list[str] | None = None,
             where: pl.Expr | None = None) -> pl.DataFrame:
        """Collect a table (or some of its columns, of the rows `where` holds: a filter the
        scan applies as it reads); TableReadError if the file is damaged."""
        frame = self.table(name)
        if where is not None:
            frame = frame.filter(where)
        if columns is not None:
            frame = frame.select(columns)
        try:
            return frame.collect()
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError,
                ValueError) as exc:
            raise TableReadError(
                f"{self.path / TABLES[name].file}: cannot read the table ({first_line(exc)}). "
                f"Run `tracekit validate {self.path}` for details; re-export the bundle."
            ) from exc

    def read_instructions(self, columns: list[str]) -> pl.DataFrame:
        """Columns of the instructions table in id order. Bundles are written in id order, so
        the rows are only checked (a sort of tens of millions of sorted rows costs seconds)."""
        frame = self.read("instructions", columns if "id" in columns else ["id", *columns])
        if not frame["id"].is_sorted():
            frame = frame.sort("id")
        return frame if "id" in columns else frame.drop("id")

    def in_cycles(self, frame: pl.DataFrame, clock_hz: float | None = None) -> pl.DataFrame:
        """`frame` (instruction rows of this trace) with start and end in cycles of the
        machine at `clock_hz` (default: the trace's own clock), rounded to whole cycles
        (`Manifest.cycles_per_tick`: 1,000 ns at 1.4 GHz are 1,400 cycles; so are 1,000
        cycles of a 1 GHz trace). ManifestError, saying how to fix it, when the times are in
        ps, ns or us and the manifest has no clock_hz. (Order by the stored times, which
        rounding can tie.)"""
        per_tick = self.manifest.cycles_per_tick(clock_hz)
        if per_tick == 1.0:
            return frame
        times = [c for c in ("start", "end") if c in frame.columns]
        if per_tick is None:
            if all(frame[c].null_count() == frame.height for c in times):
                return frame  # no times to convert
            raise ManifestError(
                f"{self.path / MANIFEST_FILE}: start and end are in "
                f"{self.manifest.time_unit.value} and the manifest has no clock_hz to turn "
                f"them into the machine's cycles. Add clock_hz (the clock the times were "
                f"taken at) to the manifest, or record the times in cycles.")
        largest = max((abs(frame[c].cast(pl.Float64)).max() or 0.0 for c in times),
                      default=0.0)
        if largest * per_tick >= 2.0**62:
            raise ManifestError(
                f"{self.path / MANIFEST_FILE}: a time of {largest:,.0f} "
                f"{self.manifest.time_unit.value} at clock_hz {self.manifest.clock_hz:g} is "
                f"{largest * per_tick:.3g} cycles, past what 64-bit cycle counts hold. Check "
                f"the manifest's time_unit and clock_hz, or the times in "
                f"{TABLES['instructions'].file}.")
        return frame.with_columns((pl.col(c).cast(pl.Float64) * per_tick).round().cast(pl.Int64)
                                  for c in times)

    @property
    def instructions(self) -> pl.LazyFrame:
        return self.table("instructions")

    @property
    def semaphores(self) -> pl.LazyFrame:
        return self.table("semaphores")

    @property
    def memory(self) -> pl.LazyFrame:
        return self.table("memory")

    @property
    def deps(self) -> pl.LazyFrame:
        return self.table("deps")


def bundle_dir(path: str | os.PathLike[str]) -> Path:
    """`path` as a bundle folder, or TraceNotFoundError saying what it is instead."""
    bundle = Path(path)
    if not bundle.exists():
        clean_leftovers(bundle)  # an interrupted replacement: the old bundle comes back
    if not bundle.exists():
        raise TraceNotFoundError(f"{bundle}: no such file or folder. Pass the folder of a trace "
                                 f"bundle (it holds {MANIFEST_FILE}).")
    if not bundle.is_dir():
        raise TraceNotFoundError(f"{bundle}: is a file, not a trace bundle. A bundle is a folder "
                                 f"holding {MANIFEST_FILE} and instructions.parquet.")
    if not (bundle / MANIFEST_FILE).is_file():
        raise TraceNotFoundError(f"{bundle}: not a trace bundle: it has no {MANIFEST_FILE}. "
                                 f"Point at the bundle folder itself, or create one with "
                                 f"`tracekit generate` or a converter.")
    return bundle


def outside_link(bundle: Path, name: str) -> str | None:
    """Where the entry `name` of `bundle` leads when it is a symbolic link out of the bundle
    folder (its resolved target), else None. A bundle is self-contained: a link out of it
    would make validation, hashing and every reader follow a file tracekit does not own."""
    entry = bundle / name
    if not entry.is_symlink():
        return None
    target = entry.resolve()
    return None if target.parent == bundle.resolve() else str(target)


def refuse_outside_link(bundle: Path, name: str) -> None:
    """TableReadError when the bundle's entry `name` is a link out of the bundle."""
    target = outside_link(bundle, name)
    if target is not None:
        raise TableReadError(
            f"{bundle / name}: is a symbolic link to {target}, outside the bundle "
            f"[outside-link]. Copy the file into the bundle in place of the link, or "
            f"re-export the bundle.")


def null_counts(path: Path, columns: list[str]) -> dict[str, int]:
    """Nulls per column as the Parquet footer's statistics record them (columns whose row
    groups lack statistics are left out): a check of required columns that reads no data."""
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError, ValueError):
        return {}  # read_file_schema reports the damage
    index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    out: dict[str, int] = {}
    for name in columns:
        if name not in index:
            continue
        total = 0
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(index[name]).statistics
            if stats is None or not stats.has_null_count:
                break
            total += stats.null_count
        else:
            out[name] = total
    return out


def _refuse_nulls(spec: TableSpec, path: Path) -> None:
    required = [c.name for c in spec.columns if not c.nullable]
    nulls = {name: n for name, n in null_counts(path, required).items() if n}
    if nulls:
        listing = ", ".join(f"{n:,} in {name}" for name, n in nulls.items())
        raise TableReadError(
            f"{path}: null values in required column(s) ({listing}) [not-null]. Run "
            f"`tracekit validate {path.parent}` for the rows; fill them and re-export the "
            f"bundle.")


def read_file_schema(path: Path) -> pa.Schema:
    """The Arrow schema in a Parquet file's footer; TableReadError if it is not Parquet."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise TableReadError(
            f"{path}: not a readable Parquet file ({first_line(exc)}); it may be truncated or "
            f"corrupt. Re-export the bundle from its producer."
        ) from exc


def scan_table(spec: TableSpec, path: Path, file_schema: pa.Schema) -> pl.LazyFrame:
    """A lazy frame over one table file with the schema's columns and types. Nullable columns
    the file omits read as nulls; columns the schema does not know are dropped; a missing
    required column is a TableReadError."""
    repeated = duplicate_names(file_schema)
    if repeated:
        raise TableReadError(
            f"{path}: column(s) {', '.join(repeated)} appear more than once. Run `tracekit "
            f"validate {path.parent}` for every problem; re-export the bundle.")
    present = set(file_schema.names)
    wrong = [f"{c.name} ({file_schema.field(c.name).type})" for c in spec.columns
             if c.name in present and not column_type_ok(c, file_schema.field(c.name).type)]
    if wrong:
        raise TableReadError(
            f"{path}: column(s) of the wrong type: {', '.join(wrong)}. Run `tracekit validate "
            f"{path.parent}` for every problem; re-export the bundle.")
    missing = [c.name for c in spec.columns if not c.nullable and c.name not in present]
    if missing:
        raise TableReadError(
            f"{path}: required column(s) {', '.join(missing)} missing. Run `tracekit validate "
            f"{path.parent}` for every problem; re-export the bundle.")
    exprs = [
        pl.col(c.name).cast(c.polars_type) if c.name in present
        else pl.lit(None, dtype=c.polars_type).alias(c.name)
        for c in spec.columns
    ]
    return pl.scan_parquet(path, glob=False).select(exprs)


def open_trace(path: str | os.PathLike[str], *, verify: bool = True) -> Trace:
    """Open the bundle at `path`: read and upgrade its manifest, and scan its tables lazily.

    Checks what reading needs: the manifest, the schema version, each table file's footer,
    column types and required columns, and (with `verify`, the default) that each file's size
    and sha256 match the manifest, so that a damaged file is refused here rather than met
    half-way through an analysis. `tracekit.validate` checks every rule of the schema.
    """
    bundle = bundle_dir(path)
    refuse_outside_link(bundle, MANIFEST_FILE)
    raw = read_manifest_json(bundle)
    source = str(bundle / MANIFEST_FILE)
    check_version(raw.get("schema_version"), source)
    tables = raw.get("tables")
    frames: dict[str, pl.LazyFrame] = {}
    if isinstance(tables, dict):
        for name, entry in tables.items():
            spec = TABLES.get(name)
            if spec is None:
                continue  # reported by Manifest.from_dict below
            file_path = bundle / spec.file
            refuse_outside_link(bundle, spec.file)
            if not file_path.is_file():
                raise TableReadError(f"{file_path}: listed in the manifest but missing or not a "
                                     f"file. Restore the file or re-export the bundle.")
            if verify and isinstance(entry, dict):
                _verify_file(file_path, entry)
            frames[name] = scan_table(spec, file_path, read_file_schema(file_path))
            _refuse_nulls(spec, file_path)
    scans = {name: (frame, bundle / TABLES[name].file) for name, frame in frames.items()}
    raw, frames = upgrade(raw, frames, source)
    manifest = Manifest.from_dict(raw, bundle / MANIFEST_FILE)
    if "instructions" not in manifest.tables:
        raise TableReadError(f"{source}: the bundle has no instructions table, which every "
                             f"bundle needs. Re-export the bundle.")
    return Trace(path=bundle, manifest=manifest, frames=frames, scans=scans)


def _verify_file(path: Path, entry: dict[str, Any]) -> None:
    """TableReadError when a file's size or sha256 differs from its manifest entry."""
    try:
        size = path.stat().st_size
        changed = (is_count(entry.get("bytes")) and entry["bytes"] != size) or (
            is_sha256(entry.get("sha256")) and entry["sha256"] != file_sha256(path))
    except OSError as exc:
        raise TableReadError(f"{path}: cannot read the file ({exc.strerror}).") from exc
    if changed:
        raise TableReadError(
            f"{path}: the file differs from what the manifest records (size or sha256): it "
            f"was damaged or modified after the bundle was written. Run `tracekit validate "
            f"{path.parent}`; restore the file or re-export the bundle.")


# --- writing -------------------------------------------------------------------------------


def _as_polars(data: TableData, table: str) -> pl.DataFrame:
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        return data.collect()
    if isinstance(data, pa.Table):
        return pl.from_arrow(data)  # type: ignore[return-value]
    if hasattr(data, "to_numpy") and hasattr(data, "columns"):  # pandas.DataFrame
        return pl.from_pandas(data)  # type: ignore[arg-type]
    if isinstance(data, Mapping):
        try:
            return pl.DataFrame(dict(data))
        except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
            raise TableDataError(f"{table}: cannot build a table from the given columns "
                                 f"({first_line(exc)}).") from exc
    raise TableDataError(f"{table}: expected a polars or pandas frame, an Arrow table or a "
                         f"mapping of columns, got {type(data).__name__}.")


def _dictionary(series: pl.Series) -> pa.DictionaryArray:
    """Dictionary-encode strings with the distinct values sorted, so that equal data gives equal
    bytes whatever order or global string cache the input came with."""
    if series.dtype == pl.String or series.dtype == pl.Null:
        series = series.cast(pl.Categorical)
    distinct = series.unique().drop_nulls()
    names = distinct.cast(pl.String).to_list()
    order = sorted(range(len(names)), key=names.__getitem__)
    # Map the input's physical codes (global categories, or an Enum's own) to sorted positions.
    codes_in = distinct.to_physical().to_numpy().astype(np.int64)
    lut = np.zeros(int(codes_in.max(initial=0)) + 1, dtype=np.int32)
    lut[codes_in[order]] = np.arange(len(order), dtype=np.int32)
    indices = lut[series.to_physical().fill_null(0).to_numpy()]
    mask = series.is_null().to_numpy() if series.has_nulls() else None
    return pa.DictionaryArray.from_arrays(
        pa.array(indices, type=pa.int32(), mask=mask),
        pa.array([names[i] for i in order], type=pa.string()),
    )


def _conform_column(series: pl.Series, col: ColumnSpec, table: str) -> pa.Array:
    try:
        if col.type is ColumnType.INT64:
            if series.dtype == pl.Null:
                return pa.nulls(len(series), pa.int64())
            if not (series.dtype.is_integer() or series.dtype == pl.Boolean):
                raise TypeError(f"{series.dtype} is not an integer type")
            arrow = series.cast(pl.Int64, strict=True).to_arrow()
            return arrow.combine_chunks() if isinstance(arrow, pa.ChunkedArray) else arrow
        if series.dtype not in (pl.String, pl.Categorical, pl.Null) and not isinstance(
                series.dtype, pl.Enum):
            raise TypeError(f"{series.dtype} is not a string type")
        return _dictionary(series)
    except (pl.exceptions.PolarsError, TypeError) as exc:
        raise TableDataError(
            f"{table}.{col.name}: cannot store as {col.type.value} ({first_line(exc)}). "
            f"Pass {'integers' if col.type is ColumnType.INT64 else 'strings'}."
        ) from exc


def conform_table(spec: TableSpec, data: TableData) -> pa.Table:
    """`data` as an Arrow table with exactly the schema's columns and storage types.

    Missing nullable columns become nulls; a missing required column, a null in one, or a column
    the schema does not know is a TableDataError. Other rules on values are validation's job.
    """
    frame = _as_polars(data, spec.name)
    unknown = [c for c in frame.columns if c not in spec.column_names]
    if unknown:
        raise TableDataError(f"{spec.name}: unknown column(s) {', '.join(unknown)}; schema "
                             f"v{SCHEMA_VERSION} columns are {', '.join(spec.column_names)}.")
    arrays = []
    for col in spec.columns:
        if col.name in frame.columns:
            series = frame[col.name]
            if not col.nullable and series.has_nulls():
                rows = series.is_null().arg_true().head(5).to_list()
                raise TableDataError(
                    f"{spec.name}.{col.name}: {series.null_count():,} null value(s) in a "
                    f"required column (first rows: {', '.join(map(str, rows))}). Fill them; "
                    f"only nullable columns may hold nulls.")
            arrays.append(_conform_column(series, col, spec.name))
        elif col.nullable:
            arrays.append(pa.nulls(frame.height, col.arrow_type))
        else:
            raise TableDataError(f"{spec.name}: required column {col.name!r} is missing.")
    return pa.Table.from_arrays(arrays, schema=spec.arrow_schema())


class _HashingSink:
    """A binary file wrapper that hashes every byte written through it."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        return self._file.write(view)

    def flush(self) -> None:
        self._file.flush()

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if not self.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.closed = True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


def _write_parquet(table: pa.Table, spec: TableSpec, path: Path) -> TableEntry:
    # Names and enums are dictionary-encoded; integers (ids, sequence numbers, times, addresses:
    # mostly increasing) are delta-encoded, which writes and reads several times faster than
    # plain encoding and compresses better.
    dictionary_columns = [c.name for c in spec.columns if c.type is not ColumnType.INT64]
    delta_columns = {c.name: "DELTA_BINARY_PACKED" for c in spec.columns
                     if c.type is ColumnType.INT64}
    sink = _HashingSink(path)
    try:
        pq.write_table(
            table,
            sink,  # type: ignore[arg-type]
            compression=PARQUET_COMPRESSION,
            compression_level=PARQUET_COMPRESSION_LEVEL,
            use_dictionary=dictionary_columns,
            column_encoding=delta_columns,
            row_group_size=ROW_GROUP_ROWS,
            write_statistics=True,
        )
    finally:
        sink.close()
    return TableEntry(file=spec.file, rows=table.num_rows, bytes=sink.size,
                      sha256=sink.sha256.hexdigest())


def write_trace(
    path: str | os.PathLike[str],
    instructions: TableData | Callable[[], TableData],
    *,
    semaphores: TableData | Callable[[], TableData] | None = None,
    memory: TableData | Callable[[], TableData] | None = None,
    deps: TableData | Callable[[], TableData] | None = None,
    workload: str,
    producer: Producer | str = "tracekit",
    machine: str | None = None,
    clock_hz: float | None = None,
    time_unit: TimeUnit | str = TimeUnit.CYCLES,
    created: str | None = "now",
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    validate: bool = True,
) -> Trace:
    """Write a bundle at `path` atomically and return it opened.

    `created` defaults to the current UTC time ("now"); pass a fixed value, or None to record
    none, for byte-identical bundles.
    With `validate` (the default) the finished bundle is validated before it is moved into place,
    and an InvalidTraceError carrying the report is raised instead of writing a bad bundle.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise TraceExistsError(f"{target}: already exists. Choose another path or pass "
                               f"overwrite (--force on the command line) to replace it.")
    if target.exists() and not target.is_dir():
        raise TraceExistsError(f"{target}: exists and is a file; a bundle is a folder. Remove "
                               f"the file or choose another path.")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_FILE).is_file():
        raise TraceExistsError(f"{target}: is a folder that is not a trace bundle (no "
                               f"{MANIFEST_FILE}); tracekit replaces only bundles. Choose "
                               f"another path.")
    given = {"instructions": instructions, "semaphores": semaphores, "memory": memory,
             "deps": deps}
    producer = Producer(producer) if isinstance(producer, str) else producer
    if created == "now":
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _check_manifest_fields(workload=workload, producer=producer, machine=machine,
                           clock_hz=clock_hz, time_unit=time_unit, created=created, extra=extra)

    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    staging = leftover_name(target, "tmp")
    staging.mkdir()  # mode 0o777 less the umask, like any folder the user makes
    try:
        # One table at a time, each conformed, written and released before the next is made
        # (a table given as a callable is only built then): peak memory is one table's.
        entries = {}
        for name, data in given.items():
            if data is not None:
                table = conform_table(TABLES[name], data() if callable(data) else data)
                entries[name] = _write_parquet(table, TABLES[name], staging / TABLES[name].file)
                del table
        manifest = Manifest(
            schema_version=SCHEMA_VERSION, workload=workload, producer=producer, tables=entries,
            machine=machine, clock_hz=clock_hz, time_unit=TimeUnit(time_unit), created=created,
            extra=dict(extra or {}),
        )
        (staging / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        if validate:
            from tracekit.trace.validate import require_valid

            require_valid(staging, display_path=target)
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_trace(target)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `path` to write a file at, renamed onto `path` when the block
    ends normally and removed when it raises: readers see the old file or the whole new one,
    never a half-written one, and a failed write leaves nothing behind."""
    target = Path(path)
    clean_leftovers(target)
    temporary = leftover_name(target, "tmp")
    try:
        yield temporary
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file (UTF-8) atomically (see `atomic_file`); OutputError, saying why,
    when it cannot be written."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give the path of a file to write.")
    try:
        with atomic_file(target) as temporary, open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())  # on disk before the rename makes it the file
    except OSError as exc:
        raise OutputError(f"{target}: cannot be written ({exc.strerror or exc}). Check that "
                          f"its folder exists and is writable, and that there is space "
                          f"left.") from None


def _check_manifest_fields(**fields: Any) -> None:
    """ManifestError, before anything is written, for manifest fields the reader would refuse."""
    producer = fields.pop("producer")
    raw = {"schema_version": SCHEMA_VERSION, **fields, "tables": {},
           "producer": {"name": producer.name, "version": producer.version}}
    problems = manifest_problems(raw)
    try:
        json.dumps(fields["extra"] or {}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problems.append(("extra", f"must hold JSON values only ({first_line(exc)})"))
    if problems:
        listing = "; ".join(f"{key}: {what}" for key, what in problems)
        raise ManifestError(f"cannot write the bundle's manifest ({listing}).")


def _replace_dir(staging: Path, target: Path) -> None:
    """Move the finished `staging` folder to `target`, replacing an existing bundle there.
    The two are exchanged in one step where the system can (Linux's renameat2), so that there
    is never a moment without a bundle at `target`; elsewhere the old one is renamed away
    first, and `clean_leftovers` puts it back should the process die before the new one is
    in place."""
    if not target.exists():
        staging.rename(target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # the old bundle, now at staging's name
        return
    retired = leftover_name(target, "old")
    target.rename(retired)
    try:
        staging.rename(target)
    except BaseException:
        retired.rename(target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the entries `a` and `b` atomically (Linux renameat2 RENAME_EXCHANGE); False where
    the system or the file system cannot, and nothing was moved."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False  # a C library without renameat2 (glibc before 2.28, musl before 1.2.?)
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


_LEFTOVER = re.compile(r"(?P<kind>tmp|old)-(?:(?P<pid>[0-9]+)-)?[0-9a-f]{32}")


def leftover_name(target: Path, kind: str) -> Path:
    """A hidden name beside `target` for a write in progress (`tmp`: the new output being
    written; `old`: a replaced bundle not yet removed), carrying this process's id so that
    `clean_leftovers` can tell a live write from one that was interrupted."""
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or an absurd number): leave its entries alone
    return True


def clean_leftovers(target: Path) -> list[Path]:
    """Entries an interrupted write to `target` left beside it, dealt with: temporaries
    removed, and a bundle that was being replaced put back when `target` is missing (else
    removed). Entries of a process still running are left alone. Returns what was handled."""
    parent = target.parent
    if not parent.is_dir():
        return []
    handled = []
    prefix = f".{target.name}."
    for entry in sorted(parent.glob(glob.escape(prefix) + "*")):
        match = _LEFTOVER.fullmatch(entry.name[len(prefix):])
        if match is None or (match["pid"] and _alive(int(match["pid"]))):
            continue
        try:
            if match["kind"] == "old" and not os.path.lexists(target):
                entry.rename(target)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue  # another process cleaned it first
        except OSError as exc:
            raise OutputError(f"{entry}: left by an interrupted write to {target}, and it "
                              f"cannot be removed ({exc.strerror}). Remove it by hand.") from None
        handled.append(entry)
    return handled


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()

