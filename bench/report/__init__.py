"""``valley-report``: the command-line front end of bench.analysis (the report itself is bench/analysis/report.py)."""
