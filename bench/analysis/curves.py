"""Targeted reads of the long ``curves`` table: only the runs, splits, metrics and epochs a figure needs.

A full study has tens of millions of curve rows, so nothing here reads the whole table into pandas. Two layouts
coexist under ``curves/``: the run loop writes one file per run (``<run_id>.parquet``, bench/records.py), the importer
and the synthetic generator write multi-row files. Runs that have their own file are read file by file (cheap for
a few thousand ids). Multi-row files are scanned row group by row group: the four key columns are read as Arrow
dictionaries, the row mask is computed on the small dictionaries (``is_in`` over a few thousand distinct strings,
then ``take`` by index — no per-row string hashing), and the ``value`` column is read only for row groups with a
match. Files are scanned in parallel threads (pyarrow releases the GIL).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.records import CURVES_SCHEMA

KEYS = ["run_id", "epoch", "split", "metric"]
_DICT_COLUMNS = ["run_id", "split", "metric"]


def _dict_isin(column: pa.ChunkedArray, values: pa.Array) -> pa.ChunkedArray:
    """``is_in`` for a dictionary column, evaluated once per distinct value."""
    chunks = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            hit = pc.is_in(chunk.dictionary, value_set=values)
            chunks.append(pc.fill_null(pc.take(hit, chunk.indices), False))
        else:
            chunks.append(pc.fill_null(pc.is_in(chunk, value_set=values), False))
    return pa.chunked_array(chunks, type=pa.bool_())


def _mask(keys: pa.Table, run_ids: pa.Array | None, splits: pa.Array | None, metrics: pa.Array | None,
          epochs: pa.Array | None) -> pa.ChunkedArray | None:
    mask = None
    for col, vals in (("run_id", run_ids), ("split", splits), ("metric", metrics)):
        if vals is not None:
            m = _dict_isin(keys[col], vals)
            mask = m if mask is None else pc.and_(mask, m)
    if epochs is not None:
        m = pc.is_in(keys["epoch"], value_set=epochs)
        mask = m if mask is None else pc.and_(mask, m)
    return mask


def _plain(table: pa.Table) -> pa.Table:
    return table.select(CURVES_SCHEMA.names).cast(CURVES_SCHEMA)


def _scan_file(path: Path, run_ids: pa.Array | None, splits: pa.Array | None, metrics: pa.Array | None,
               epochs: pa.Array | None) -> list[pa.Table]:
    pf = pq.ParquetFile(path, read_dictionary=_DICT_COLUMNS)
    out = []
    for rg in range(pf.num_row_groups):
        keys = pf.read_row_group(rg, columns=KEYS, use_threads=False)
        mask = _mask(keys, run_ids, splits, metrics, epochs)
        if mask is not None and not pc.any(mask).as_py():
            continue
        values = pf.read_row_group(rg, columns=["value"], use_threads=False).column("value")
        table = keys.append_column("value", values)
        if mask is not None:
            table = table.filter(mask)
        out.append(_plain(table))
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.parquet") if not p.name.startswith((".", "_")))


def _empty() -> pd.DataFrame:
    return _to_pandas(CURVES_SCHEMA.empty_table())


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    for col in _DICT_COLUMNS:
        df[col] = df[col].astype("category")
    return df


def read_curves(results_dir: str | Path, run_ids: Iterable[str], *, splits: Sequence[str] | None = None,
                metrics: Sequence[str] | None = None, epochs: Sequence[int] | None = None) -> pd.DataFrame:
    """Curve rows (run_id, epoch, split, metric, value) of the given runs, restricted as asked; the string columns
    are pandas categoricals. Runs without curves simply have no rows."""
    root = Path(results_dir) / "curves"
    wanted = list(dict.fromkeys(str(r) for r in run_ids))
    if not wanted or not root.is_dir():
        return _empty()
    s = pa.array(list(splits)) if splits is not None else None
    m = pa.array(list(metrics)) if metrics is not None else None
    e = pa.array(list(epochs), type=pa.int32()) if epochs is not None else None
    own = [r for r in wanted if (root / f"{r}.parquet").is_file()]
    own_set = set(own)
    rest = [r for r in wanted if r not in own_set]
    tables: list[pa.Table] = []
    for run_id in own:
        t = pq.read_table(root / f"{run_id}.parquet", read_dictionary=_DICT_COLUMNS)
        mask = _mask(t, None, s, m, e)
        tables.append(_plain(t if mask is None else t.filter(mask)))
    if rest:
        files = [p for p in _files(root) if p.stem not in own_set]
        ids = pa.array(rest)
        with ThreadPoolExecutor(max_workers=min(len(files), os.cpu_count() or 1) or 1) as pool:
            for part in pool.map(lambda p: _scan_file(p, ids, s, m, e), files):
                tables.extend(part)
    if not tables:
        return _empty()
    return _to_pandas(pa.concat_tables(tables))


def count_rows(results_dir: str | Path) -> int:
    """Total curve rows (from Parquet footers, no data read)."""
    root = Path(results_dir) / "curves"
    if not root.is_dir():
        return 0
    return sum(pq.ParquetFile(p).metadata.num_rows for p in _files(root))
