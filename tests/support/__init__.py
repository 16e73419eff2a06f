"""What the tests share, each piece written once (tests/conftest.py puts tests/ on sys.path, so a
test imports ``support.<module>``):

* ``tiny_model``: the tiny random GPT-2 and its tokenizer, built offline (the conftest fixtures,
  tests that need another size, the benchmarks);
* ``data``: the package's bundled mini data, read as the tests read it;
* ``harness``: running the real harness (CLI and Python API) and writing local task folders;
* ``runs``: run folders in the harness's layout (``--output_path --log_samples``), written by
  the harness's ``EvaluationTracker`` or by hand, and read back;
* ``summary``: reading calib-report's summary.md;
* ``stats``: ``token_stats`` requests and the comparison of two ``TokenStats``;
* ``fakes``: stand-ins for the backends that are not installed or not running here (vLLM, an
  OpenAI-compatible completions server), answering from the tiny GPT-2's logits;
* ``brute_force``: the calibration metrics recomputed from records with plain loops, independent
  of ``calib_metrics``.
"""
