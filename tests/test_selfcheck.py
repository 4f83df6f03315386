"""``python -m fastdl``: the self-check runs, reports JSON, and fails loudly when a check fails."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fastdl
from fastdl._selfcheck import cases, runner


def test_every_case_builds_and_passes_quick(capsys):
    """The relu family at quick sizes, without torch: checked, timed, JSON out."""
    rc = runner.main(quick=True, as_json=True, use_torch=False, match="relu")
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["failed"] == 0
    ops = {r["op"] for r in out["rows"]}
    assert {"relu", "relu_grad", "relu_backward", "leaky_relu"} <= ops
    for r in out["rows"]:
        assert r["ok"] and r["numpy_ms"] > 0 and r["fastdl_ms"] > 0
        assert r["speedup"] == pytest.approx(r["numpy_ms"] / r["fastdl_ms"])


def test_every_public_family_has_a_case():
    names = " ".join(c.op for c in cases.all_cases())
    for op in ("matmul", "einsum", "linear", "linear_backward", "sigmoid", "gelu", "silu",
               "add", "subtract", "multiply", "divide", "maximum", "softmax", "log_softmax",
               "cross_entropy", "mse", "softmax_cross_entropy", "sum", "mean", "var", "conv2d",
               "max_pool2d", "avg_pool2d", "global_avg_pool2d", "batch_norm", "layer_norm",
               "scaled_dot_product_attention", "sgd_", "momentum_", "adam_",
               "clip_grad_norm_", "l1_penalty", "l2_penalty", "dropout", "he_normal",
               "xavier_uniform"):
        assert op in names, op


def test_a_wrong_result_fails_the_run(monkeypatch, capsys):
    real = cases.all_cases

    def broken():
        out = [c for c in real() if c.op == "relu"]
        out[0].fastdl = lambda n: fastdl.relu(n["x"]) + np.float32(1e-2)
        return out

    monkeypatch.setattr(runner, "all_cases", broken)
    rc = runner.main(quick=True, as_json=True, use_torch=False)
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["failed"] == 1 and not out["rows"][0]["ok"]


def test_a_crash_is_a_failed_check(monkeypatch, capsys):
    real = cases.all_cases

    def crashing():
        out = [c for c in real() if c.op == "tanh"]
        out[0].fastdl = lambda n: fastdl.tanh(n["x"].astype(complex))
        return out

    monkeypatch.setattr(runner, "all_cases", crashing)
    assert runner.main(quick=True, use_torch=False) == 1
    assert "FAIL TypeError" in capsys.readouterr().out


def test_command_line_info():
    done = subprocess.run([sys.executable, "-m", "fastdl", "--info"], capture_output=True,
                          text=True, check=True)
    assert "fastdl:" in done.stdout and "blas_provider" in done.stdout


def test_all_cases_pass_their_checks(capsys):
    """Every case of the self-check (quick sizes, checks only): a broken op or a broken case
    fails here, not first on a user's machine."""
    rc = runner.main(quick=True, as_json=True, use_torch=False, timing=False)
    out = json.loads(capsys.readouterr().out)
    bad = [(r["op"], r.get("exception", r["error"])) for r in out["rows"] if not r["ok"]]
    assert rc == 0 and not bad, bad
