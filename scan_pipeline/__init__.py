"""scan_pipeline: scanned petition signature sheets to a clean, deduplicated CSV ledger."""

__version__ = "0.2.0"
