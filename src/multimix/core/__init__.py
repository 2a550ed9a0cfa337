"""The bottom layer: registries, batch and view types, errors, atomic writes, progress."""
