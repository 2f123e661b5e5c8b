"""inferno: cost-aware, SLO-driven autoscaling of LLM inference servers on Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inferno")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
