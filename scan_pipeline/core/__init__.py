"""The records, errors, configuration, template and text rules every stage shares; imports nothing above it."""
