"""DOMAIN.md §2 indicators and the supervisors' work lists, from the `facts`
table (facts.py) kept at write time.

- `facts`: the table, `record_written` (storage's one call), `backfill`;
- `tally`: the breakdown groups, `Facts` (a scope's facts) and `Tally`;
- `compute`: `indicators(db, scope, start, end, ...)`, the twenty indicators;
- `labels`: their Vietnamese and English labels.
"""
