"""Test helpers shared by the suites: a Kubernetes API emulator, fake vLLM exporters, a real Prometheus."""
