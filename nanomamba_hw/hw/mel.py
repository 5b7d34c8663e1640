"""Mel filterbank as bins stream in: = ``fixed.mel.mel_spectrum`` and the SNR projection.

What it computes
----------------
``mel[m] = sat(round(Σ_j W[m, j] · |X|[j] / 2**14))`` in ``MEL_FMT`` (u28.16), and the same
sparse projection of the SNR ratio (``snr_mel``, u16.8), with the 454 nonzero triangle weights
of :class:`~nanomamba_hw.fixed.mel.SparseFilterbank` (u16.15).

How: bin order, two accumulators per stream
-------------------------------------------
The triangles overlap pairwise: every bin j with a nonzero weight belongs to the lowest band
m that is still open and, at most, to band m + 1, and wherever it belongs to both the two
weights add up to exactly 1.0 (32768; checked against ``SparseFilterbank.dense`` by
:func:`bin_weights`, which refuses a filterbank without that structure). So a bin needs one
stored number: ``w``, its weight in the lower band (the upper band gets ``32768 − w``), plus
a flag ``close`` on the lower band's last bin. As the 257 magnitudes of a frame arrive in bin
order, :class:`BandMAC` adds ``w·x`` to the lower band's accumulator and ``(32768 − w)·x`` to
the upper one's; on ``close`` the lower band is complete and leaves, and its accumulator
becomes the one after next (even/odd bands alternate between two entries). No frame buffer
and no 454-entry walk: two multiply-adds per bin per stream, and each band's value is ready
as soon as its last bin has been seen. Bins 0 and 256 have no weight at all and are skipped;
the upper-band products of bins 240…255 (above band 39) land in an accumulator that is never
read and is reset at the next frame.

The accumulators (2 per stream) live in LUT RAM; one DSP48E1 forms ``x·B + acc`` (the add is
the DSP's post-adder) and the entry is written back the next cycle, or reset to the stream's
rounding constant ``2**(shift − 1)`` when its band closes (so the value that leaves is the sum
plus the rounding constant: ``sum >> shift`` is the rounded result). The caller saturates.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed import mel as fmel

__all__ = ["BandMAC", "ONE", "bin_weights"]

ONE = 1 << fmel.MEL_W_FMT.frac           # weight 1.0 (32768)


def bin_weights(fb: fmel.SparseFilterbank) -> list[tuple[int, int]]:
    """Per bin j: ``(w, close)`` — ``w`` the weight of bin j in the lowest open band m, band
    m + 1 getting ``ONE − w``; ``close`` set on band m's last bin. Checked against
    ``fb.dense``: the streaming sums equal ``fb.apply`` exactly, or ValueError."""
    dense = np.asarray(fb.dense)
    n_mels, n_bins = dense.shape
    out, band = [], 0
    for j in range(n_bins):
        col = dense[:, j]
        nz = np.flatnonzero(col)
        if not nz.size:
            out.append((0, 0))
            continue
        if band >= n_mels or nz[0] != band or (nz.size > 1 and list(nz) != [band, band + 1]):
            raise ValueError(f"filterbank bin {j}: bands {list(nz)} do not follow band {band}")
        w = int(col[band])
        if band + 1 < n_mels and int(col[band + 1]) != ONE - w:
            raise ValueError(f"filterbank bin {j}: weights {w} and {int(col[band + 1])} "
                             f"do not add up to {ONE}")
        close = int(j == int(np.flatnonzero(dense[band]).max()))
        out.append((w, close))
        band += close
    if band != n_mels:
        raise ValueError("filterbank bands do not all close")
    for j, (w, _) in enumerate(out):
        if not 0 <= w <= ONE:
            raise ValueError(f"bin {j}: weight {w} out of range")
    return out


class BandMAC(wiring.Component):
    """Band accumulators for ``n_streams`` interleaved streams (mel, SNR projection).

    One product per cycle: with ``valid``, ``acc[stream, lo/hi] += x · (w or ONE − w)``; ``hi``
    selects the upper band's accumulator and weight. ``close`` (with ``hi`` low) marks the
    lower band's last bin: two cycles later (the inputs are registered) ``o_valid`` strobes
    with ``o_stream`` and ``o_value`` = the band's sum + ``2**(shift − 1)``
    (``shifts[stream]``), and the accumulator is reset for the band after next. Timing
    contract (the bin pipeline keeps it: lo at c1, hi at c2, bins 8 cycles apart): a bin's hi
    product comes in the cycle right after its lo product (the parity of the open band flips
    one cycle after a closing lo product, so a later hi product would land in the band after
    next), and two products into the same accumulator are at least two cycles apart (the
    accumulator is read combinationally and the new sum is written back one cycle after the
    product).
    ``clear`` (strobe, with ``valid`` low for the next ``2·n_streams`` cycles) resets every
    accumulator to its rounding constant and the band parities.
    """

    def __init__(self, *, x_width: int, shifts: list[int], acc_width: int):
        self.x_width, self.shifts, self.acc_width = x_width, list(shifts), acc_width
        self.n_streams = len(shifts)
        super().__init__({
            "valid": In(1),
            "stream": In(range(max(2, self.n_streams))),
            "hi": In(1),
            "close": In(1),
            "x": In(unsigned(x_width)),
            "w": In(range(ONE + 1)),
            "clear": In(1),
            "o_valid": Out(1),
            "o_stream": Out(range(max(2, self.n_streams))),
            "o_value": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        S = self.n_streams
        n_entries = 2 * S
        # every input is registered first: the weight comes from a RAM read and a subtraction,
        # too much to also multiply and accumulate in the same cycle at 50 MHz on an ECP5
        i = {k: Signal.like(getattr(self, k), name=f"{k}_in")
             for k in ("valid", "stream", "hi", "close", "x", "w", "clear")}
        m.d.sync += [r.eq(getattr(self, k)) for k, r in i.items()]
        acc = Memory(shape=signed(self.acc_width), depth=n_entries, init=[])
        m.submodules.acc = acc
        wp, rp = acc.write_port(), acc.read_port(domain="comb")
        par = Signal(S)                            # parity of each stream's open band
        entry = Signal(range(n_entries))
        m.d.comb += [entry.eq(Cat(par.bit_select(i['stream'], 1) ^ i['hi'], i['stream'])),
                     rp.addr.eq(entry)]
        # b = hi ? ONE − w : w (w ≤ ONE = 2**k, k + 1 bits; k from the weights' format).
        # 2**k − w ≡ Cat(~w[:k], w[k]) + 1 (mod 2**(k+1): ~w + 1 + 2**k, and adding 2**k flips
        # bit k), so one adder over w's low bits XORed with hi, carry-in hi, replaces a
        # subtractor's inverters and a mux
        k = fmel.MEL_W_FMT.frac
        w, hi = i['w'], i['hi']
        b = Signal(unsigned(k + 1))
        m.d.comb += b.eq(Cat(w[:k] ^ hi.replicate(k), w[k]) + hi)
        p = Signal(signed(self.acc_width))
        m.d.sync += p.eq(i['x'] * b + rp.data)
        v1, e1, s1, c1, clr1 = Signal(), Signal.like(entry), Signal.like(i['stream']), \
            Signal(), Signal()
        m.d.sync += [v1.eq(i['valid']), e1.eq(entry), s1.eq(i['stream']),
                     c1.eq(i['valid'] & i['close'] & ~i['hi']), clr1.eq(i['clear'])]
        kval = Signal(signed(self.acc_width))
        with m.Switch(s1):
            for s, sh in enumerate(self.shifts):
                with m.Case(s):
                    m.d.comb += kval.eq(1 << (sh - 1))
        cl_idx = Signal(range(n_entries))           # clear: one entry per cycle over n_entries
        clearing = Signal()
        with m.If(i['clear'] & ~clearing):
            m.d.sync += [clearing.eq(1), cl_idx.eq(0), par.eq(0)]
        with m.Elif(clearing):
            m.d.sync += cl_idx.eq(cl_idx + 1)
            with m.If(cl_idx == n_entries - 1):
                m.d.sync += clearing.eq(0)
        with m.If(clearing):
            m.d.comb += [wp.addr.eq(cl_idx), wp.en.eq(1)]
            with m.Switch(cl_idx[1:]):
                for s, sh in enumerate(self.shifts):
                    with m.Case(s):
                        m.d.comb += wp.data.eq(1 << (sh - 1))
        with m.Else():
            m.d.comb += [wp.addr.eq(e1), wp.en.eq(v1), wp.data.eq(Mux(c1, kval, p))]
        with m.If(c1):
            m.d.sync += par.bit_select(s1, 1).eq(~par.bit_select(s1, 1))
        m.d.comb += [self.o_valid.eq(c1), self.o_stream.eq(s1), self.o_value.eq(p)]
        return m
