"""A tiny shop that exercises every way Django uses a cache."""
