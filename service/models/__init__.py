"""Model artifacts: the pinned registry, the fetch step and the manifest that `service/` reads.

Run `python -m service.models fetch` to install every pinned artifact into the model directory.
"""
