"""SmearScope's shared core: the contract every stage relies on, on numpy, Pillow and jsonschema alone.

Training (``train``), conversion (``convert``), the app (``edge_app``) and the benchmarks import
these modules; this package imports none of them (``make test`` checks the layers with
import-linter, see ``[tool.importlinter]`` in pyproject.toml).

| module | what it holds |
|---|---|
| ``errors`` | the one base exception, the named exit codes every command line uses |
| ``paths`` | where the project, the schemas and the default dataset are |
| ``files`` | file names inside a run folder and a bundle; sha256 of a path or of bytes |
| ``imaging`` | safe decoding of any image file and the resize policy: the pixels the model sees |
| ``model_card`` | ``model_card.json``: schema, read, validate, write |
| ``manifest`` | the split manifest: row type, read, write, counts, leak check, loading its images |
| ``calibration`` | softmax with temperature and the abstain ("refer") rule |
| ``ood`` | the image statistics of the unfamiliar-image check, the check itself and its fitting |
| ``colour`` | per-image colour standardisation: the colour-robust figures of training, conversion and the benchmark |
| ``console`` | one style for the command lines: ``[elapsed] message`` log lines and progress bars (tqdm) |
| ``options`` | command-line options made from a config dataclass's fields (one default, flag and help each) |
"""
