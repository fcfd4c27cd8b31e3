"""Benchmarks, one module per area; ``longcat bench <area>`` and ``bench/<area>.py`` run them.

Every benchmark measures a peer in the same run (the plain-torch reference, torch's own op, the
machine's copy bandwidth) and reports medians and ratios, never a single timing."""

AREAS = {
    "norm": "longcat.bench.norm",
    "linear": "longcat.bench.linear",
    "moe": "longcat.bench.moe",
    "moe_gemm": "longcat.bench.moe_gemm",
    "moe_route": "longcat.bench.moe_route",
    "mla": "longcat.bench.mla",
    "envs": "longcat.bench.envs",
    "envs-service": "longcat.bench.envs_service",
    "model": "longcat.bench.model",
    "engine": "longcat.bench.engine",
    "serve": "longcat.bench.serve",
    "kv": "longcat.bench.kv",
    "heavy": "longcat.bench.heavy",
    "heavy-env": "longcat.bench.heavy_env",
    "rl": "longcat.bench.rl",
    "rl-backends": "longcat.bench.rl_backends",
    "copy_learning": "longcat.bench.copy_learning",
}
