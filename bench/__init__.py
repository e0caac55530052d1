"""fnrun benchmarks against peers: `bench/run` (see bench/README.md)."""
