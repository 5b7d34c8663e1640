"""The head in the Amaranth simulator: Σ over frames, argmax (first maximum wins) and the result
stream with backpressure; the final LayerNorm → Σ → classifier → argmax chain bit-exact with
``fixed.model.run`` (the final LayerNorm on the NormUnit, the classifier on the MAC engine).
"""

from __future__ import annotations

import random

import numpy as np

from nanomamba_hw.fixed.ops import Fmt
from nanomamba_hw.hw.head import Head
from nanomamba_hw.hw.sim_util import run_sim, stream_get

from .test_mac import fixed_params, random_inputs, run_engine, seed_pcm
from .test_norm import run_layer_norms

FN = Fmt(16, 10)
POOL = Fmt(23, 10)
LOGITS = Fmt(24, 19)


def run_head(frames: np.ndarray, logit_sets: list[np.ndarray], stall=0.5, seed=0):
    """frames (T, d) of final-norm outputs; then one result per logit vector (in order)."""
    T, d = frames.shape
    nc = len(logit_sets[0])
    dut = Head(d=d, fn_fmt=FN, pool_fmt=POOL, logits_fmt=LOGITS, n_classes=nc)
    pools, results = [], []
    rng = random.Random(seed)

    async def tb(ctx):
        for t in range(T):
            ctx.set(dut.first, t == 0)
            for i in range(d):
                ctx.set(dut.fn.valid, 1)
                ctx.set(dut.fn.payload, {"index": i, "value": int(frames[t, i]), "last": i == d - 1})
                await ctx.tick()
                ctx.set(dut.fn.valid, 0)
                if rng.random() < 0.3:
                    await ctx.tick().repeat(rng.randint(1, 3))
            await ctx.tick().repeat(2)
            got = []
            for i in range(d):
                ctx.set(dut.pool_rd.addr, i)
                await ctx.tick()
                got.append(ctx.get(dut.pool_rd.data))
            pools.append(got)
        for logits in logit_sets:
            for o, v in enumerate(logits):
                ctx.set(dut.logit.valid, 1)
                ctx.set(dut.logit.payload, {"index": o, "value": int(v), "last": o == nc - 1})
                await ctx.tick()
                ctx.set(dut.logit.valid, 0)
                if rng.random() < 0.3:
                    await ctx.tick().repeat(rng.randint(1, 3))
            assert ctx.get(dut.busy) and ctx.get(dut.result.valid)
            if rng.random() < stall:
                await ctx.tick().repeat(rng.randint(1, 20))
            results.append(await stream_get(ctx, dut.result))
            await ctx.tick()
            assert not ctx.get(dut.busy)

    run_sim(dut, [tb])
    return np.array(pools), results


def test_head_sum_and_argmax():
    rng = np.random.default_rng(0)
    T, d, nc = 7, 16, 12
    frames = random_inputs(FN, (T, d), rng)
    frames[:, 0] = FN.max_int
    frames[:, 1] = FN.min_int
    sets = [rng.integers(LOGITS.min_int, LOGITS.max_int + 1, nc) for _ in range(3)]
    sets.append(np.full(nc, -5))                       # all equal: index 0
    tie = rng.integers(-1000, 1000, nc)
    tie[3] = tie[9] = 5000                             # first maximum wins
    sets.append(tie)
    sets.append(np.r_[np.full(nc - 1, LOGITS.min_int), LOGITS.max_int])
    pools, results = run_head(frames, sets)
    np.testing.assert_array_equal(pools, np.cumsum(frames, axis=0))
    for s, r in zip(sets, results):
        assert r["logits"] == [int(v) for v in s]
        assert r["index"] == int(np.argmax(s))


def test_final_norm_pool_classifier_real():
    """The head's chain on a real clip's last block output: final LN (NormUnit), Σ, classifier
    (MAC engine) and argmax equal the fixed model's final_norm, pooled and logits."""
    p = fixed_params()
    from nanomamba_hw.fixed.model import run
    pcm = seed_pcm("go")[:1280]
    st = run(p, pcm, trace=True).stages
    x = st[f"block{len(p.blocks) - 1}_out"][0]            # (T, d)
    L = len(p.blocks)
    sets = [b.ln for b in p.blocks] + [p.final_norm]
    got, _ = run_layer_norms(sets, [(L, x[t]) for t in range(x.shape[0])], p.formats["resid"])
    fn = np.array(got)
    np.testing.assert_array_equal(fn, st["final_norm"][0])
    pools, _ = run_head(fn, [np.zeros(p.config.n_classes, dtype=np.int64)], stall=0)
    np.testing.assert_array_equal(pools[-1], st["pooled"][0])
    # classifier on the engine, from the pooled sums
    (logits,), _ = run_engine([p.classifier], [(0, pools[-1])])
    np.testing.assert_array_equal(logits, st["logits"][0])
    _, res = run_head(fn[:1], [logits], stall=0)
    assert res[0]["index"] == int(np.argmax(st["logits"][0]))
