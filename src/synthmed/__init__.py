"""synthmed: synthetic medical imaging data sets, and the numbers that say whether they can be shared."""

__version__ = "0.1.0"
