"""Results on disk: two Parquet tables per experiment, readable with pyarrow alone.

- ``history.parquet``: one row per report (trial id, iteration, every scalar metric, and the
  ``media/*`` PNG payloads as binary columns).
- ``trials.parquet``: one row per trial: id, status, outcome (completed / early_stopped /
  diverged / error / interrupted / running), space, flattened config (``config/...``), last and
  best metrics (``last/...``, ``best/...``), iterations, budget, wall time, checkpoint path,
  diverged flag, and for Pareto searches whether the trial is on the front of full-budget
  trials.

While a search runs, :class:`ResultsStore` appends what changed as small part files under
``parts/`` (the new history rows, the rows of the trials that changed), so every flush writes
only what is new; at the end of the search the parts are compacted into the two tables. Readers
(:func:`load_results`) merge the tables and any parts: the last row of a trial, and of a
(trial, iteration), wins. No Ray, no torch here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import UserError
from orchestrator.storage import TMP_SUFFIX, Location
from orchestrator.trial_rows import INTERRUPTED, derive
from trainables.metrics import WORST_KEY

HISTORY_FILE = "history.parquet"
TRIALS_FILE = "trials.parquet"
PARTS_DIR = "parts"
#: Final numbers of ``orchestrator evaluate``: one row per trial, ``trial_id`` and ``test/...``
#: keys, merged into the trial rows as ``last/test/...`` by every reader.
EVALUATIONS_FILE = "evaluations.parquet"
#: The lease ``orchestrator evaluate`` holds while it merges its rows into EVALUATIONS_FILE.
EVALUATIONS_LOCK = "evaluations.lock"
#: Outcomes of trials that are not running any more.
FINISHED = ("completed", "early_stopped", "diverged", "error", "interrupted")


logger = logging.getLogger(__name__)


class CorruptResults(UserError):
    """A results file that cannot be read (truncated, not Parquet)."""


def to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows with heterogeneous keys -> one table (missing values null; all-null columns as
    strings so that every column has a type)."""
    if not rows:
        return pa.table({})
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    arrays, names = [], []
    for key in columns:
        values = [row.get(key) for row in rows]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            array = pa.array([None if v is None else str(v) for v in values])
        if pa.types.is_null(array.type):
            array = array.cast(pa.string())
        arrays.append(array)
        names.append(key)
    return pa.Table.from_arrays(arrays, names=names)


