"""Generated sheets: the blank sheet a group prints, and the sample generator and its signers."""
