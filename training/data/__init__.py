"""Data: aligned LFW crops made by the service's detector and aligner, and the low-resolution synthesis."""
