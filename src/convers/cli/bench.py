"""`convers bench ...`: benchmarks that print a table and write JSON under bench/results/."""

from __future__ import annotations

from pathlib import Path

import click

from convers.cli.context import settings_from


@click.group()
def bench() -> None:
    """Measure recall quality and latency."""


@bench.command("memory")
@click.option("--sizes", default="1000,10000,100000", show_default=True, help="Stored-turn counts to measure, comma separated.")
@click.option("--people", default=40, show_default=True, help="Synthetic people with facts to ask about.")
@click.option("--queries", default=200, show_default=True, help="Latency samples per size.")
@click.option("--seed", default=7, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/memory-<time>.json).")
@click.pass_context
def memory_bench(ctx: click.Context, sizes: str, people: int, queries: int, seed: int, out: Path | None) -> None:
    """Recall@1/5/10 (vector, lexical, fused) and search latency at several store sizes."""
    from convers.bench.memory import BenchConfig, print_table, run_benchmark, write_result

    try:
        size_list = sorted({int(s) for s in sizes.split(",") if s.strip()})
    except ValueError:
        raise click.UsageError(f"--sizes takes numbers separated by commas, got {sizes!r}") from None
    settings = settings_from(ctx)
    config = BenchConfig(sizes=size_list, people=people, latency_queries=queries, seed=seed)
    result = run_benchmark(settings, config, progress=lambda text: click.echo(text, err=True))
    print_table(result, click.echo)
    path = write_result(result, out)
    click.echo(f"wrote {path}")
