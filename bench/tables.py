"""The two markdown tables every data bench prints: throughput per loader, then each goal's ratio."""
from __future__ import annotations


def print_tables(results: dict[str, float], goals: list[tuple[str, float, bool | None]]) -> None:
    """`results`: loader → samples/s. `goals`: (goal, measured ratio, met; None when it is context only)."""
    print("| loader | samples/s |")
    print("|---|---:|")
    for name, value in results.items():
        print(f"| {name} | {value:,.0f} |")
    print()
    print("| goal | measured | met |")
    print("|---|---:|:---:|")
    for goal, value, met in goals:
        print(f"| {goal} | {value:.2f} | {'-' if met is None else 'yes' if met else 'no'} |")
