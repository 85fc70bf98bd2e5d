"""The run report: a self-contained HTML page of a run (figures, failures, pages, flagged rows)."""
