"""Golden-fixture tooling for rwkv-wgpu: random RWKV models with the official tensor names and
shapes, run through BlinkDL's `rwkv` package (PyPI 0.8.32) and checked against independent
float64 numpy implementations of each version's single-token math.

Modules:

* `common`   - lossless rounding, random helpers, saving/loading, run results, statistics and
               the sensitivity check (shared by every version);
* `official` - runs the official package in a subprocess per version family (RWKV-7 needs
               `RWKV_V7_ON=1` at import time, RWKV-4..6 need it unset);
* `v7`       - RWKV-7 ("x070") weights and reference;
* `legacy`   - the parts RWKV-4, 5.x and 6.0 share (blocks, channel mix, batched reference loop);
* `v4`, `v5`, `v6` - each version's time-mix weights and reference;
* `cases`    - the committed fixture cases;
* `build`    - the pipeline (build, save, run, verify, write) and the command line.

Entry point: `python3 tools/make_fixtures.py` (see its --help). `tools/check_cli.py` uses the
same architectures to compare the CLI with the official package on random models.
"""
