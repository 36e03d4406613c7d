"""Read a Chrome trace event file (plain or gzip-compressed JSON) as a stream: the events of its
traceEvents array are decoded one at a time and handed on in chunks, so neither the whole text
nor every event's dict is in memory at once; nesting depth and expanded size are limited.

    {"otherData": {"tracekit": {...}}, "traceEvents": [{"ph": "X", ...}, {"ph": "f", ...}]}

gives the document's top-level keys ["otherData", "traceEvents"], its otherData object, and
calls `sink.add` with lists of at most CHUNK decoded events, in file order. Each event is
decoded by the standard library's C scanner (json.scanner.c_make_scanner), the same code as
json.loads, from a sliding window of the text; only the window (a few MiB, or one event when an
event is larger) and the current chunk are held.

Limits: `max_depth` levels of arrays and objects (the document itself is level 1, an event of an
object's traceEvents level 3) and `max_bytes` of JSON text (after decompression). Either refused
with a StreamError naming the limit and its command-line flag.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from json.scanner import make_scanner
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from tracekit.errors import TracekitError

CHUNK = 8192
"""Events per chunk handed to the sink."""
BLOCK = 1 << 22
"""Bytes read at a time."""
DEFAULT_MAX_DEPTH = 64
MAX_DEPTH_CEILING = 500
"""The deepest nesting the standard parser follows safely (it recurses per level)."""
DEFAULT_MAX_BYTES_CAP = 64 << 30

_WS = re.compile(r"[ \t\n\r]*")
_AFTER = re.compile(r"[ \t\n\r]*(?:(,)[ \t\n\r]*|(\]))?")
_NEAR_END = 16


class StreamError(TracekitError):
    """A file that cannot be read as a JSON stream: unreadable, damaged gzip, not UTF-8, not
    JSON, or past a limit."""


class Sink(Protocol):
    def add(self, events: list[Any]) -> None: ...


@dataclass(frozen=True)
class Document:
    """What a trace file holds besides the events the sink received: the top-level keys (None
    for a bare array), the otherData value, the sink of the (last) traceEvents array, or the
    type name of a traceEvents that is not an array, or of a document that is neither an
    array nor an object."""

    keys: list[str] | None
    other: Any
    sink: Any
    not_array: str | None = None


def default_max_bytes() -> int:
    """Half the machine's memory, at most 64 GiB: the import takes up to about 3x the JSON's
    size for typical traces, so a larger input would exhaust memory anyway."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return DEFAULT_MAX_BYTES_CAP
    return int(min(DEFAULT_MAX_BYTES_CAP, max(total // 2, 1 << 30)))


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes of a size such as "4096", "500M", "8G" or "8GiB" (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if m is None or float(m.group(1)) * _UNITS[m.group(2).upper()] < 1:
        raise StreamError(f"--max-bytes must be a size such as 500M or 8G, got {text!r}.")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class _Text:
    """The file's text in a sliding window: `buf` holds the text from where the reader stands
    onward (what came before is gone), decoded from UTF-8 block by block."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        try:
            self.raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            raise StreamError(f"{path}: no such file. Pass a Chrome trace event JSON file "
                              f"(.json or .json.gz).") from None
        except OSError as exc:
            raise StreamError(f"{path}: cannot read the file ({exc.strerror}).") from None
        try:
            magic = self.raw.read(2)
            self.raw.seek(0)
            self.gzip = magic == b"\x1f\x8b"
            if self.gzip:
                self.stream: BinaryIO = gzip.GzipFile(fileobj=self.raw, mode="rb")
            else:
                self.stream = self.raw
                size = os.fstat(self.raw.fileno()).st_size
                if size > max_bytes:
                    raise StreamError(
                        f"{path}: {human_bytes(size)} of JSON, more than the limit of "
                        f"{human_bytes(max_bytes)} (--max-bytes); the import takes about 3x "
                        f"the JSON's size in memory. Pass a larger --max-bytes if the machine "
                        f"has the memory.")
        except OSError as exc:
            self.close()
            raise StreamError(f"{path}: cannot read the file ({exc.strerror}).") from None
        except StreamError:
            self.close()
            raise
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.bytes = 0
        self.lines = 0  # newlines in the text before buf
        self.column = 0  # characters after the last of them

    def close(self) -> None:
        if getattr(self, "stream", None) is not None and self.stream is not self.raw:
            self.stream.close()
        self.raw.close()

    def more(self, at_least: int = 0) -> bool:
        """Drop the text before `pos` and append the next block (at least `at_least` bytes);
        False at the end of the file."""
        if self.eof:
            return False
        try:
            data = self.stream.read(max(BLOCK, at_least))
        except (OSError, EOFError, zlib.error) as exc:
            raise StreamError(f"{self.path}: a damaged gzip file ({exc}); recompress it or "
                              f"pass the plain JSON.") from None
        self.bytes += len(data)
        if self.bytes > self.max_bytes:
            raise StreamError(
                f"{self.path}: expands to more than the limit of {human_bytes(self.max_bytes)} "
                f"of JSON (--max-bytes); the import takes about 3x the JSON's size in memory. "
                f"Pass a larger --max-bytes if the trace is real and the machine has the "
                f"memory.")
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise StreamError(f"{self.path}: not UTF-8 text (byte "
                              f"{self.bytes - len(data) + exc.start}); a Chrome trace is a JSON "
                              f"file.") from None
        if not data:
            self.eof = True
            return False
        gone = self.buf[:self.pos]
        newline = gone.rfind("\n")
        self.lines += gone.count("\n")
        self.column = len(gone) - newline - 1 if newline >= 0 else self.column + len(gone)
        self.buf = self.buf[self.pos:] + text
        self.pos = 0
        return True

    def where(self, pos: int) -> tuple[int, int]:
        """Line and column (1-based) of buf[pos]."""
        newline = self.buf.rfind("\n", 0, pos)
        line = self.lines + self.buf.count("\n", 0, pos) + 1
        return line, pos - newline if newline >= 0 else self.column + pos + 1


def _depth(value: Any) -> int:
    """Levels of arrays and objects in a decoded value (0 for a scalar)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in children if isinstance(c, dict | list))
    return deepest


class _Reader:
    def __init__(self, path: Path, max_depth: int, max_bytes: int) -> None:
        if not 1 <= max_depth <= MAX_DEPTH_CEILING:
            raise StreamError(f"--max-depth must be between 1 and {MAX_DEPTH_CEILING}, got "
                              f"{max_depth}.")
        if max_bytes < 1:
            raise StreamError(f"--max-bytes must be a positive number of bytes, got "
                              f"{max_bytes}.")
        self.path = path
        self.max_depth = max_depth
        self.text = _Text(path, max_bytes)
        self.scan = make_scanner(json.JSONDecoder())

    # --- errors ---------------------------------------------------------------------------

    def not_json(self, pos: int, msg: str) -> StreamError:
        line, column = self.text.where(pos)
        return StreamError(f"{self.path}: not JSON (line {line}, column {column}: {msg}). Pass "
                           f"a Chrome trace event file: an object with traceEvents, or an array "
                           f"of events.")

    def too_deep(self) -> StreamError:
        return StreamError(f"{self.path}: JSON nested deeper than the limit of "
                           f"{self.max_depth} levels (--max-depth); a Chrome trace nests a few "
                           f"levels. Check how the file was written, or pass a larger "
                           f"--max-depth (at most {MAX_DEPTH_CEILING}).")

    def bad_number(self, exc: ValueError) -> StreamError:
        return StreamError(f"{self.path}: a number the JSON parser refuses ({exc}). Trace "
                           f"times and ids fit in 64 bits; check how the file was written.")

    # --- pieces ---------------------------------------------------------------------------

    def skip(self) -> str:
        """Skip whitespace; the next character ("" at the end of the file)."""
        t = self.text
        while True:
            t.pos = _WS.match(t.buf, t.pos).end()
            if t.pos < len(t.buf):
                return t.buf[t.pos]
            if not t.more():
                return ""

    def value(self, level: int) -> Any:
        """Decode the value at pos, nested inside `level` levels, and move past it."""
        t = self.text
        grow = 0
        while True:
            try:
                obj, end = self.scan(t.buf, t.pos)
            except StopIteration as stop:
                at = stop.value
                if not t.eof and at >= len(t.buf) - _NEAR_END and t.more(grow):
                    grow = 2 * len(t.buf)
                    continue
                raise self.not_json(at, "Expecting value") from None
            except json.JSONDecodeError as exc:
                if not t.eof and (exc.pos >= len(t.buf) - _NEAR_END
                                  or exc.msg.startswith("Unterminated string")) and t.more(grow):
                    grow = 2 * len(t.buf)
                    continue
                raise self.not_json(exc.pos, exc.msg) from None
            except RecursionError:
                raise self.too_deep() from None
            except ValueError as exc:
                raise self.bad_number(exc) from None
            if end >= len(t.buf) and not t.eof and t.more(grow):
                grow = 2 * len(t.buf)
                continue
            break
        room = self.max_depth - level
        if (t.buf.count("{", t.pos, end) + t.buf.count("[", t.pos, end) > room
                and _depth(obj) > room):
            raise self.too_deep()
        t.pos = end
        return obj

    def array(self, level: int, sink: Sink, lenient: bool) -> None:
        """The events of an array whose "[" was just passed (the array at nesting `level`),
        handed to `sink` in chunks. `lenient`: the end of the file may close the array (the
        format allows a bare array cut short)."""
        t = self.text
        scan, count, room = self.scan, str.count, self.max_depth - level
        chunk: list[Any] = []
        c = self.skip()
        if c == "]":
            t.pos += 1
            return
        while True:
            buf, i = t.buf, t.pos
            try:
                obj, end = scan(buf, i)
                fast = end < len(buf)
            except (StopIteration, ValueError, RecursionError):
                fast = False
            if not fast:
                if self.skip() == "" and lenient:
                    break
                obj = self.value(level)
                buf, end = t.buf, t.pos
            elif count(buf, "{", i, end) + count(buf, "[", i, end) > room and _depth(obj) > room:
                raise self.too_deep()
            chunk.append(obj)
            if len(chunk) >= CHUNK:
                sink.add(chunk)
                chunk = []
            m = _AFTER.match(buf, end)
            while m.end() >= len(buf) and not t.eof:
                t.pos = end
                t.more()
                buf, end = t.buf, t.pos
                m = _AFTER.match(buf, end)
            if m.group(1):
                t.pos = m.end()
                if lenient and t.eof and not buf[t.pos:].strip():
                    break
                continue
            if m.group(2):
                t.pos = m.end()
                break
            if lenient and t.eof and m.end() >= len(buf):
                t.pos = m.end()
                break
            raise self.not_json(m.end(), "Expecting ',' delimiter")
        if chunk:
            sink.add(chunk)

    def string(self) -> str:
        key = self.value(0)
        if type(key) is not str:  # pragma: no cover - the caller saw a quote
            raise self.not_json(self.text.pos, "Expecting property name")
        return key

    def document(self, new_sink: Callable[[], Sink]) -> Document:
        t = self.text
        c = self.skip()
        if c == "[":
            t.pos += 1
            sink = new_sink()
            self.array(1, sink, lenient=True)
            self.end()
            return Document(None, None, sink)
        if c != "{":
            if c == "":
                raise self.not_json(t.pos, "Expecting value")
            value = self.value(0)
            self.end()
            return Document(None, None, None, not_array=type(value).__name__)
        t.pos += 1
        keys: list[str] = []
        other: Any = None
        sink: Any = None
        not_array: str | None = None
        c = self.skip()
        if c == "}":
            t.pos += 1
        while c != "}":
            if c != '"':
                raise self.not_json(t.pos, "Expecting property name enclosed in double quotes")
            key = self.string()
            if self.skip() != ":":
                raise self.not_json(t.pos, "Expecting ':' delimiter")
            t.pos += 1
            c = self.skip()
            keys.append(key)
            if key == "traceEvents" and c == "[":
                t.pos += 1
                sink, not_array = new_sink(), None
                self.array(2, sink, lenient=False)
            else:
                value = self.value(1)
                if key == "traceEvents":
                    sink, not_array = None, type(value).__name__
                elif key == "otherData":
                    other = value
            c = self.skip()
            if c == ",":
                t.pos += 1
                c = self.skip()
                if c == "}":
                    raise self.not_json(t.pos, "Expecting property name enclosed in double "
                                               "quotes")
            elif c == "}":
                t.pos += 1
            else:
                raise self.not_json(t.pos, "Expecting ',' delimiter")
        self.end()
        return Document(sorted(set(keys)), other, sink, not_array)

    def end(self) -> None:
        if self.skip() != "":
            raise self.not_json(self.text.pos, "Extra data")


def read_document(path: str | os.PathLike[str], new_sink: Callable[[], Sink], *,
                  max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int | None = None
                  ) -> Document:
    """Stream the JSON document at `path` (see the module docstring): each traceEvents array
    (or the bare array) goes to a fresh `new_sink()` in chunks."""
    reader = _Reader(Path(path), max_depth,
                     default_max_bytes() if max_bytes is None else max_bytes)
    try:
        return reader.document(new_sink)
    finally:
        reader.text.close()
