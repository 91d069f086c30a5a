"""Small trained byte-level RWKV models of every version (RWKV-4, 5.0, 5.1, 5.2, 6, 7) and their
golden logits from the official `rwkv` package; driven by tools/train_small.py.

Modules:

* `common`   - the shape, the Shakespeare corpus, the model container (parameters under their
               official names and shapes, taken from tools/rwkv_fixtures) and the training loop;
* `legacy`   - the torch forward and initialisation of RWKV-4, 5.0, 5.1, 5.2 and 6.0;
* `v7`       - the torch forward and initialisation of RWKV-7;
* `fixtures` - writing tests/fixtures/trained/<version>/ (model files, official logits, meta.json).
"""
