"""The standing hostile-world suite: broken destinations, fuzzed receivers, every CLI
command against the real receiver. Part of `make test`."""
