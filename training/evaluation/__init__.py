"""`python -m training.evaluate`, in parts: `systems` (how the baseline and BTNet embed a crop at resolution r, and
the on-disk embedding cache), `accuracy` (LFW verification and open-set identification, with the shared
`evaluation` package's protocol and metrics), `cost` (MACs and latency of each path, SCAN vs plain) and `report`
(docs/multires.md and its ROC plot)."""
