"""The SA-SSM block (``fixed.block.run_block``, sub-steps 1–12) for any shape and any number of
layers, one set of hardware sequenced over the layers.

A frame of one layer is a fixed sequence of jobs on the back end's shared units (the
sequencer in :mod:`~nanomamba_hw.hw.backend` issues them, :func:`block_steps` lists them):

====  ================================  ===========================================  ========
step  work                              unit                                         sub-step
====  ================================  ===========================================  ========
LN    u = LayerNorm(x)                  NormUnit (x_buf → u_buf)                      1
IN    [xb; z] = in_proj(u)              MAC engine → xb to the conv history,         2, 12a
                                        z → SiLU table → sz
CONV  c = conv(history) ; xc = SiLU(c)  MAC engine (depthwise, lane 0) → SiLU → xc    3, 4
XP    [dt_raw; B; C] = x_proj(xc)       MAC engine → registers                        5
SP    q = snr_proj(snr)                 MAC engine (beside the scan before) → q0, σ → G  5
DT    Δ = softplus(dt_proj(dtin)) + fl  MAC engine (one input: dtin, a register)      6, 7
SCAN  B̃, dbx, dA, h, y, yz              :class:`ScanUnit` (3 multipliers + exp2)      8–12
OUT   x += out_proj(yz)                 MAC engine, residual add in the back end      12
====  ================================  ===========================================  ========

The per-frame constants (Δ floor and ε from the band-mean SNR and the calibration registers,
sub-step 6) are computed once per frame by the :class:`ScanUnit` (``FRAME`` command).

:class:`SSMBlock` holds everything block-specific: the conv history (3 frames × E per layer,
a ring indexed by t mod 3, read as zeros before the clip's first frames), the SSM state h
(E × N per layer, in the ScanUnit), the per-frame buffers (sz, xc, Δ, yz: E each; dt_raw, B, C,
q0, G: registers), the four activation tables (one ``PWLMultiUnit``, from
``fixed.block.activation_tables``) and the write-back of the MAC engine's block results.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import (
    Array,
    Cat,
    Const,
    EnableInserter,
    Module,
    Mux,
    Signal,
    Value,
    signed,
    unsigned,
)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed.block import A_BITS, MEAN_FRAC, BlockParams, activation_tables
from ..fixed.formats import (
    ALPHA_FMT,
    D_FMT,
    DA_FMT,
    GATE_FMT,
    GB_FMT,
    REG_FMT,
    SNR_FMT,
    Formats,
)
from ..fixed.funcs import LOG_FRAC
from .common import OrMux, rom_init, shape_of
from .funcs import PWLMultiUnit
from .mac import MUL_LATENCY, MUL_P_BITS, clamp, const_mul, delay, mul_signature, rshift_round_c
from .norm import EXP2_IN_WIDTH, exp2_port

REG_NAMES = ("delta_floor_min", "delta_floor_max", "eps_min", "eps_max", "bgate_floor")
REG_LAYOUT = data.StructLayout({k: unsigned(REG_FMT.bits) for k in REG_NAMES})

# MAC job kinds of a block layer (the sequencer tells the block which one is running)
K_NONE, K_IN, K_CONV, K_XP, K_SP, K_DT, K_OUT = range(7)
BLOCK_LAYERS = ("in_proj", "conv", "x_proj", "snr_proj", "dt_proj", "out_proj")
KIND_OF = {"in_proj": K_IN, "conv": K_CONV, "x_proj": K_XP, "snr_proj": K_SP,
           "dt_proj": K_DT, "out_proj": K_OUT}


def _requant_c(x, from_frac: int, to_frac: int):
    """``fixed.ops.requant`` into a 40-bit format (whose saturation never acts here)."""
    return rshift_round_c(x, from_frac - to_frac)


class ScanUnit(wiring.Component):
    """Sub-steps 6 and 8–12 of every layer: per-frame constants, then the selective scan.

    ``cmd`` ``FRAME``: from ``snr_sum`` (Σ of the frame's 40 SNR values) and ``regs``:
    ``floor_delta`` (the Δ floor in Δ's format) and ε (internal), ~8 cycles.

    ``cmd`` ``SCAN`` (``layer``): B̃[n] from B, G (N + 9 cycles), then one (k, n) element every
    two cycles through a modulo-scheduled pipeline on three multiplier ports::

        +1  P1 = Δ[k]·B̃[n]  (port 0)      P3 = |A|[k,n]·Δ[k]  (port 1)
        +4  P2 = dbx·xc[k]  (port 0)      exp2(−P3 ≫ s)       (shared Exp2Unit)
        +8  P4 = dA·h[k,n]  (port 1)
        +11 P5 = h'·C[n] + (P2 of n − 1, or y's rounding constant at n = 0)   (port 2, odd
            cycles: Σ_n h'·C[n] accumulates on the port, no fabric adder)
        +12 per channel (port 2, even cycles): D[k]·xc[k] at n = 0, y[k−1]·sz[k−1] at n = 1

    h is read at +0 and written at +11 (the same (k, n) is touched once per frame). Two dummy
    elements after the last channel flush the final y·sz product. yz[k] leaves on ``o``.
    ``2·(E·N + 2) + N + 30`` cycles per layer. Needs N ≥ 2.

    The ``mul`` operands leave registered (as the NormUnit's): a ``MulBank`` with
    ``operands_registered=True`` serves them.
    """

    FRAME, SCAN = 0, 1
    N_MUL = 3

    def __init__(self, blocks: Sequence[BlockParams], formats: Formats, *, n_bands: int = 40):
        self.blocks, self.f = list(blocks), formats
        self.E, self.N, self.L = blocks[0].d_inner, blocks[0].d_state, len(blocks)
        if self.N < 2:
            raise ValueError("the scan schedule needs d_state >= 2")
        self.n_bands = n_bands
        f = formats
        self.snr_sum_width = (n_bands * SNR_FMT.max_int).bit_length()
        self.mean_c = round(2 ** MEAN_FRAC / n_bands)
        for b in self.blocks:
            if b.a_frac + f["delta"].frac - LOG_FRAC < 0:
                raise ValueError("|A|·Δ finer than the log domain: unsupported")
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"op": 1, "layer": range(max(2, self.L))}))),
            "busy": Out(1),
            "regs": In(REG_LAYOUT),
            "snr_sum": In(unsigned(self.snr_sum_width)),
            "first_frame": In(1),
            "floor_delta": Out(signed(f["delta"].bits + 2)),
            "B": In(data.ArrayLayout(shape_of(f["xproj"]), self.N)),
            "C": In(data.ArrayLayout(shape_of(f["xproj"]), self.N)),
            "G": In(data.ArrayLayout(shape_of(GATE_FMT), self.N)),
            "rd_delta": Out(wiring.Signature({"addr": Out(range(self.E)), "data": In(shape_of(f["delta"]))})),
            "rd_xc": Out(wiring.Signature({"addr": Out(range(self.E)), "data": In(shape_of(f["xc"]))})),
            "rd_sz": Out(wiring.Signature({"addr": Out(range(self.E)), "data": In(shape_of(f["siluz"]))})),
            "o": Out(stream.Signature(data.StructLayout({
                "index": range(self.E), "value": shape_of(f["yz"]), "last": 1}), always_ready=True)),
            "mul": Out(mul_signature(self.N_MUL)),
            "exp2": Out(exp2_port()),
        })

    def elaborate(self, platform):
        m = Module()
        f = self.f
        E, N, L = self.E, self.N, self.L
        A_, B_, P_ = self.mul.a, self.mul.b, self.mul.p

        def pwidth(*shapes):
            return sum(sh.width + (0 if sh.signed else 1) for sh in shapes)

        def rc(sh, addend=None):
            """The C operand that makes the DSP's P = a·b + addend·2**sh + 2**(sh−1), so that
            P ≫ sh (wired) is round(a·b / 2**sh) + addend exactly (floor((x + k·2**s)/2**s)
            = floor(x/2**s) + k for an integer k): no fabric adder."""
            half = (1 << sh) >> 1
            if addend is None:
                return Const(half, max(1, sh) + 1)
            v = Value.cast(addend)
            ext = v[-1] if v.shape().signed else Const(0, 1)
            return Cat(Const(half, sh), v, ext).as_signed() if sh else Cat(v, ext).as_signed()

        def rp(k, sh, w):
            """P ≫ sh of port k, the w bits that hold the result (signed)."""
            return P_[k][sh:min(sh + w, MUL_P_BITS)].as_signed()

        C_ = self.mul.c
        # the three ports' operands from every step below: AND-OR of registered terms (see
        # OrMux), the registers outside the unit's clock enable
        outer = Module()
        ports = [OrMux(m, f"mul{k}", registered=True, regs_in=outer, a=A_[k], b=B_[k], c=C_[k])
                 for k in range(self.N_MUL)]
        df, xf, dbf, hf, yf = f["delta"].frac, f["xproj"].frac, f["dbx"].frac, f["h"].frac, f["y"].frac
        xcf, szf, yzf = f["xc"].frac, f["siluz"].frac, f["yz"].frac
        m.d.comb += self.exp2.o.ready.eq(1)
        layer = Signal(range(max(2, L)))
        regs = self.regs

        # ---------------- per-frame constants (sub-step 6)
        # s̄ = round(Σsnr·c / 2**22); floor = Δmin + round((Δmax − Δmin)·s̄ / 2**15);
        # ε = εmax − round((εmax − εmin)·s̄ / 2**15) = (εmax·2**15 + 2**14 − 1 + (εmin − εmax)·s̄) ≫ 15
        s_mean = Signal(unsigned(SNR_FMT.bits + 2))
        eps_x = Signal(signed(f["dbx"].bits + 2))
        fphase = Signal(range(8))
        dfd = Signal(signed(REG_FMT.bits + 1))
        edn = Signal(signed(REG_FMT.bits + 1))
        m.d.comb += [dfd.eq(regs.delta_floor_max - regs.delta_floor_min),
                     edn.eq(regs.eps_min - regs.eps_max)]
        sf = SNR_FMT.frac
        with m.If(fphase == 1):
            ports[0].drive(a=self.snr_sum, b=self.mean_c, c=rc(MEAN_FRAC))
        with m.If(fphase == 3):
            m.d.sync += s_mean.eq(P_[0][MEAN_FRAC:MEAN_FRAC + len(s_mean)])
        with m.If(fphase == 4):
            ports[0].drive(a=dfd, b=s_mean, c=rc(sf, regs.delta_floor_min))
            ports[1].drive(a=edn, b=s_mean,
                           c=Cat(Const((1 << (sf - 1)) - 1, sf), regs.eps_max, Const(0, 1)).as_signed())
        with m.If(fphase == 6):
            floor = rp(0, sf, REG_FMT.bits + 3)
            eps = rp(1, sf, REG_FMT.bits + 3)
            m.d.sync += [self.floor_delta.eq(_requant_c(floor, REG_FMT.frac, df)),
                         eps_x.eq(_requant_c(eps, REG_FMT.frac, dbf))]

        # ---------------- prologue: B̃[n] (sub-step 8)
        bgf = Signal(unsigned(GATE_FMT.bits + 1))
        m.d.comb += bgf.eq(rshift_round_c(regs.bgate_floor, REG_FMT.frac - GATE_FMT.frac))
        alpha = Array(Const(b.alpha, signed(ALPHA_FMT.bits)) for b in self.blocks)[layer]
        one_g, one_a = 1 << GATE_FMT.frac, 1 << ALPHA_FMT.frac
        oma = Array(Const(one_a - b.alpha, signed(ALPHA_FMT.bits + 1)) for b in self.blocks)[layer]
        pro_go = Signal()
        pro_n = Signal(range(N + 1))
        pv0 = Signal()
        m.d.comb += pv0.eq(pro_go)
        Gv = Array(self.G)[pro_n]
        with m.If(pv0):
            ports[0].drive(a=Gv, b=one_g - bgf, c=rc(GATE_FMT.frac, bgf))
        pv2 = delay(m, pv0, MUL_LATENCY, "pv")
        pn2 = delay(m, pro_n, MUL_LATENCY, "pn")
        g2 = Signal(unsigned(GATE_FMT.bits + 2))
        pv3, pn3 = delay(m, pv2, 1, "pv3"), delay(m, pn2, 1, "pn3")
        m.d.sync += g2.eq(P_[0][GATE_FMT.frac:GATE_FMT.frac + len(g2)])
        s_gb = GATE_FMT.frac + ALPHA_FMT.frac - GB_FMT.frac
        with m.If(pv3):
            ports[1].drive(a=g2, b=alpha, c=rc(s_gb, oma))
        pv5, pn5 = delay(m, pv3, MUL_LATENCY, "pv5"), delay(m, pn3, MUL_LATENCY, "pn5")
        gb = Signal(shape_of(GB_FMT))
        m.d.sync += gb.eq(clamp(m, rp(1, s_gb, pwidth(g2.shape(), shape_of(ALPHA_FMT)) + 2),
                                GB_FMT.min_int, GB_FMT.max_int))
        pv6, pn6 = delay(m, pv5, 1, "pv6"), delay(m, pn5, 1, "pn6")
        with m.If(pv6):
            ports[2].drive(a=gb, b=Array(self.B)[pn6], c=rc(GB_FMT.frac))
        pv8, pn8 = delay(m, pv6, MUL_LATENCY, "pv8"), delay(m, pn6, MUL_LATENCY, "pn8")
        Bg = [Signal(shape_of(f["xproj"]), name=f"bg{n}") for n in range(N)]
        with m.If(pv8):
            val = clamp(m, rp(2, GB_FMT.frac, pwidth(shape_of(GB_FMT), shape_of(f["xproj"])) + 1),
                        f["xproj"].min_int, f["xproj"].max_int)
            with m.Switch(pn8):
                for n in range(N):
                    with m.Case(n):
                        m.d.sync += Bg[n].eq(val)

        # ---------------- the scan (sub-steps 9–12)
        # −|A| in the ROM: P = −|A|·Δ, and −round(x / 2**s) = (−x + 2**(s−1) − 1) ≫ s
        # −|A| (L·E·N words) and D (L·E words) share one ROM with two read ports: one block
        # RAM instead of two ROMs in LUTs (both ports are read every cycle of the scan)
        a_shape = signed(A_BITS + 1)                  # −|A|, |A| unsigned A_BITS in the model
        ad_shape = signed(max(a_shape.width, D_FMT.bits))
        d_base = L * E * N
        ad_rom = Memory(shape=ad_shape, depth=d_base + L * E, attrs={"ram_style": "block"},
                        init=rom_init([-int(v) for b in self.blocks for v in b.A.reshape(-1)]
                                      + [int(v) for b in self.blocks for v in b.D], ad_shape))
        h_ram = Memory(shape=shape_of(f["h"]), depth=max(2, L * E * N), init=[])
        m.submodules.ad_rom, m.submodules.h_ram = ad_rom, h_ram
        a_rd, d_rd, h_rd, h_wr = ad_rom.read_port(), ad_rom.read_port(), h_ram.read_port(), h_ram.write_port()

        go = Signal()                      # issue an element this cycle
        k = Signal(range(E + 2))
        n = Signal(range(N))
        real = Signal()
        m.d.comb += real.eq(k < E)
        kn = Signal(range(max(2, L * E * N + 2 * N)))     # flat state address
        m.d.comb += [self.rd_delta.addr.eq(k), self.rd_xc.addr.eq(k),
                     self.rd_sz.addr.eq(Mux(n == 1, k - 1, k)),
                     a_rd.addr.eq(kn), h_rd.addr.eq(kn), d_rd.addr.eq(d_base + const_mul(layer, E) + k)]
        # +1: operands
        v1 = delay(m, go & real, 1, "v1")
        s1 = delay(m, go, 1, "s1")                 # element slot (real or dummy)
        n1, k1 = delay(m, n, 1, "n1"), delay(m, k, 1, "k1")
        kn1 = delay(m, kn, 1, "kn1")
        dl1 = self.rd_delta.data
        h_old = Mux(self.first_frame, 0, h_rd.data)
        s_dbx = df + xf - dbf
        shifts = sorted({b.a_frac + df - LOG_FRAC for b in self.blocks})
        if min(shifts) < 1:
            raise ValueError("|A|·Δ needs a rounding shift >= 1")
        ya_c = Array(Const((1 << (b.a_frac + df - LOG_FRAC - 1)) - 1, 32) for b in self.blocks)[layer]
        with m.If(v1):
            ports[0].drive(a=Array(Bg)[n1], b=dl1, c=rc(s_dbx, eps_x))
            ports[1].drive(a=a_rd.data, b=dl1, c=ya_c)
        # carry operands forward
        xc_c = [self.rd_xc.data]
        for s_ in range(11):
            r = Signal(shape_of(f["xc"]), name=f"xc_p{s_ + 2}")
            m.d.sync += r.eq(xc_c[-1])
            xc_c.append(r)                        # xc_c[j] valid at +1+j
        # the first stage without a reset, so its flip-flops' reset input takes first_frame
        # (the later stages keep theirs: a reset-less chain would become shift-register LUTs)
        h_c = delay(m, delay(m, h_old, 1, "hold0", reset_less=True), 6, "hold",
                    reset_less=False)                                           # at +8
        sz12 = delay(m, self.rd_sz.data, 11, "sz")
        D12 = delay(m, d_rd.data[:D_FMT.bits].as_signed(), 11, "D")
        # +3: dbx = sat(round(Δ·B̃) + ε), ya = −round(|A|·Δ / 2**s)
        v3, n3, kn3 = delay(m, v1, 2, "v3"), delay(m, n1, 2, "n3"), delay(m, kn1, 2, "kn3")
        dbx = Signal(shape_of(f["dbx"]))
        ya = Signal(signed(EXP2_IN_WIDTH))
        ya_w = pwidth(a_shape, shape_of(f["delta"]))
        if len(shifts) == 1:
            ya_v = rp(1, shifts[0], ya_w)
        else:
            pick = Array(Const(shifts.index(b.a_frac + df - LOG_FRAC), range(len(shifts)))
                         for b in self.blocks)[layer]
            ya_v = Array(rp(1, sv, ya_w) for sv in shifts)[pick]
        m.d.sync += [dbx.eq(clamp(m, rp(0, s_dbx, max(pwidth(shape_of(f["xproj"]), shape_of(f["delta"])) - s_dbx,
                                                      len(eps_x)) + 1),
                                  f["dbx"].min_int, f["dbx"].max_int)),
                     ya.eq(ya_v)]
        v4, n4, kn4 = delay(m, v3, 1, "v4"), delay(m, n3, 1, "n4"), delay(m, kn3, 1, "kn4")
        s_inc = dbf + xcf - hf
        with m.If(v4):
            ports[0].drive(a=dbx, b=xc_c[3], c=rc(s_inc))
            m.d.comb += [self.exp2.i.valid.eq(1), self.exp2.i.payload.eq(ya)]
        # +6: inc = round(dbx·xc)
        inc = Signal(signed(pwidth(shape_of(f["dbx"]), shape_of(f["xc"])) - s_inc + 1))
        m.d.sync += inc.eq(rp(0, s_inc, len(inc)))
        inc8 = delay(m, inc, 1, "inc")            # +7 → +8
        # +8: h' = sat(round(dA·h) + inc): inc on the C operand
        v8, n8, kn8 = delay(m, v4, 4, "v8"), delay(m, n4, 4, "n8"), delay(m, kn4, 4, "kn8")
        with m.If(v8):
            ports[1].drive(a=h_c, b=self.exp2.o.payload, c=rc(DA_FMT.frac, inc8))
        v10, n10, kn10 = delay(m, v8, 2, "v10"), delay(m, n8, 2, "n10"), delay(m, kn8, 2, "kn10")
        h_new = Signal(shape_of(f["h"]))
        h_w = max(pwidth(shape_of(f["h"]), shape_of(DA_FMT)) - DA_FMT.frac, len(inc)) + 1
        m.d.sync += h_new.eq(clamp(m, rp(1, DA_FMT.frac, h_w), f["h"].min_int, f["h"].max_int))
        v11, n11, kn11 = delay(m, v10, 1, "v11"), delay(m, n10, 1, "n11"), delay(m, kn10, 1, "kn11")
        m.d.comb += [h_wr.addr.eq(kn11), h_wr.data.eq(h_new), h_wr.en.eq(v11)]
        # Σ_n h'·C[n] accumulates on port 2 itself: element n's C operand is P2, which holds
        # element n − 1's result (issued 2 cycles before; the slot product between lands one
        # cycle later), and n = 0 starts from the rounding constant of y's shift
        s_y = hf + xf - yf
        hc_w = pwidth(shape_of(f["h"]), shape_of(f["xproj"]))
        acc_w = hc_w + max(1, (N - 1).bit_length()) + 1      # Σ of N products, signed
        with m.If(v11):
            ports[2].drive(a=h_new, b=Array(self.C)[n11])
        with m.If(v11 & (n11 == 0)):
            ports[2].drive(c=rc(s_y))
        with m.If(v11 & (n11 != 0)):
            ports[2].drive(c=P_[2][:acc_w].as_signed())
        # +12: the per-channel slot: D·xc (skip, rounded on the DSP) at n = 0, y·sz (yz) at n = 1
        s12 = delay(m, s1, 11, "s12")
        n12, k12 = delay(m, n1, 11, "n12"), delay(m, k1, 11, "k12")
        y = Signal(shape_of(f["y"]))
        s_skip = D_FMT.frac + xcf - yf
        s_yz = yf + szf - yzf
        with m.If(s12 & (n12 == 0)):
            ports[2].drive(a=xc_c[11], b=D12, c=rc(s_skip))
        with m.If(s12 & (n12 == 1) & (k12 != 0)):
            ports[2].drive(a=y, b=sz12, c=rc(s_yz))
        # +13: P2 = Σ_n h·C + 2**(s_y−1) at the last n: y
        v13, n13 = delay(m, v11, 2, "v13"), delay(m, n11, 2, "n13")
        skip = Signal(signed(pwidth(shape_of(f["xc"]), shape_of(D_FMT)) - s_skip + 1))
        with m.If(v13 & (n13 == N - 1)):
            m.d.sync += y.eq(clamp(m, rp(2, s_y, acc_w - s_y + 1) + skip,
                                   f["y"].min_int, f["y"].max_int))
        # +14: slot products
        s14, n14, k14 = delay(m, s12, 2, "s14"), delay(m, n12, 2, "n14"), delay(m, k12, 2, "k14")
        with m.If(s14 & (n14 == 0)):
            m.d.sync += skip.eq(rp(2, s_skip, len(skip)))
        o_v = Signal()
        o_i = Signal(range(E))
        o_val = Signal(shape_of(f["yz"]))
        yz_w = pwidth(shape_of(f["y"]), shape_of(f["siluz"])) - s_yz + 1
        m.d.sync += [o_v.eq(s14 & (n14 == 1) & (k14 != 0)), o_i.eq(k14 - 1),
                     o_val.eq(clamp(m, rp(2, s_yz, yz_w), f["yz"].min_int, f["yz"].max_int))]
        m.d.comb += [self.o.valid.eq(o_v), self.o.payload.index.eq(o_i),
                     self.o.payload.value.eq(o_val), self.o.payload.last.eq(o_i == E - 1)]
        # probes for the tests: (valid, flat state index or channel, value)
        k13 = delay(m, k1, 12, "k13")
        y_v = delay(m, v13 & (n13 == N - 1), 1, "y_v")
        y_k = delay(m, k13, 1, "y_k")
        self.probes = {"dbx": (v4, kn4, dbx), "dA": (v8, kn8, self.exp2.o.payload),
                       "h": (v11, kn11, h_new), "y": (y_v, y_k, y)}
        self.state = {"Bg": Bg, "eps_x": eps_x, "h": h_ram}

        for port in ports:
            port.emit()

        # ---------------- control
        cnt = Signal(range(N + 16))
        phase = Signal()
        m.d.comb += self.cmd.ready.eq(~self.busy)
        with m.FSM():
            with m.State("IDLE"), m.If(self.cmd.valid):
                m.d.sync += [layer.eq(self.cmd.payload.layer), self.busy.eq(1), cnt.eq(0)]
                with m.If(self.cmd.payload.op == self.FRAME):
                    m.d.sync += fphase.eq(1)
                    m.next = "FRAME"
                with m.Else():
                    m.d.sync += pro_n.eq(0)
                    m.next = "PROLOGUE"
            with m.State("FRAME"):
                m.d.sync += fphase.eq(fphase + 1)
                with m.If(fphase == 6):
                    m.d.sync += [fphase.eq(0), self.busy.eq(0)]
                    m.next = "IDLE"
            with m.State("PROLOGUE"):
                with m.If(pro_n < N):
                    m.d.comb += pro_go.eq(1)
                    m.d.sync += pro_n.eq(pro_n + 1)
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == 3 * MUL_LATENCY + 3):
                        m.d.sync += [k.eq(0), n.eq(0), phase.eq(0), kn.eq(const_mul(layer, E * N))]
                        m.next = "SCAN"
            with m.State("SCAN"):
                m.d.comb += go.eq(~phase)
                m.d.sync += phase.eq(~phase)
                with m.If(phase):
                    m.d.sync += kn.eq(kn + 1)
                    with m.If(n == N - 1):
                        m.d.sync += [n.eq(0), k.eq(k + 1)]
                    with m.Else():
                        m.d.sync += n.eq(n + 1)
                    with m.If((k == E) & (n == 1)):
                        m.next = "DRAIN"
            with m.State("DRAIN"), m.If(self.o.valid & self.o.payload.last):
                m.d.sync += self.busy.eq(0)
                m.next = "IDLE"
        outer.submodules.gated = EnableInserter({"sync": self.busy | self.cmd.valid})(m)
        return outer


def block_steps(layer: int, job_of: dict[str, int]) -> list[tuple]:
    """The sequencer steps of one layer's frame: ``("ln", set)``, ``("mac", job, kind)``,
    ``("scan", layer)``. ``job_of`` maps a layer name to its MAC-engine job index.

    snr_proj is not among them: it depends only on the frame's SNR, so the back end runs it on
    the MAC engine while the scan of the layer before runs (see :mod:`.backend`)."""
    j = lambda name: job_of[f"block{layer}.{name}"]
    return [
        ("ln", layer),
        ("mac", j("in_proj"), K_IN),
        ("mac", j("conv"), K_CONV),
        ("mac", j("x_proj"), K_XP),
        ("mac", j("dt_proj"), K_DT),
        ("scan", layer),
        ("mac", j("out_proj"), K_OUT),
    ]


class SSMBlock(wiring.Component):
    """Block buffers, tables, write-back of the block's MAC results and the :class:`ScanUnit`.

    - ``mac_o`` (the engine's results) with ``kind``/``layer`` (set by the sequencer while a
      block job runs): results of in_proj, conv, x_proj, snr_proj, dt_proj are written back
      (through the SiLU/σ/softplus tables where the model says so); ``wb_done`` pulses when a
      job's last result is stored. out_proj results are the back end's (residual add).
    - ``mac_rd``: the engine's input reads for conv (history ring), x_proj (xc), dt_proj (dtin)
      and out_proj (yz), one cycle after the address.
    - ``slot`` (t mod 3) and ``frame_age`` (min(t, 2)): the history ring's write slot and how
      many past frames exist in this clip.
    - the :class:`ScanUnit` is ``scan_unit``: the back end drives its ``cmd`` and serves its
      ``mul`` and ``exp2`` ports directly.
    """

    def __init__(self, blocks: Sequence[BlockParams], formats: Formats, *, out_layout,
                 rd_o_width: int, rd_i_width: int, in_width: int = 24, n_bands: int = 40):
        self.blocks, self.f = list(blocks), formats
        self.E, self.N, self.L = blocks[0].d_inner, blocks[0].d_state, len(blocks)
        self.K = blocks[0].conv.w.shape[1]
        if self.K > 3:
            raise ValueError("the history ring holds 3 frames (d_conv <= 3)")
        self.tables = activation_tables(formats)
        self.scan_unit = ScanUnit(blocks, formats, n_bands=n_bands)
        super().__init__({
            "mac_o": In(stream.Signature(out_layout, always_ready=True)),
            "kind": In(range(8)),
            "layer": In(range(max(2, self.L))),
            "wb_done": Out(1),
            "mac_rd": In(wiring.Signature({"en": Out(1), "o": Out(rd_o_width), "i": Out(rd_i_width),
                                           "data": In(signed(in_width))})),
            "slot": In(range(3)),
            "frame_age": In(range(3)),
            "regs": In(REG_LAYOUT),
            "snr_sum": In(unsigned(self.scan_unit.snr_sum_width)),
        })

    def elaborate(self, platform):
        m = Module()
        f, E, N, L = self.f, self.E, self.N, self.L
        su = self.scan_unit
        outer = Module()            # the scan unit, outside this block's clock enable (its own
        outer.submodules.scan_unit = su     # enable implies this one's; see OrMux regs_in)
        m.d.comb += [su.regs.eq(self.regs), su.snr_sum.eq(self.snr_sum),
                     su.first_frame.eq(self.frame_age == 0)]

        names = list(self.tables)
        pwl = PWLMultiUnit(list(self.tables.values()))
        m.submodules.pwl = pwl
        m.d.comb += pwl.o.ready.eq(1)
        lat = PWLMultiUnit.latency

        # ---- buffers
        def mem(name, fmt, depth):
            mm = Memory(shape=shape_of(fmt), depth=max(2, depth), init=[])
            m.submodules[name] = mm
            return mm
        hist = mem("hist", f["inproj"], L * 3 * E)
        sz = mem("sz", f["siluz"], E)
        xc = mem("xc", f["xc"], E)
        dl = mem("delta", f["delta"], E)
        yz = mem("yz", f["yz"], E)
        hist_w, sz_w, xc_w, dl_w, yz_w = (hist.write_port(), sz.write_port(), xc.write_port(),
                                          dl.write_port(), yz.write_port())
        hist_r, xc_r, yz_r = hist.read_port(), xc.read_port(), yz.read_port()
        for mm, port in ((sz, su.rd_sz), (xc, su.rd_xc), (dl, su.rd_delta)):
            r = mm.read_port()
            m.d.comb += [r.addr.eq(port.addr), port.data.eq(r.data)]
        m.d.comb += [yz_w.addr.eq(su.o.payload.index), yz_w.data.eq(su.o.payload.value),
                     yz_w.en.eq(su.o.valid)]
        dt_raw = Signal(shape_of(f["xproj"]))
        q0 = Signal(shape_of(f["q"]))
        Bv = Signal(data.ArrayLayout(shape_of(f["xproj"]), N))
        Cv = Signal(data.ArrayLayout(shape_of(f["xproj"]), N))
        Gv = Signal(data.ArrayLayout(shape_of(self.tables["sigmoid"].out_fmt), N))
        m.d.comb += [su.B.eq(Bv), su.C.eq(Cv), su.G.eq(Gv)]
        dtin_f = f["dtin"]
        dtin = Signal(shape_of(dtin_f))
        m.d.sync += dtin.eq(clamp(m, _requant_c(dt_raw, f["xproj"].frac, dtin_f.frac)
                                  + _requant_c(q0, f["q"].frac, dtin_f.frac),
                                  dtin_f.min_int, dtin_f.max_int))

        # ---- write-back of MAC results
        o = self.mac_o
        kind = self.kind
        val, idx, last = o.payload.value, o.payload.index, o.payload.last
        direct_last = Signal()
        to_pwl = {name: Signal(name=f"to_{name}") for name in names}
        with m.If(o.valid), m.Switch(kind):
            with m.Case(K_IN):
                with m.If(idx < E):
                    m.d.comb += [hist_w.addr.eq(const_mul(self.layer, 3 * E)
                                                + const_mul(self.slot, E) + idx),
                                 hist_w.data.eq(val), hist_w.en.eq(1),
                                 direct_last.eq(last)]
                with m.Else():
                    m.d.comb += to_pwl["silu_z"].eq(1)
            with m.Case(K_CONV):
                m.d.comb += to_pwl["silu_conv"].eq(1)
            with m.Case(K_XP):
                m.d.comb += direct_last.eq(last)
                with m.If(idx == 0):
                    m.d.sync += dt_raw.eq(val)
                for n in range(N):
                    with m.If(idx == 1 + n):
                        m.d.sync += Bv[n].eq(val)
                    with m.If(idx == 1 + N + n):
                        m.d.sync += Cv[n].eq(val)
            with m.Case(K_SP):
                with m.If(idx == 0):
                    m.d.sync += q0.eq(val)
                    m.d.comb += direct_last.eq(last)
                with m.Else():
                    m.d.comb += to_pwl["sigmoid"].eq(1)
            with m.Case(K_DT):
                m.d.comb += to_pwl["softplus"].eq(1)
        pwl_any = Signal()
        sel = Signal(range(max(2, len(names))))
        for k, name in enumerate(names):
            with m.If(to_pwl[name]):
                m.d.comb += sel.eq(k)
        m.d.comb += [pwl_any.eq(Cat(*to_pwl.values()).any()),
                     pwl.i.valid.eq(pwl_any), pwl.i.payload.x.eq(val), pwl.i.payload.sel.eq(sel)]
        idx_d = delay(m, idx, lat, "wb_idx")
        sel_d = delay(m, sel, lat, "wb_sel")
        last_d = delay(m, pwl_any & last, lat, "wb_last")
        py = pwl.o.payload
        is_ = {name: pwl.o.valid & (sel_d == k) for k, name in enumerate(names)}
        m.d.comb += [sz_w.addr.eq(idx_d - E), sz_w.data.eq(py), sz_w.en.eq(is_["silu_z"])]
        m.d.comb += [xc_w.addr.eq(idx_d), xc_w.data.eq(py), xc_w.en.eq(is_["silu_conv"])]
        with m.If(is_["sigmoid"]):
            for n in range(N):
                with m.If(idx_d == 1 + n):
                    m.d.sync += Gv[n].eq(py)
        dfmt = f["delta"]
        m.d.comb += [dl_w.addr.eq(idx_d),
                     dl_w.data.eq(clamp(m, py + su.floor_delta, dfmt.min_int, dfmt.max_int)),
                     dl_w.en.eq(is_["softplus"])]
        m.d.comb += self.wb_done.eq(direct_last | last_d)
        self.state = {"hist": hist, "sz": sz, "xc": xc, "delta": dl, "yz": yz, "dt_raw": dt_raw,
                      "q0": q0, "B": Bv, "C": Cv, "G": Gv, "dtin": dtin}

        # ---- MAC input reads
        rd = self.mac_rd
        tap_ok = Signal()
        # tap j of channel o holds frame t − (K−1) + j: slot (t − K + 1 + j) mod 3
        rel = Signal(range(8))
        m.d.comb += rel.eq(self.slot + 3 - (self.K - 1) + rd.i)
        slot_r = Signal(range(3))
        m.d.comb += slot_r.eq(Mux(rel >= 6, rel - 6, Mux(rel >= 3, rel - 3, rel)))
        m.d.comb += [hist_r.addr.eq(const_mul(self.layer, 3 * E) + const_mul(slot_r, E) + rd.o),
                     xc_r.addr.eq(rd.i), yz_r.addr.eq(rd.i)]
        m.d.sync += tap_ok.eq(self.frame_age + rd.i >= self.K - 1)
        kind_d = delay(m, kind, 1, "rd_kind")
        with m.Switch(kind_d):
            with m.Case(K_CONV):
                m.d.comb += rd.data.eq(Mux(tap_ok, hist_r.data, 0))
            with m.Case(K_XP):
                m.d.comb += rd.data.eq(xc_r.data)
            with m.Case(K_DT):
                m.d.comb += rd.data.eq(dtin)
            with m.Case(K_OUT):
                m.d.comb += rd.data.eq(yz_r.data)
        # frozen unless a block job, a scan or its command is under way
        outer.submodules.gated = EnableInserter({"sync": (kind != K_NONE) | su.cmd.valid
                                                | su.busy})(m)
        return outer
