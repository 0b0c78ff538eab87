"""Analysis of a results set (issue 6): Parquet in, tables, statistics, verdict, figures and a report out.

Reads only the Parquet tables written by bench/records.py, the tuning step and bench/import_cv.py (pyarrow and
pandas; no torch, no GPU, no network), so a report renders anywhere the results directory is copied to.

Modules, one job each: names (study vocabularies), load (runs/cells → per-run final metrics, diverged handling),
curves (targeted curve reads), stats (pure statistics), tables (report tables), verdict ("no single best
optimizer"), coverage (what is missing), compare (two results sets), figures, render (HTML/Markdown),
report (the report directory), synthetic (a generated results set), benchmark (report timing at study size).
"""
