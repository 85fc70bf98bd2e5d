"""The ledger: one CSV line per signature row, and its sidecar files.

The CSV is the contract other tools rely on (see schemas/ledger.schema.json): UTF-8 without BOM,
comma-separated, a header row, every value text. Every command changes the ledger and its sidecars
(crops, details, audit, pages and outputs logs) in one change under the ledger's lock, all or
nothing (journal.py); `process` and `merge` also hold the run lock, so one of them writes a ledger.
"""