def write_table(table: pa.Table, location: Location, metadata: dict[str, str] | None = None) -> None:
    if metadata:
        table = table.replace_schema_metadata({f"orchestrator.{k}": v for k, v in metadata.items()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    location.write_bytes(sink.getvalue().to_pybytes())


def read_table(location: Location) -> pa.Table:
    """A Parquet file; :class:`CorruptResults` (one line, the file and the cause) if it is
    damaged."""
    try:
        # ParquetFile, single-threaded, not pq.read_table: read_table goes through
        # pyarrow.dataset's scanner, whose background threads made a command that exits right
        # after reading abort now and then at interpreter exit ("terminate called without an
        # active exception", apache/arrow#34314: ~1 run in 40 here, 0 in 200 this way).
        return pq.ParquetFile(pa.BufferReader(location.read_bytes())).read(use_threads=False)
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        cause = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CorruptResults(f"{location.uri} is damaged and cannot be read ({cause})") from None


def table_metadata(table: pa.Table) -> dict[str, Any]:
    """The ``orchestrator.*`` schema metadata of a results table (JSON values decoded)."""
    raw = table.schema.metadata or {}
    meta = {
        k.decode()[len("orchestrator.") :]: v.decode()
        for k, v in raw.items()
        if k.startswith(b"orchestrator.")
    }
    for key in ("objectives", "params", "constraint"):
        if key in meta:
            meta[key] = json.loads(meta[key])
    if "objectives" in meta:
        meta["objectives"] = [tuple(o) for o in meta["objectives"]]
    return meta


def _part_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows of a part: all-null columns are left out (another part may type them)."""
    return to_table([{k: v for k, v in row.items() if v is not None} for row in rows])


#: The name of a part: ``history-000012.parquet``.
_PART = re.compile(r"(history|trials)-(\d{6})\.parquet")
_WARNED: set[str] = set()


def _name(loc: Location) -> str:
    return loc.uri.rstrip("/").rsplit("/", 1)[-1]


def _seq_of(loc: Location) -> int:
    return int(_PART.fullmatch(_name(loc)).group(2))


#: Parts written before they are merged into one (``ResultsStore.merge_parts``).
MERGE_PARTS = 100


class ResultsStore:
    """An experiment's two tables, appended to in parts while a search runs.

    ``append`` writes one part per table with only the given rows; ``compact`` rewrites the two
    tables from everything (tables and parts) and deletes the parts. Reading merges both, so a
    reader during a search sees every flushed row.
    """

    def __init__(self, experiment: Location):
        self.experiment = experiment
        self.parts = experiment.child(PARTS_DIR)
        self._seq: int | None = None
        #: parts this store wrote since it last merged them, and the part that merge wrote
        self._fresh = 0
        self._merged = 0

    def part_files(self, table: str = "") -> list[Location]:
        """The parts of ``table`` (``history`` / ``trials``; both when empty) in order. Any other
        file in ``parts/`` (a copy a user made, say) is not a part: it is left alone, with a
        warning, instead of being read or deleted."""
        parts = []
        for loc in self.parts.files(prefix=f"{table}-" if table else ""):
            match = _PART.fullmatch(_name(loc))
            if match and (not table or match.group(1) == table):
                parts.append(loc)
            elif not loc.uri.endswith(TMP_SUFFIX) and loc.uri not in _WARNED:
                _WARNED.add(loc.uri)
                logger.warning("ignoring %s: not a part the search wrote", loc.uri)
        return parts

    def _next_seq(self) -> int:
        if self._seq is None:
            seqs = [_seq_of(loc) for loc in self.part_files()]
            self._seq = max(seqs, default=0)
        self._seq += 1
        return self._seq

    def append(
        self,
        history: Sequence[dict[str, Any]],
        trials: Sequence[dict[str, Any]],
        metadata: dict[str, str],
    ) -> None:
        """Write a part of new history rows and one of changed trial rows (either may be empty)."""
        seq = self._next_seq()
        if history:
            write_table(_part_table(history), self.parts.child(f"history-{seq:06d}.parquet"), metadata)
        if trials:
            write_table(_part_table(trials), self.parts.child(f"trials-{seq:06d}.parquet"), metadata)
        self._fresh += 1
        if self._fresh >= MERGE_PARTS:
            self.merge_parts(metadata)

    def merge_parts(self, metadata: dict[str, str]) -> None:
        """The parts written since the last merge become one part per table (same rows, same
        order), so a search of 10,000 trials leaves about 100 parts for a reader or a resume,
        not 20,000, while each flush still writes only what is new (a full compaction per
        flush would rewrite every row)."""
        fresh = [loc for loc in self.part_files() if _seq_of(loc) > self._merged]
        seq = self._next_seq()
        merged = []
        for table in ("history", "trials"):
            locs = [loc for loc in fresh if _name(loc).startswith(f"{table}-")]
            try:
                whole = pa.concat_tables([read_table(loc) for loc in locs], promote_options="default")
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
                continue  # a column typed differently in two parts (or none): they stay apart
            write_table(whole, self.parts.child(f"{table}-{seq:06d}.parquet"), metadata)
            merged += locs
        for loc in merged:  # a crash before this leaves rows twice: readers keep the last of each
            loc.delete()
        self._merged, self._fresh = seq, 0

    def _rows(self, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Rows of the compacted table ``name`` then of its parts in order, with the newest
        metadata found."""
        rows: list[dict[str, Any]] = []
        meta: dict[str, Any] = {}
        base = self.experiment.child(f"{name}.parquet")
        sources = ([base] if base.exists() else []) + self.part_files(name)
        for loc in sources:
            table = read_table(loc)
            meta = table_metadata(table) or meta
            rows += [{k: v for k, v in r.items() if v is not None} for r in table.to_pylist()]
        return rows, meta

    def read(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        """``(trials, history, metadata)``: the last row of each trial and of each (trial,
        iteration), in first-seen order."""
        trial_rows, meta = self._rows("trials")
        history_rows, history_meta = self._rows("history")
        trials: dict[str, dict[str, Any]] = {}
        for row in trial_rows:
            trials[row["trial_id"]] = row
        history: dict[tuple[str, int], dict[str, Any]] = {}
        for row in history_rows:
            history[(row["trial_id"], int(row.get("iteration") or 0))] = row
        meta = meta or history_meta
        for trial_id, shown in latest_evaluations(self.evaluations()).items():
            row = trials.get(trial_id)
            if row is not None:
                row.update({f"last/{k}": v for k, v in shown.items() if k.startswith("test/")})
        rows = list(trials.values())
        derive(rows, meta)
        return rows, list(history.values()), meta

    def evaluations(self) -> list[dict[str, Any]]:
        """Rows of ``evaluations.parquet``, one per trial and ``orchestrator evaluate`` run (none
        before one ran), oldest first."""
        loc = self.experiment.child(EVALUATIONS_FILE)
        if not loc.exists():
            return []
        rows = [{k: v for k, v in r.items() if v is not None} for r in read_table(loc).to_pylist()]
        return sorted(rows, key=lambda r: r.get("evaluated_at") or 0.0)

    def save_evaluations(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add or replace rows of ``evaluations.parquet`` (one per trial and evaluation run,
        ``evaluation_id``), merged under the file's own lease and written atomically, so that
        concurrent ``orchestrator evaluate`` runs, during a search or not, all keep theirs."""
        from orchestrator import driver_lock

        def key(row: dict[str, Any]) -> tuple:
            return row["trial_id"], row.get("evaluation_id")

        new = {key(r): dict(r) for r in rows}
        with driver_lock.briefly(self.experiment, EVALUATIONS_LOCK, "orchestrator evaluate"):
            kept = [r for r in self.evaluations() if key(r) not in new]
            write_table(to_table(kept + list(new.values())), self.experiment.child(EVALUATIONS_FILE))

    def mark_unfinished_interrupted(self) -> int:
        """Rows still ``running`` / ``pending`` / ``paused`` -> ``interrupted`` (appended as a
        part; nothing else changes); how many. For a search that ended without its driver
        writing the final rows."""
        if not self.has_results():
            return 0
        raw, meta = self._rows("trials")
        latest = {row["trial_id"]: row for row in raw}
        changed = [
            {**row, "status": INTERRUPTED, "outcome": "interrupted"}
            for row in latest.values()
            if row.get("outcome") in ("running", "pending", "paused")
        ]
        if changed:
            encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
            self.append([], changed, encoded)
        return len(changed)

    def has_results(self) -> bool:
        return self.experiment.child(TRIALS_FILE).exists() or bool(self.part_files("trials"))

    def compact(self, metadata: dict[str, str], trials: Sequence[dict[str, Any]] | None = None) -> None:
        """Rewrite ``history.parquet`` and ``trials.parquet`` from everything and remove the
        parts. ``trials`` replaces the trial rows when given (the writer's final view)."""
        stored_trials, history, _ = self.read()
        parts = self.part_files()
        write_table(to_table(history), self.experiment.child(HISTORY_FILE), metadata)
        write_table(
            to_table(list(trials) if trials is not None else stored_trials),
            self.experiment.child(TRIALS_FILE),
            metadata,
        )
        for loc in parts:
            loc.delete()
        self.parts.remove_leftovers()
        self.experiment.remove_leftovers()


def latest_evaluations(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What each trial shows of its evaluations (rows oldest first): the newest run, joined by
    the numbers of older runs on the same images and radius (two runs of different attacks,
    concurrent or not, both show); a run on other images or another radius replaces them. The
    per-image worst case is shown only where the newest run measured every attack shown."""
    shown: dict[str, dict[str, Any]] = {}
    for row in rows:
        before = shown.get(row["trial_id"])
        same = before is not None and all(before.get(k) == row.get(k) for k in ("test/eval_n", "eval_eps"))
        if not same:
            shown[row["trial_id"]] = dict(row)
            continue
        attacks = list(
            dict.fromkeys(
                [
                    *str(before.get("eval_attacks", "")).split(","),
                    *str(row.get("eval_attacks", "")).split(","),
                ]
            )
        )
        merged = {k: v for k, v in before.items() if k != f"test/{WORST_KEY}"}
        merged.update(row)
        if set(str(row.get("eval_attacks", "")).split(",")) != set(attacks):
            merged.pop(f"test/{WORST_KEY}", None)
        merged["eval_attacks"] = ",".join(a for a in attacks if a)
        shown[row["trial_id"]] = merged
    return shown


def load_results(experiment: Location) -> tuple[pa.Table, pa.Table]:
    """``(trials, history)`` of an experiment as tables, parts of a running search included.

    Raises ``FileNotFoundError`` when there are no results, :class:`CorruptResults` when a
    file is damaged."""
    store = ResultsStore(experiment)
    if not store.has_results():
        raise FileNotFoundError(f"no {TRIALS_FILE} in {experiment.uri}")
    trials, history, meta = store.read()
    encoded = _encode_metadata(meta)
    return (
        to_table(trials).replace_schema_metadata(encoded),
        to_table(history).replace_schema_metadata(encoded),
    )


def _encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in meta.items():
        out[f"orchestrator.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out
