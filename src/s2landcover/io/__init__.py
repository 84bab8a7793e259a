"""File access: the only subpackage that opens files (rasters, chip stores, tables, checkpoints)."""
