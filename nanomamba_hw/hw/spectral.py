"""The spectral half of the accelerator: STFT magnitudes in, a filled feature buffer out.

::

    i (|X|, 257/frame) ─► SpectralEngine ─► FeatureBuffer ── rd (back end)
                           bin pipeline: mel sums, SNR estimator   (hw/mel.py, hw/snr.py)
                           front-end pass: log-mel | DualPCEN       (hw/frontend.py, hw/pcen.py)

``i`` takes the STFT's magnitude frames (``frame_stream(unsigned(24))``, 257 bins per frame,
``n_frames`` frames per clip); ``rd`` is the :class:`~nanomamba_hw.hw.featbuf.FeatureBuffer`
read interface (:func:`~nanomamba_hw.hw.featbuf.FeatureReadSignature`), forwarded unchanged.
``clip_start`` (strobe) abandons the clip in progress: the engine is reset (``ResetInserter``)
and starts over at frame 0 (what is left of a frame being delivered is dropped up to the next
``first``); complete clips in the buffer are kept. ``i.ready`` is low in the strobe's cycle.

The engine (:class:`SpectralEngine`) is one sequenced datapath built around shared units,
each used by one stage at a time:

- **FU** — one :class:`~nanomamba_hw.hw.funcs.FuncUnit` for every log2, exp2 and table
  (SNR ratio and tanh, log-mel, every DualPCEN power, the routing gate);
- **GMUL** — one wide multiply-add ``A·B + K`` (35 × 18 + 48 bits, two DSP48E1; the operands
  are registered, the result ``g_p`` is there ``GMUL_LATENCY`` = 2 cycles after the issue;
  ``A = A_hi·2**17 + A_lo`` with ``A_lo`` the low 17 bits: the first DSP forms
  ``P1 = A_lo·B + K``, the second ``A_hi·B + (P1 >> 17)``, so no fabric adder follows them;
  ``K`` is 48 bits two's complement — see :meth:`SpectralEngine.gmul`):
  EMA step, ns·noise, n0, smoothers, PCEN exponents, means, gate; where a result is
  ``x + round(a·d / 2**16)`` the addend and the rounding constant are in ``K`` (``x·2¹⁶ + 2¹⁵``),
  so no fabric adder follows;
- **MAC** — :class:`~nanomamba_hw.hw.mel.BandMAC`, the band accumulators of the mel sums and of
  the SNR projection (one DSP48E1);
- **RAM A** (512 × 36, one RAMB18) — the SNR estimator's per-bin state;
- **RAM B** (512 × 36, one RAMB18) — bin weights, the front end's per-band constants and
  state, the frame's mel values;
- the feature buffer's memory — features, SNR values, and scratch for the five look-ahead
  frames of magnitudes.

Per frame: **bins** (257 magnitudes through :class:`~nanomamba_hw.hw.snr.BinPipeline`, one every
8 cycles: mel sums, SNR values as bands close), then the **front-end pass** over the 40 mel
values (features). Frames 0…4 have no SNR yet (the estimator's look-ahead): after frame 4's
front-end pass, **INIT** computes the noise floor and the five frames are **replayed** from the
feature buffer's scratch words. ``Spectral`` waits for a free bank (``wr_ok``) before a clip's
first frame.

Cycles per frame with the input always valid (``tests/hw/test_spectral.py``, docs/hw_frontend.md):
256·8 for bins 0…256, then the last bin's drain, the pass (``schedule_cycles``: 88 log-mel,
1,531 DualPCEN) and CLEAR, rounded up to the 8-cycle slot: 2,168 and 3,616 cycles; the replay
after frame 4 adds 10,872 (log-mel: 10,880).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed import mel as fmel
from ..fixed import snr as fsnr
from ..fixed.model import FixedParams
from ..fixed.snr import SNR_FMT
from ..fixed.stft import MAG_FMT
from .common import OrMux, frame_stream, shape_of
from .featbuf import FeatureBuffer, FeatureReadSignature
from .frontend import feature_code, frontend_class
from .funcs import FuncUnit
from .mac import MUL_B_BITS, MUL_C_BITS
from .mel import BandMAC, bin_weights
from .snr import MEL_SHIFT, SNR_SHIFT, BinPipeline, snr_ops

__all__ = ["Spectral", "SpectralEngine"]

RAM_WORDS = 512
CLEAR_CYCLES = 6                            # BandMAC clear: strobe, 4 entries, margin
# GMUL operand widths: A holds the widest operand (Σ log2 E, signed 35 bits), B a DSP48E1's
# 18-bit port, K the first DSP's 48-bit C port (the widths of hw.mac's DSP ports)
GA_BITS, GB_BITS, GK_BITS = 35, MUL_B_BITS, MUL_C_BITS
GA_LO_BITS = MUL_B_BITS - 1                 # A's low part: unsigned, fits the 18-bit port


def _fits_signed(v, bits: int) -> bool:
    """True if every value of ``v`` (an int or an Amaranth value) fits ``signed(bits)``."""
    if isinstance(v, int):
        return -(1 << (bits - 1)) <= v < 1 << (bits - 1)
    sh = Value.cast(v).shape()
    return sh.width <= (bits if sh.signed else bits - 1)


class _Port:
    """The engine's side of the feature buffer (plain signals)."""


