"""Helpers shared by every Amaranth simulation test of the project.

Testbenches are ``async def tb(ctx)`` functions (Amaranth 0.5 ``add_testbench``); the helpers
here are awaited from inside them:

- :func:`stream_put` / :func:`stream_get`: one transfer on an ``amaranth.lib.stream`` interface;
- :func:`stream_put_all` / :func:`stream_get_n`: many transfers, optionally with random stalls
  (idle cycles on the producer's ``valid`` or the consumer's ``ready``) to exercise backpressure;
- :func:`uart_send` / :func:`uart_recv`: a UART line driven or watched bit by bit, with an
  optional baud-rate error on the sending side;
- :func:`i2s_source`: a 24-bit I2S ADC (like the CS5343 in slave mode) answering the SCLK and
  LRCK a design generates;
- :func:`run_sim`: build a :class:`~amaranth.sim.Simulator`, add clocks and testbenches, run it
  with a deadline, and write a VCD only when the environment variable ``NANOMAMBA_VCD`` is set
  (to a directory; the file is named after the test).

Example::

    dut = MyStage()
    async def feed(ctx):
        await stream_put_all(ctx, dut.i, samples, stall=0.3, rng=random.Random(1))
    async def check(ctx):
        got = await stream_get_n(ctx, dut.o, len(samples), stall=0.3, rng=random.Random(2))
        assert got == expected
    run_sim(dut, [feed, check])
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path

from amaranth.hdl import Value
from amaranth.lib import data
from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "stream_put_all", "stream_get_n", "to_python",
           "uart_send", "uart_recv", "i2s_source", "run_sim", "SimTimeout"]


class SimTimeout(AssertionError):
    """A simulation reached its deadline while a testbench was still waiting."""


def to_python(value):
    """A sampled payload as plain Python: ints stay ints, ``data`` views become dicts/lists."""
    if isinstance(value, data.Const):
        layout = value.shape()
        if isinstance(layout, data.ArrayLayout):
            return [to_python(value[i]) for i in range(layout.length)]
        return {name: to_python(value[name]) for name, _ in layout}
    return value


async def stream_put(ctx, stream, payload, *, domain: str = "sync") -> None:
    """Offer ``payload`` on ``stream`` (an interface whose ``valid`` we drive) until accepted.

    Returns on the clock edge where ``valid & ready`` was seen; ``valid`` is dropped afterwards.
    ``payload`` may be an int or anything ``ctx.set`` accepts for the payload's shape (for a
    ``data`` layout: a dict or a ``data.Const``).
    """
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick(domain).until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, domain: str = "sync"):
    """Accept one payload from ``stream`` (whose ``ready`` we drive) and return it.

    The payload is sampled at the clock edge of the handshake and converted with
    :func:`to_python` (ints for plain shapes, dicts/lists for ``data`` layouts).
    """
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick(domain).sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return to_python(payload)


async def _stall(ctx, stall: float, max_stall: int, rng: random.Random, domain: str) -> None:
    if stall and rng.random() < stall:
        await ctx.tick(domain).repeat(rng.randint(1, max_stall))


async def stream_put_all(ctx, stream, payloads: Iterable, *, stall: float = 0.0,
                         max_stall: int = 4, rng: random.Random | None = None,
                         domain: str = "sync") -> None:
    """Send every payload in order; before each, with probability ``stall``, hold ``valid`` low
    for 1..``max_stall`` cycles (``rng`` makes the pattern reproducible)."""
    rng = rng or random.Random(0)
    for p in payloads:
        await _stall(ctx, stall, max_stall, rng, domain)
        await stream_put(ctx, stream, p, domain=domain)


async def stream_get_n(ctx, stream, n: int, *, stall: float = 0.0, max_stall: int = 4,
                       rng: random.Random | None = None, domain: str = "sync") -> list:
    """Receive ``n`` payloads; before each, with probability ``stall``, keep ``ready`` low for
    1..``max_stall`` cycles. Returns the payloads as plain Python values."""
    rng = rng or random.Random(1)
    out = []
    for _ in range(n):
        await _stall(ctx, stall, max_stall, rng, domain)
        out.append(await stream_get(ctx, stream, domain=domain))
    return out


async def uart_send(ctx, pin, data: bytes, *, cycles_per_bit: float, gap: int = 0,
                    domain: str = "sync") -> None:
    """Drive ``pin`` (an ``In(1)`` of the design) with 8N1 frames of ``data``, bit by bit.

    ``cycles_per_bit`` may be fractional: a sender whose baud rate is off by 1.5 % is
    ``cycles_per_bit = divisor * 1.015``; edges are placed at the nearest clock edge of the
    accumulated ideal time, so the error does not round away. ``gap`` idle cycles follow each
    byte. The line is left high (idle).
    """
    t_ideal = 0.0       # ideal time of the next edge, in cycles since the first start bit
    t_now = 0
    for byte in data:
        for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
            ctx.set(pin, bit)
            t_ideal += cycles_per_bit
            n = round(t_ideal) - t_now
            if n > 0:
                await ctx.tick(domain).repeat(n)
                t_now += n
        if gap:
            await ctx.tick(domain).repeat(gap)
            t_now += gap
            t_ideal += gap
    ctx.set(pin, 1)


async def uart_recv(ctx, pin, n: int | None = None, *, cycles_per_bit: int,
                    until: Callable[[bytes], bool] | None = None,
                    domain: str = "sync") -> bytes:
    """Watch ``pin`` (an ``Out(1)`` of the design, a UART TX) and decode 8N1 bytes.

    Stops after ``n`` bytes, or as soon as ``until(received_so_far)`` is true. Each bit is
    sampled in its middle, counting clock edges from the start bit's falling edge, so the
    transmitter must run at exactly ``cycles_per_bit``. A low stop bit raises AssertionError.
    """
    if n is None and until is None:
        raise ValueError("give n or until")
    out = bytearray()
    while (n is None or len(out) < n) and not (until is not None and until(bytes(out))):
        if ctx.get(pin):
            await ctx.negedge(pin)
        # first sample in the middle of data bit 0, then one bit period apart
        await ctx.tick(domain).repeat(cycles_per_bit + cycles_per_bit // 2)
        byte = 0
        for i in range(8):
            byte |= ctx.get(pin) << i
            await ctx.tick(domain).repeat(cycles_per_bit)
        assert ctx.get(pin) == 1, f"stop bit low after byte {len(out)} (0x{byte:02x})"
        out.append(byte)
    return bytes(out)


async def i2s_source(ctx, *, sclk, lrck, sdout, left: Iterable[int], right: Iterable[int] = (),
                     bits: int = 24, rng: random.Random | None = None) -> None:
    """Behave like an I2S ADC in slave mode, driven only by the design's ``sclk`` and ``lrck``.

    On each rising SCLK edge the model notes LRCK (a change starts a new word, slot 0: LRCK low
    is left); on each falling edge it drives ``sdout`` with the bit for the next slot: slots
    1..``bits`` carry the word MSB first, every other slot carries random junk (``rng``) so a
    receiver that reads the wrong slots fails. Words come from ``left``/``right`` (two's
    complement, ``bits`` wide); when a channel runs out it sends zeros. Runs forever: add it as
    a ``background`` testbench.
    """
    rng = rng or random.Random(0)
    sources = {0: iter(left), 1: iter(right)}
    mask = (1 << bits) - 1
    prev = None
    slot = 0
    word = 0
    while True:
        await ctx.posedge(sclk)
        chan = ctx.get(lrck)
        if chan != prev:
            slot, word = 0, next(sources[chan], 0) & mask
        else:
            slot += 1
        prev = chan
        await ctx.negedge(sclk)
        nxt = slot + 1
        ctx.set(sdout, (word >> (bits - nxt)) & 1 if 1 <= nxt <= bits else rng.getrandbits(1))


def _vcd_context(sim: Simulator, name: str, traces: Sequence[Value]):
    where = os.environ.get("NANOMAMBA_VCD")
    if not where:
        return nullcontext()
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return sim.write_vcd(str(out / f"{stem}.vcd"), traces=list(traces))


def run_sim(dut, testbenches: Iterable[Callable] = (), *,
            clocks: dict[str, float] | None = None,
            background: Iterable[Callable] = (),
            deadline: float | None = None,
            name: str | None = None,
            traces: Sequence[Value] = ()) -> None:
    """Simulate ``dut`` until every testbench in ``testbenches`` has returned.

    - ``clocks``: clock period in seconds per domain, default ``{"sync": 1e-6}``; a domain the
      design uses but that is not listed gets no clock (and never ticks).
    - ``background``: testbenches that may run forever (e.g. a bus model); the simulation ends
      when the critical ones are done.
    - ``deadline``: simulated seconds after which the run stops; :class:`SimTimeout` is raised
      if a critical testbench has not finished by then (a hang guard that names the culprit).
    - ``name``: VCD file name (default: the current pytest test, else the DUT's class); the VCD
      is written to ``$NANOMAMBA_VCD/<name>.vcd`` only when that variable is set.
    - ``traces``: extra signals for the VCD.

    Exceptions raised inside testbenches propagate out of this call.
    """
    sim = Simulator(dut)
    for domain, period in (clocks or {"sync": 1e-6}).items():
        sim.add_clock(period, domain=domain)
    running: dict[int, str] = {}
    for key, tb in enumerate(testbenches):
        running[key] = getattr(tb, "__name__", repr(tb))

        def wrap(tb=tb, key=key):
            async def critical(ctx):
                await tb(ctx)
                del running[key]
            return critical
        sim.add_testbench(wrap())
    for tb in background:
        sim.add_testbench(tb, background=True)
    if deadline is not None:
        async def watchdog(ctx):
            # A background testbench: it only fires if the critical ones outlive the deadline.
            await ctx.delay(deadline)
            raise SimTimeout(f"simulation deadline {deadline} s reached; testbenches still "
                             f"running: {', '.join(running.values())}")
        sim.add_testbench(watchdog, background=True)
    if name is None:
        name = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0] or type(dut).__name__
    with _vcd_context(sim, name, traces):
        sim.run()
