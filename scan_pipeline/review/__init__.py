"""The volunteers' review: flagged rows out in a workbook with their images, corrections back in."""
