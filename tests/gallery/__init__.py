"""Tests of `gallery/`."""
