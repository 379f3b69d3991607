"""Builds the optional C hot path; without a compiler dreamlake falls back to its Python twin."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("dreamlake._speedups", ["src/dreamlake/_speedups.c"], optional=True),
    ]
)