class SpectralEngine(wiring.Component):
    """Mel, SNR estimator and front end for ``params``; writes the feature buffer through its
    engine port (see the module docstring)."""

    def __init__(self, *, params: FixedParams, n_frames: int, fb_words: int, code,
                 word_bits: int):
        cfg = params.config
        if n_frames < fsnr.STATIC_FRAMES:
            raise ValueError(f"a clip needs at least {fsnr.STATIC_FRAMES} frames")
        self.params = params
        self.n_frames = n_frames
        self.n_mels = cfg.n_mels
        self.fb_words = fb_words
        self.code = code
        self.word_bits = word_bits
        self.fb_filt = fmel.SparseFilterbank.build(cfg.n_mels, cfg.n_fft, cfg.sample_rate)
        self.weights = bin_weights(self.fb_filt)
        self.fe_cls = frontend_class(params.frontend.kind)
        super().__init__({
            "i": In(frame_stream(shape_of(MAG_FMT))),
            "fb_wr_ok": In(1),
            "fb_done": Out(1),
            "fb_addr": Out(range(fb_words)),
            "fb_wdata": Out(word_bits),
            "fb_we": Out(1),
            "fb_re": Out(1),
            "fb_rdata": In(word_bits),
        })

    # -- RAM B layout: weights | front-end words | mel values
    def _ram_b(self):
        words = []
        for k in range(0, len(self.weights), 2):
            pair = self.weights[k:k + 2] + [(0, 0)]
            (w0, c0), (w1, c1) = pair[0], pair[1]
            words.append(w0 | (c0 << 16) | (w1 << 18) | (c1 << 34))
        fe_words = self.fe_cls.ram_layout(self.params.frontend)
        fe_base = len(words)
        words += fe_words
        mel_base = len(words)
        if mel_base + self.n_mels > RAM_WORDS:
            raise ValueError("RAM B overflows")
        return words, fe_base, mel_base

    def shared_units(self, m: Module) -> None:
        """Build the shared units into ``m`` and make them attributes of the engine: the RAMs
        (``ra``/``ra_w``, ``rb``/``rb_w``), the feature-buffer port ``fb``, the function unit
        ``fu`` (``op_index``: op name → code), the multiply-add (:meth:`gmul` issues, ``g_p`` is
        there ``GMUL_LATENCY`` cycles later), the band accumulators ``mac`` and the frame
        state ``t``, ``first_frame``, ``fbase`` (= t · n_mels). The bin pipeline and the
        front-end pass are built on top of these (and so are the unit tests' harnesses)."""
        eng = self
        eng.m = m
        eng.W_BASE = 0
        words, eng.FE_BASE, eng.MEL_BASE = self._ram_b()
        eng.STORE_BASE = fsnr.STATIC_FRAMES * self.n_mels

        # ---- memories
        ram_a = Memory(shape=unsigned(36), depth=RAM_WORDS, init=[], attrs={"ram_style": "block"})
        ram_b = Memory(shape=unsigned(36), depth=RAM_WORDS, init=words,
                       attrs={"ram_style": "block"})
        m.submodules.ram_a, m.submodules.ram_b = ram_a, ram_b
        eng.ra, eng.ra_w = ram_a.read_port(transparent_for=()), ram_a.write_port()
        eng.rb, eng.rb_w = ram_b.read_port(transparent_for=()), ram_b.write_port()
        m.d.comb += [eng.ra.en.eq(1), eng.rb.en.eq(1)]

        # ---- feature-buffer port
        fb = _Port()
        fb.addr, fb.wdata, fb.we, fb.re, fb.rdata = (self.fb_addr, self.fb_wdata, self.fb_we,
                                                     self.fb_re, self.fb_rdata)
        eng.fb = fb

        # ---- function unit
        ops = dict(snr_ops())
        ops.update(self.fe_cls.OPS)
        eng.ops = ops
        eng.op_index = {k: i for i, k in enumerate(ops)}
        m.submodules.fu = fu = FuncUnit(list(ops.values()), log_width=44, exp_width=34,
                                        add_width=22, inputs_registered=True)
        eng.fu = fu

        # ---- wide multiply-add
        eng.g_p = Signal(signed(GA_BITS + GB_BITS + 1))
        # the operands registered, then multiply-add: g_p is GMUL_LATENCY (2) cycles after the
        # issue (operand selection, multiply and the wide add in one cycle run at 30 MHz on an
        # ECP5)
        ga_r, gb_r, gk_r = (Signal(signed(GA_BITS), name="g_a_r"),
                            Signal(signed(GB_BITS), name="g_b_r"),
                            Signal(signed(GK_BITS), name="g_k_r"))
        # A·B + K as A_hi·B·2**17 + (A_lo·B + K): P1 is the first DSP's post-adder output, and
        # P1 >> 17 is the second one's addend (a 48-bit P fits A_lo·B + K); P1's low 17 bits are
        # the result's. Written as one product, it maps to two DSPs plus a fabric adder.
        p1 = Signal(signed(GK_BITS), name="g_p1")
        m.d.comb += p1.eq(ga_r[:GA_LO_BITS] * gb_r + gk_r)
        m.d.sync += eng.g_p.eq(Cat(p1[:GA_LO_BITS],
                                   ga_r[GA_LO_BITS:].as_signed() * gb_r + (p1 >> GA_LO_BITS)))
        # operands of the FU and the GMUL from every step of every pass: AND-OR, not a mux
        # chain. The FU's operands and K are ORed from registered terms (the AND is the
        # flip-flops' reset, only the OR is left in LUTs); A and B are ORed first and then
        # registered, so the registers stay at the multipliers' inputs: an OR tree between
        # them and the multiply-add's two multipliers and two adders would be the ECP5's
        # critical path (49.7 MHz placed and routed, against its 50 MHz clock).
        eng.fu_bus = OrMux(m, "fu", registered=True, valid=fu.i_valid, op=fu.i_op, x=fu.i_x,
                           sub=fu.i_sub, add=fu.i_add)
        g_a, g_b = Signal(signed(GA_BITS), name="g_a"), Signal(signed(GB_BITS), name="g_b")
        m.d.sync += [ga_r.eq(g_a), gb_r.eq(g_b)]
        eng.g_ab_bus = OrMux(m, "gmul", a=g_a, b=g_b)
        eng.g_k_bus = OrMux(m, "gmul_k", registered=True, k=gk_r)

        # ---- band accumulators
        acc_w = max(MAG_FMT.bits, fsnr.RATIO_FMT.bits) + 17 + 6
        m.submodules.mac = eng.mac = BandMAC(x_width=MAG_FMT.bits, shifts=[MEL_SHIFT, SNR_SHIFT],
                                             acc_width=acc_w)

        # ---- frame state
        eng.t = Signal(range(self.n_frames))
        eng.first_frame = Signal()
        m.d.comb += eng.first_frame.eq(eng.t == 0)
        eng.fbase = Signal(range(self.fb_words))        # t · n_mels

    def elaborate(self, platform):
        m = Module()
        n, T, S = self.n_mels, self.n_frames, fsnr.STATIC_FRAMES
        eng = self
        self.shared_units(m)
        t = eng.t
        tr = Signal(range(S))                           # frame being replayed
        rbase = Signal(range(self.fb_words))
        eng.sbase = Signal(range(self.fb_words))

        bins = BinPipeline(eng)
        self._bins = bins                   # for tests that look inside
        m.d.comb += eng.sbase.eq(Mux(bins.mode == 2, rbase, eng.fbase))
        front = self.fe_cls(eng)

        clr = Signal(range(8))
        in_replay = Signal()
        m.d.comb += bins.mode.eq(Mux(in_replay, 2, Mux(t < S, 0, 1)))
        with m.FSM(name="engine"):
            with m.State("WAIT"):
                with m.If(self.fb_wr_ok):
                    m.d.sync += [t.eq(0), eng.fbase.eq(0)]
                    m.d.comb += bins.store_rewind.eq(1)
                    m.next = "CLEAR"
            with m.State("CLEAR"):
                m.d.comb += eng.mac.clear.eq(clr == 0)
                m.d.sync += clr.eq(clr + 1)
                with m.If(clr == CLEAR_CYCLES - 1):
                    m.d.sync += clr.eq(0)
                    m.next = "BINS"
            with m.State("BINS"):
                m.d.comb += bins.run.eq(1)
                with m.If(bins.done):
                    m.next = "FRONT"
            with m.State("FRONT"):
                m.d.comb += front.run.eq(1)
                with m.If(front.done):
                    with m.If(t == S - 1):
                        m.next = "INIT"
                    with m.Elif(t == T - 1):
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [t.eq(t + 1), eng.fbase.eq(eng.fbase + n)]
                        m.next = "CLEAR"
            with m.State("INIT"):
                m.d.comb += bins.init_run.eq(1)
                with m.If(bins.init_done):
                    m.d.sync += [tr.eq(0), rbase.eq(0)]
                    m.d.comb += bins.store_rewind.eq(1)
                    m.next = "RCLEAR"
            with m.State("RCLEAR"):
                m.d.comb += [in_replay.eq(1), eng.mac.clear.eq(clr == 0)]
                m.d.sync += clr.eq(clr + 1)
                with m.If(clr == CLEAR_CYCLES - 1):
                    m.d.sync += clr.eq(0)
                    m.next = "REPLAY"
            with m.State("REPLAY"):
                m.d.comb += [in_replay.eq(1), bins.run.eq(1)]
                with m.If(bins.done):
                    with m.If(tr == S - 1):
                        with m.If(t == T - 1):
                            m.next = "DONE"
                        with m.Else():
                            m.d.sync += [t.eq(t + 1), eng.fbase.eq(eng.fbase + n)]
                            m.next = "CLEAR"
                    with m.Else():
                        m.d.sync += [tr.eq(tr + 1), rbase.eq(rbase + n)]
                        m.next = "RCLEAR"
            with m.State("DONE"):
                m.d.comb += self.fb_done.eq(1)
                m.next = "WAIT"
        self.finish_shared()
        return m

    # -- helpers used by the passes
    def finish_shared(self) -> None:
        """Drive the shared units' operands from every step issued (after the last one)."""
        self.fu_bus.emit()
        self.g_ab_bus.emit()
        self.g_k_bus.emit()

    def fu_issue(self, op: str, x, *, sub=0, add=0):
        self.fu_bus.drive(valid=1, op=self.op_index[op], x=x, sub=sub, add=add)

    def gmul(self, a, b, k, *, k_unsigned48: bool = False):
        """Issue ``g_p = a·b + k`` (there ``GMUL_LATENCY`` cycles later). Each operand's shape
        must fit its port: signed ``GA_BITS``, ``GB_BITS``, ``GK_BITS`` (checked here).

        ``g_p ≡ a·b + k`` modulo 2**48 always, and exactly when the first DSP's
        ``a_lo·b + k`` fits 48 signed bits (``a_lo``: a's low 17 bits, ``|a_lo·b| < 2**34``).
        Every site's ``k`` stays below 2**45 in magnitude except the smoothers':

        ``k_unsigned48``: ``k`` is unsigned 48 bits, wider than the signed port. Its bit pattern
        is taken as two's complement, so ``g_p`` is ``a·b + k − 2**48`` when ``k ≥ 2**47``: only
        the result's bits below 48 are exact, and the caller reads no others."""
        for name, v, bits in (("a", a, GA_BITS), ("b", b, GB_BITS), ("k", k, GK_BITS)):
            if name == "k" and k_unsigned48:
                ok = isinstance(v, Value) and v.shape() == unsigned(GK_BITS)
            else:
                ok = _fits_signed(v, bits)
            if not ok:
                raise ValueError(f"GMUL operand {name} ({v!r}) does not fit {bits} signed bits")
        self.g_ab_bus.drive(a=a, b=b)
        self.g_k_bus.drive(k=k)

    def write_feature(self, addr, value):
        """Write a final feature (the word read at ``addr`` the cycle before keeps its SNR)."""
        m, fb, bits = self.m, self.fb, self.code.bits
        m.d.comb += [fb.we.eq(1), fb.addr.eq(addr),
                     fb.wdata.eq(Cat(self.code.encode(value), fb.rdata[bits:]))]


