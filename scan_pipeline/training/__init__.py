"""Builds the shipped models and data; needs torch and the dev extras; never imported at run time."""
