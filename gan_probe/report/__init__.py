"""Output: strict JSON reports, atomic file writes, image grids and plots."""
