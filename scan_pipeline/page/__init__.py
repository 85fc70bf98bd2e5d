"""Pixels to cut cells: load a page, straighten it, find its grid, cut and measure its cells."""
