"""The ``longcat`` command: ``longcat info``, ``longcat bench <area>``, ``longcat envs ...``, ``longcat serve``,
``longcat generate`` and ``longcat models init``."""
from __future__ import annotations

import argparse
import importlib
import inspect
import math
import os
import platform
import sys


def info_dict() -> dict[str, str]:
    import torch

    import longcat
    from longcat import _C

    info: dict[str, str] = {"longcat": longcat.__version__}
    for k, v in longcat.build_info().items():
        info[f"build.{k}"] = v
    info["cpu.isa_detected"] = _C.cpu_isa_detected()
    info["cpu.isa_active"] = longcat.cpu_isa()
    env_isa = os.environ.get("LONGCAT_CPU_ISA")
    if env_isa:
        info["cpu.LONGCAT_CPU_ISA"] = env_isa
    # The kernels with their own AMX (AMX-BF16 tile) copy; the others run their avx512bf16 copy there.
    amx_state = ("active" if longcat.cpu_isa() == "amx" else
                 f"not used: this CPU's best is {_C.cpu_isa_detected()}" if _C.cpu_isa_detected() != "amx"
                 else "not used: LONGCAT_CPU_ISA / set_cpu_isa chose a lower level")
    info["cpu.amx_copies"] = f"moe_grouped_swiglu, mla_prefill, mla_decode ({amx_state})"
    info["cpu.threads"] = str(longcat.num_threads())
    info["python"] = platform.python_version()
    info["torch"] = torch.__version__
    n, msg = _C.cuda_device_count()
    info["cuda.longcat_runtime"] = ("not built" if n < 0 else
                                    f"{n} device(s)" + (f" ({msg})" if n == 0 and msg else ""))
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda.torch_devices"] = ", ".join(names)
    else:
        info["cuda.torch_devices"] = "none"
    info["cmake_prefix_path"] = longcat.cmake_prefix_path()
    return info


def cmd_info(args: argparse.Namespace) -> int:
    info = info_dict()
    if args.json:
        import json

        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="longcat info", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in info.items():
        table.add_row(k, v)
    Console(width=160).print(table)
    return 0


def bounded(kind, low=None, high=None):
    """An argparse type: ``kind`` (int or float) within [low, high]; the message names the bounds."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high) or value != value:
            span = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected a value {span}, got {text}")
        return value
    return parse


def _learning_rate(text: str) -> float:
    try:
        lr = float(text)
    except ValueError:
        lr = math.nan
    if not 0 < lr <= 1:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a learning rate in (0, 1], got {text!r}")
    return lr


def cmd_bench(args: argparse.Namespace) -> int:
    from longcat.bench import AREAS
    from longcat.bench.common import profiling, report

    areas = list(AREAS) if args.area == "all" else [args.area]
    for area in areas:
        module = importlib.import_module(AREAS[area])
        # Areas that evaluate a model (heavy) also take the checkpoint and the output folder.
        params = inspect.signature(module.run).parameters
        extra = {k: v for k, v in (("model", args.model), ("out", args.out), ("summary_model", args.summary_model))
                 if k in params}
        for name in ("lr", "optimizer", "steps"):
            if getattr(args, name) is not None and name in params:
                extra[name] = getattr(args, name)
        for flag, name in (("--model", "model"), ("--summary-model", "summary_model"), ("--lr", "lr"),
                           ("--optimizer", "optimizer"), ("--steps", "steps")):
            if getattr(args, name) is not None and name not in params:
                raise SystemExit(f"longcat bench {area}: {flag} is not used by this area")
        with profiling(args.profile, area):
            result = module.run(device=args.device, quick=args.quick, **extra)
        report(result, args.out)
        if args.profile:
            print(f"  traces ({sum(len(r.get('trace', [])) for r in result.rows)}) in {args.profile}: "
                  "open in https://ui.perfetto.dev or chrome://tracing")
    return 0


# Modules that add their own subcommands: each has ``add_parser(subparsers)``.
SUBCOMMAND_MODULES = [
    "longcat.envs.cli",
    "longcat.serve.cli",
    "longcat.heavy.cli",
    "longcat.rl.cli",
    "longcat.data.cli",
    "longcat.sft.cli",
    "longcat.evaluate.cli",
    "longcat.demo",
]


def main(argv: list[str] | None = None) -> int:
    from longcat.bench import AREAS

    parser = argparse.ArgumentParser(prog="longcat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, build configuration, CPU ISA, devices")
    p_info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_info.set_defaults(func=cmd_info)
    p_bench = sub.add_parser("bench", help="run benchmarks: a table on screen, JSON + markdown on disk")
    p_bench.add_argument("area", choices=[*AREAS, "all"])
    p_bench.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p_bench.add_argument("--quick", action="store_true", help="few shapes, short timings (smoke run)")
    p_bench.add_argument("--out", default=None,
                         help="folder for <area>.json/.md (default $LONGCAT_BENCH_DIR or bench-results)")
    p_bench.add_argument("--profile", default=None, metavar="DIR",
                         help="also write a Chrome/Perfetto trace (torch.profiler, 2 calls) of each function "
                              "timed, per benchmark case, into DIR")
    p_bench.add_argument("--model", default=None, metavar="PATH",
                         help="checkpoint folder for areas that evaluate a model (heavy)")
    p_bench.add_argument("--summary-model", default=None, metavar="PATH",
                         help="heavy: a separate checkpoint for the summary step (candidates still come from --model)")
    p_bench.add_argument("--lr", type=_learning_rate, default=None,
                         help="learning rate of an area that trains models (copy_learning; default its own)")
    p_bench.add_argument("--optimizer", choices=["adamw", "muon"], default=None,
                         help="optimizer of an area that trains models (copy_learning; default adamw)")
    p_bench.add_argument("--steps", type=bounded(int, 1, 100_000), default=None,
                         help="training steps of an area that trains models (copy_learning; default its own)")
    p_bench.set_defaults(func=cmd_bench)
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "bench" and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device here")
    return args.func(args)


def console_main(argv: list[str] | None = None) -> int:
    """The ``longcat`` command: ``main`` with bad input (a ValueError or a missing file, whose
    message names the argument) reported in one line with exit status 2 instead of a traceback.
    ``LONGCAT_DEBUG=1`` shows the traceback."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("LONGCAT_DEBUG") == "1":
            raise
        print(f"longcat: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(console_main())
