"""UART receiver and transmitter in the Amaranth simulator: loopback, bit-level models on either
side, framing errors, overruns, glitches and a sender whose baud rate is off by ±1.5 %."""

import random

import pytest
from amaranth.hdl import Module

from nanomamba_hw.hw.sim_util import (run_sim, stream_get, stream_get_n, stream_put_all,
                                      uart_recv, uart_send)
from nanomamba_hw.hw.uart import UARTReceiver, UARTTransmitter, baud_divisor


def test_divisor():
    assert baud_divisor(100e6, 921600) == 109          # 917,431 baud, -0.45 %
    assert baud_divisor(4e6, 1e6) == 4
    with pytest.raises(ValueError, match=r"divisor 4 gives 250000 baud \(\+8\.51%"):
        baud_divisor(1e6, 230400)
    with pytest.raises(ValueError, match="too fast"):
        baud_divisor(10e6, 3e6)
    with pytest.raises(ValueError, match="positive"):
        baud_divisor(10e6, 0)
    with pytest.raises(ValueError, match="cannot be made"):
        UARTTransmitter(clk_freq=1e6, baud=230400)


@pytest.mark.parametrize("clk_freq, baud, n", [(100e6, 921600, 16), (4e6, 1e6, 200)])
def test_loopback(clk_freq, baud, n):
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(clk_freq=clk_freq, baud=baud)
    m.submodules.rx = rx = UARTReceiver(clk_freq=clk_freq, baud=baud)
    m.d.comb += rx.rx.eq(tx.tx)
    rng = random.Random(n)
    data = bytes(rng.getrandbits(8) for _ in range(n)) + b"\x00\xff\x55\xaa"

    async def send(ctx):
        # stalls up to ~3 bytes long exercise idle gaps between frames
        await stream_put_all(ctx, tx.i, data, stall=0.3, max_stall=30 * tx.divisor, rng=rng)

    async def receive(ctx):
        got = await stream_get_n(ctx, rx.o, len(data))
        assert bytes(got) == data
        assert ctx.get(rx.overrun_count) == 0

    run_sim(m, [send, receive], clocks={"sync": 1 / clk_freq}, deadline=len(data) * 30 / baud)


def test_tx_frames_against_line_model():
    dut = UARTTransmitter(clk_freq=4e6, baud=1e6)
    data = bytes(range(0, 256, 17))

    async def send(ctx):
        await stream_put_all(ctx, dut.i, data)

    async def watch(ctx):
        assert ctx.get(dut.tx) == 1
        assert await uart_recv(ctx, dut.tx, len(data), cycles_per_bit=4) == data

    run_sim(dut, [send, watch], clocks={"sync": 1 / 4e6}, deadline=1e-3)


@pytest.mark.parametrize("mismatch", [-0.015, 0.0, 0.015])
@pytest.mark.parametrize("clk_freq, baud", [(16e6, 1e6), (100e6, 921600)])
def test_rx_with_baud_mismatch(clk_freq, baud, mismatch):
    dut = UARTReceiver(clk_freq=clk_freq, baud=baud)
    data = bytes([0x00, 0xFF, 0x80, 0x01, 0x55, 0xAA]) + bytes(random.Random(7).randbytes(10))
    # the sender runs at baud·(1+mismatch) relative to the receiver's own (rounded) rate
    cycles_per_bit = dut.divisor / (1 + mismatch)

    async def send(ctx):
        await ctx.tick().repeat(5)
        await uart_send(ctx, dut.rx, data, cycles_per_bit=cycles_per_bit)

    async def receive(ctx):
        got = await stream_get_n(ctx, dut.o, len(data))
        assert bytes(got) == data
        assert ctx.get(dut.overrun_count) == 0

    run_sim(dut, [send, receive], clocks={"sync": 1 / clk_freq}, deadline=20 * len(data) / baud)


async def _send_frame(ctx, pin, bits, cycles):
    for b in bits:
        ctx.set(pin, b)
        await ctx.tick().repeat(cycles)
    ctx.set(pin, 1)


def test_framing_error_and_recovery():
    dut = UARTReceiver(clk_freq=8e6, baud=1e6)
    events = []

    async def send(ctx):
        await ctx.tick().repeat(3)
        # 0x5A with a low stop bit, then the line stays low for a while (a break)
        await _send_frame(ctx, dut.rx, [0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0], 8)
        await ctx.tick().repeat(20)
        await uart_send(ctx, dut.rx, b"\x42", cycles_per_bit=8)
        await ctx.tick().repeat(20)

    async def monitor(ctx):
        async for _, _, frame_err, valid, payload in ctx.tick().sample(
                dut.frame_err, dut.o.valid, dut.o.payload):
            if frame_err:
                events.append("frame_err")
            if valid:
                events.append(payload)
                break

    async def consume(ctx):
        ctx.set(dut.o.ready, 0)

    run_sim(dut, [send, monitor, consume], clocks={"sync": 1 / 8e6}, deadline=1e-3)
    # exactly one framing error for the bad frame and the break, no byte from it, then 0x42
    assert events == ["frame_err", 0x42]


def test_start_glitch_is_ignored():
    dut = UARTReceiver(clk_freq=8e6, baud=1e6)

    async def send(ctx):
        await ctx.tick().repeat(3)
        ctx.set(dut.rx, 0)        # 2 cycles low: shorter than half a bit
        await ctx.tick().repeat(2)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(30)
        await uart_send(ctx, dut.rx, b"\x81", cycles_per_bit=8)

    async def receive(ctx):
        assert await stream_get(ctx, dut.o) == 0x81
        assert ctx.get(dut.frame_err) == 0

    run_sim(dut, [send, receive], clocks={"sync": 1 / 8e6}, deadline=1e-3)


def test_overrun_drops_new_bytes_and_counts():
    dut = UARTReceiver(clk_freq=4e6, baud=1e6)
    overruns = []

    async def send(ctx):
        await uart_send(ctx, dut.rx, b"\x11\x22\x33", cycles_per_bit=4)
        await ctx.tick().repeat(10)

    async def monitor(ctx):
        async for _, _, overrun in ctx.tick().sample(dut.overrun):
            if overrun:
                overruns.append(overrun)

    async def check(ctx):
        await ctx.tick().repeat(4 * 10 * 3 + 20)
        assert ctx.get(dut.overrun_count) == 2
        assert await stream_get(ctx, dut.o) == 0x11     # the first byte was kept
        await ctx.tick().repeat(60)
        assert ctx.get(dut.o.valid) == 0

    run_sim(dut, [send, check], background=[monitor], clocks={"sync": 1 / 4e6}, deadline=1e-3)
    assert len(overruns) == 2