class Spectral(wiring.Component):
    """Mel + SNR + front end + feature buffer for the fixed model ``params``.

    ``n_frames`` (default ``params.config.n_frames``, 101) is the number of frames per clip;
    any value ≥ 5 works (tests use short clips). ``n_banks`` feature-buffer banks (1 by
    default: the front end waits for the back end's ``release``, see ``hw/featbuf.py``).
    """

    def __init__(self, *, params: FixedParams, n_frames: int | None = None, n_banks: int = 1):
        cfg = params.config
        self.params = params
        self.n_frames = n_frames if n_frames is not None else cfg.n_frames
        self.n_mels = cfg.n_mels
        self.n_banks = n_banks
        self.feat_fmt = params.feat_fmt
        self.code = feature_code(params.frontend)
        super().__init__({
            "i": In(frame_stream(shape_of(MAG_FMT))),
            "clip_start": In(1),
            "rd": In(FeatureReadSignature(n_frames=self.n_frames, n_mels=self.n_mels,
                                          feat_fmt=self.feat_fmt, snr_fmt=SNR_FMT)),
        })

    def make_engine(self, buf: FeatureBuffer) -> SpectralEngine:
        """The engine writing ``buf`` (a subclass may return a test harness built on the same
        shared units)."""
        return SpectralEngine(params=self.params, n_frames=self.n_frames, fb_words=buf.words,
                              code=self.code, word_bits=buf.word_bits)

    def elaborate(self, platform):
        m = Module()
        S = fsnr.STATIC_FRAMES
        # the scratch words (five frames of bins 1…255) follow frames 0…4
        scratch_end = S * self.n_mels + S * (fmel.SparseFilterbank.build().dense.shape[1] - 2)
        buf = FeatureBuffer(feat_fmt=self.feat_fmt, n_frames=self.n_frames, n_mels=self.n_mels,
                            snr_fmt=SNR_FMT, n_banks=self.n_banks, code=self.code,
                            min_words=scratch_end)
        eng = self.make_engine(buf)
        m.submodules.engine = ResetInserter({"sync": self.clip_start})(eng)
        self._engine = eng                  # for tests that look inside
        m.submodules.buffer = buf
        m.d.comb += [
            eng.i.valid.eq(self.i.valid & ~self.clip_start),
            eng.i.payload.eq(self.i.payload),
            self.i.ready.eq(eng.i.ready & ~self.clip_start),
            eng.fb_wr_ok.eq(buf.wr_ok),
            buf.done.eq(eng.fb_done),
            buf.addr.eq(eng.fb_addr), buf.wdata.eq(eng.fb_wdata), buf.we.eq(eng.fb_we),
            buf.re.eq(eng.fb_re), eng.fb_rdata.eq(buf.rdata),
        ]
        wiring.connect(m, wiring.flipped(self.rd), buf.rd)
        return m
