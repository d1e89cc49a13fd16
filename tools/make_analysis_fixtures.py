#!/usr/bin/env python3
"""Regenerates crates/attnflow-core/tests/fixtures/analysis_golden.json.

An independent reference for attnflow's attention rollout (Abnar & Zuidema
2020) and attention flow, written with numpy and networkx from the
definitions, not from attnflow's code:

* per layer: fuse heads (mean / max / min); zero each row's lowest
  floor(ratio * n) weights (ties broken by column order, never the row's
  largest); renormalise rows; residual 0.5*A + 0.5*I; renormalise rows;
* rollout: product of the layers from `start_layer` on, last layer on the
  left;
* flow: networkx maximum flow in the layered graph whose edge
  (layer l+1, i) -> (layer l, j) has capacity R_l[i, j].

Run with the project's Python (numpy and networkx):
    /work/.torchenv/bin/python tools/make_analysis_fixtures.py
"""
import json
import pathlib

import networkx as nx
import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/attnflow-core/tests/fixtures/analysis_golden.json"


def fuse(heads, fusion):
    return {"mean": heads.mean(axis=0), "max": heads.max(axis=0), "min": heads.min(axis=0)}[fusion]


def layer_matrix(heads, fusion, ratio):
    fused = fuse(heads, fusion).copy()
    n = fused.shape[1]
    discard = min(int(np.floor(ratio * n)), n - 1)
    for row in fused:
        order = np.argsort(row, kind="stable")  # ascending; ties by column
        row[order[:discard]] = 0.0
    sums = fused.sum(axis=1, keepdims=True)  # keepdims: rows, not columns
    fused = np.divide(fused, sums, out=np.zeros_like(fused), where=sums > 0)
    residual = 0.5 * fused + 0.5 * np.eye(n)
    return residual / residual.sum(axis=1, keepdims=True)


def rollout(stack, fusion, ratio, start):
    n = stack.shape[-1]
    joint = np.eye(n)
    for heads in stack[start:]:
        joint = layer_matrix(heads, fusion, ratio) @ joint
    return joint


def flow(stack, fusion, ratio, start, target):
    layers = [layer_matrix(heads, fusion, ratio) for heads in stack[start:]]
    n = stack.shape[-1]
    graph = nx.DiGraph()
    for level, matrix in enumerate(layers):
        for i in range(n):
            for j in range(n):
                if matrix[i, j] > 0:
                    graph.add_edge((level + 1, i), (level, j), capacity=float(matrix[i, j]))
    source = (len(layers), target)
    return [nx.maximum_flow_value(graph, source, (0, j)) for j in range(n)]


def main():
    rng = np.random.default_rng(20260501)
    layers, heads, n = 4, 3, 6
    logits = rng.normal(size=(layers, heads, n, n)) * 2.0
    stack = np.exp(logits - logits.max(axis=-1, keepdims=True))
    stack /= stack.sum(axis=-1, keepdims=True)
    cases = []
    for fusion, ratio, start, target in [
        ("mean", 0.0, 0, 0),
        ("mean", 0.5, 0, 5),
        ("max", 0.0, 1, 2),
        ("min", 0.34, 2, 4),
        ("max", 0.9, 0, 3),
    ]:
        cases.append({
            "fusion": fusion,
            "discard_ratio": ratio,
            "start_layer": start,
            "target": target,
            "rollout": rollout(stack, fusion, ratio, start).tolist(),
            "flow": flow(stack, fusion, ratio, start, target),
        })
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "generator": "tools/make_analysis_fixtures.py",
        "layers": layers, "heads": heads, "tokens": n,
        "attention": stack.tolist(),
        "cases": cases,
    }, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
