"""ClinicalTrials.gov landscape: sources -> store -> screen -> classify -> describe -> report."""

__all__: list[str] = []
