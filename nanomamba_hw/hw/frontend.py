"""Front ends after the mel filterbank, as passes of the spectral engine: log-mel (here) and
DualPCEN (:mod:`nanomamba_hw.hw.pcen`).

:class:`LogMelPass` — ``fixed.frontend.log_mel`` bit for bit:
``feat = sat(round(LOG2((mel << 14) + 11, 30) · LN2 / 2**22))`` in ``FEAT_FMTS["logmel"]``
(s16.10). After a frame's bins, the 40 mel values are read from the engine's RAM, one band
every 2 cycles: the shared function unit takes the log2 (``(mel << 14) + 11`` is a
concatenation: 11 < 2¹⁴), the shared multiplier forms ``l2·LN2 + 2²¹`` and the feature goes
into the feature buffer beside the band's SNR value (read-modify-write). 40 bands in 87
cycles (``schedule_cycles``).

:func:`feature_code` decides how the feature buffer stores a front end's features: log-mel
features lie in ``[log_mel(0), log_mel(max)]`` (the function is monotone), 27.4k codes, so
15 bits with an offset hold them; DualPCEN features are ≥ 0 (see :func:`pcen_nonnegative`).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Signal

from ..fixed import frontend as ffe
from ..fixed import funcs as F
from ..fixed.mel import MEL_FMT
from ..fixed.ops import rshift_round
from .common import delay_taps
from .featbuf import FeatCode
from .funcs import FuncOp
from .mac import GMUL_LATENCY, clamp

__all__ = ["LogMelPass", "feature_code", "pcen_nonnegative"]


def pcen_nonnegative(fe: ffe.FrontendParams) -> bool:
    """True when every DualPCEN feature of ``fe`` is ≥ 0 for any input, so 15 bits store it.

    Each expert's output is ``sat(pw − δ^r)`` with ``pw = EXP2(round(r·LOG2(v)), POW_FMT)``,
    ``v = sat(EXP2(lg) + δ) ≥ δ`` and ``δ^r`` the same formula on δ: LOG2 and EXP2 are
    monotone (their tables increase), ``r ≥ 0``, the two formats share the binary point and
    POW_FMT saturates higher, so ``pw ≥ δ^r``. The gate is in [0, 1], so the mix of two
    non-negative experts is non-negative, and so is its rounding. Checked here: the tables,
    the formats, and that ``delta_r`` is what the formula gives (it is stored in the artefact).
    """
    if fe.kind != "dualpcen":
        return False
    if not (np.all(np.diff(F.LOG2.table) > 0) and np.all(np.diff(F.EXP2.table) > 0)):
        return False
    if ffe.DELTA_FMT.frac != ffe.GAIN_FMT.frac or ffe.POW_FMT.frac != ffe.PCEN_FMT.frac:
        return False
    if ffe.POW_FMT.max_int < ffe.PCEN_FMT.max_int:
        return False
    g = ffe.GATE_TABLE.table
    if g.min() < 0 or g.max() > ffe.ONE_SF:
        return False
    for ex in (fe.stat, fe.nonstat):
        if np.any(ex.delta <= 0) or np.any(ex.r < 0):
            return False
        dr = F.EXP2(rshift_round(ex.r * F.LOG2(ex.delta, ffe.DELTA_FMT.frac),
                                 ffe.PCEN_COEF_FMT.frac), ffe.PCEN_FMT)
        if not np.array_equal(dr, ex.delta_r) or np.any(dr < 0):
            return False
    return True


def feature_code(fe: ffe.FrontendParams) -> FeatCode:
    """How the feature buffer stores this front end's features (15 bits when possible)."""
    fmt = ffe.FEAT_FMTS[fe.kind]
    if fe.kind == "logmel":
        lo, hi = (int(v) for v in ffe.log_mel(np.array([0, MEL_FMT.max_int])))
        return FeatCode.for_range(lo, hi, fmt)
    if pcen_nonnegative(fe):
        return FeatCode.for_range(0, fmt.max_int, fmt)
    return FeatCode.full(fmt)


class LogMelPass:
    """The log-mel pass of the engine ``eng``: ``run`` (held) → ``done``."""

    OPS = {"log2_logmel": FuncOp.log2(MEL_FMT.frac + ffe.LOGMEL_SHIFT)}

    @staticmethod
    def ram_layout(fe) -> list[int]:
        """Words this front end keeps in the engine's RAM B (none)."""
        return []

    @staticmethod
    def schedule_cycles(n_mels: int) -> int:
        """Cycles of one pass (``run`` high up to and including ``done``): a band issued every
        2 cycles, the last one's feature written 8 cycles after its issue (RAM B read 1, FU
        log2 ``LAT_LP`` = 5, GMUL 2), ``done`` the cycle after: 2·(n − 1) + 8 + 2."""
        return 2 * (n_mels - 1) + 6 + GMUL_LATENCY + 2

    def __init__(self, eng):
        m = eng.m
        self.run = Signal(name="logmel_run")
        self.done = Signal(name="logmel_done")
        n = eng.n_mels
        fmt = ffe.FEAT_FMTS["logmel"]
        if ffe.LOGMEL_EPS >= 1 << ffe.LOGMEL_SHIFT:
            raise ValueError("log-mel epsilon must fit below the shift")
        bm = Signal(range(n + 1))
        ph = Signal()
        issue = Signal()
        m.d.comb += issue.eq(self.run & (bm < n) & ~ph)
        with m.If(self.run):
            m.d.sync += ph.eq(~ph)
        with m.If(issue):
            m.d.sync += bm.eq(bm + 1)
            m.d.comb += eng.rb.addr.eq(eng.MEL_BASE + bm)
        with m.If(~self.run):
            m.d.sync += [bm.eq(0), ph.eq(0)]
        wr = 6 + GMUL_LATENCY                   # the feature is written at v[wr]
        v = delay_taps(m, issue, wr, "lm_v")
        b_d = delay_taps(m, bm, wr, "lm_m")
        mel = eng.rb.data[:MEL_FMT.bits]
        with m.If(v[1]):
            eng.fu_issue("log2_logmel", Cat(Const(ffe.LOGMEL_EPS, ffe.LOGMEL_SHIFT), mel))
        sh = F.LOG_FRAC + ffe.LN2_FMT.frac - fmt.frac
        fb = eng.fb
        with m.If(v[6]):
            eng.gmul(eng.fu.o_lp, ffe.LN2, 1 << (sh - 1))
        with m.If(v[wr - 1]):                   # the word whose SNR half the write keeps
            m.d.comb += [fb.re.eq(1), fb.addr.eq(eng.fbase + b_d[wr - 1])]
        val = eng.g_p[sh:].as_signed()          # a slice is unsigned: keep the sign
        feat = Signal(fmt.bits)
        m.d.comb += feat.eq(clamp(m, val, fmt.min_int, fmt.max_int))
        with m.If(v[wr]):
            eng.write_feature(eng.fbase + b_d[wr], feat.as_signed())
        m.d.comb += self.done.eq(self.run & (bm == n) & ~Cat(*v[1:]).any())


def make_frontend(eng):
    """The front-end pass of the engine's parameters."""
    from .pcen import DualPCENPass
    kind = eng.params.frontend.kind
    if kind == "logmel":
        return LogMelPass(eng)
    if kind == "dualpcen":
        return DualPCENPass(eng)
    raise ValueError(f"unknown front end {kind!r}")


def frontend_class(kind: str):
    from .pcen import DualPCENPass
    return {"logmel": LogMelPass, "dualpcen": DualPCENPass}[kind]
