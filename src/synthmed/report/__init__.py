"""The benchmark report: one self-contained HTML file built from a benchmark directory."""

from synthmed.report.build import build_report

__all__ = ["build_report"]
