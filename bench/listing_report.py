"""The listing benchmark's report: Markdown tables of the timings and each query's plan."""

from __future__ import annotations

from bench.listing_timing import Result


def report(results: list[Result]) -> None:
    """p50/p99 per scenario and size; at the largest size, where the p50 goes, and the plans."""
    sizes = sorted({r.size for r in results})
    names = list(dict.fromkeys(r.scenario for r in results))
    header = " | ".join(f"{s:,} users p50 / p99 (ms)" for s in sizes)
    print(f"\n| scenario | {header} |")
    print("|---|" + "---|" * len(sizes))
    for name in names:
        cells = []
        for size in sizes:
            r = next((r for r in results if r.size == size and r.scenario == name), None)
            cells.append("n/a" if r is None else f"{r.percentile(50):.2f} / {r.percentile(99):.2f}")
        print(f"| {name} | {' | '.join(cells)} |")
    print(
        f"\n| at {sizes[-1]:,} users, p50 (ms) | client, through the edge | edge's own "
        "| worker's own | Postgres execution (EXPLAIN ANALYZE) |\n|---|---|---|---|---|"
    )
    for r in (r for r in results if r.size == sizes[-1]):
        execution = r.plan.rpartition("Execution Time: ")[2].strip()
        print(
            f"| {r.scenario} | {r.percentile(50):.2f} | {r.percentile(50, r.edge_ms):.2f} "
            f"| {r.percentile(50, r.worker_ms):.2f} | {execution} |"
        )
    for r in results:
        if r.size != sizes[-1]:
            continue
        kept = "yes" if r.prepared_plan_same else "NO: the server switched to a generic plan"
        print(f"\n#### {r.scenario} at {r.size:,} users\n")
        print(f"Prepared statement keeps this plan: {kept}\n")
        print(f"```sql\n{r.sql}\n```\n\n```\n{r.plan}\n```")
