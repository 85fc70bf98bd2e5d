"""Cells to readings: the OCR engines, names, postal codes and signatures."""
