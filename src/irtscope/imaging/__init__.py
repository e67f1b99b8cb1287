"""Imaging outcome models: io -> features -> models / deep -> evaluate -> report."""

__all__: list[str] = []
