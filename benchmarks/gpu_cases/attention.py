"""GPU cases: scaled dot-product attention, fastdl's fused kernels against
torch.nn.functional.scaled_dot_product_attention (float32: PyTorch's memory-efficient
cutlass kernel, FP32 SIMT, the issue's 0.8x target) and, where installed, CuPy's
materialised softmax(Q K^T) V.

Sizes of the CPU comparison (asv_benchmarks/compare_cases/attention.py: B8 H8 E64, L 512 and
1024) plus L 2048. FLOPs counted as there: 4 B H L S E forward (halved under is_causal),
8 B H L S E backward (its four GEMMs; the recomputed scores are not counted).
"""

B, H, E = 8, 8, 64


def _sdpa_cupy(cupy, q, k, v, scale):
    s = cupy.matmul(q, k.swapaxes(-1, -2)) * scale
    s = cupy.exp(s - s.max(axis=-1, keepdims=True))
    return cupy.matmul(s / s.sum(axis=-1, keepdims=True), v)


def cases(env):
    fd = env.fastdl
    torch, cupy = env.torch, env.cupy
    lengths = (512,) if env.quick else (512, 1024, 2048)
    for length in lengths:
        shape = (B, H, length, E)
        q = env.randn(shape, "float32", 0)
        k = env.randn(shape, "float32", 1)
        v = env.randn(shape, "float32", 2)
        for causal in (False, True):
            impls = {"fastdl": (lambda q=q, k=k, v=v, c=causal:
                                fd.scaled_dot_product_attention(q, k, v, is_causal=c))}
            if torch is not None:
                tq, tk, tv = (torch.as_tensor(a, device="cuda") for a in (q, k, v))
                impls["torch"] = (lambda tq=tq, tk=tk, tv=tv, c=causal:
                                  torch.nn.functional.scaled_dot_product_attention(
                                      tq, tk, tv, is_causal=c))
            if cupy is not None and not causal and length <= 1024:
                cq, ck, cv = (cupy.asarray(a) for a in (q, k, v))
                impls["cupy"] = (lambda cq=cq, ck=ck, cv=cv:
                                 _sdpa_cupy(cupy, cq, ck, cv, E ** -0.5))
            yield {"name": "sdpa" + (" causal" if causal else ""),
                   "size": f"B{B} H{H} L{length} E{E} float32", "bytes": None,
                   "flops": int(4 * B * H * length * length * E * (0.5 if causal else 1.0)),
                   "impls": impls}

    for length in ((512,) if env.quick else (512, 1024)):
        shape = (B, H, length, E)
        q = env.randn(shape, "float32", 0)
        k = env.randn(shape, "float32", 1)
        v = env.randn(shape, "float32", 2)
        do = env.randn(shape, "float32", 3)
        out, lse = fd.scaled_dot_product_attention(q, k, v, return_lse=True)
        impls = {"fastdl": (lambda q=q, k=k, v=v, do=do, out=out, lse=lse:
                            fd.scaled_dot_product_attention_backward(do, q, k, v, out, lse))}
        if torch is not None:
            tq, tk, tv = (torch.as_tensor(a, device="cuda").detach().clone().requires_grad_()
                          for a in (q, k, v))
            tdo = torch.as_tensor(do, device="cuda")
            tout = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
            # the backward alone, from a kept graph (as fastdl's, from out and lse)
            impls["torch"] = (lambda tout=tout, tq=tq, tk=tk, tv=tv, tdo=tdo:
                              torch.autograd.grad(tout, (tq, tk, tv), tdo, retain_graph=True))
        yield {"name": "sdpa backward (dQ,dK,dV)", "size": f"B{B} H{H} L{length} E{E} float32",
               "bytes": None, "flops": int(8 * B * H * length * length * E), "impls": impls}
