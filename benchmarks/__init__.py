"""Side-by-side benchmarks against the peers; not run by CI."""
