"""The Arty A7 board top with the DummyAccelerator, end to end in the Amaranth simulator:
protocol packets from nanomamba_hw.protocol are driven bit by bit into the UART rx pin, the tx
pin is decoded bit by bit, and the answers must be what the dummy predicts. Also: the top
elaborates into a Vivado build plan for the real boards."""

import random

import pytest

from boards.arty_a7 import ArtyA7_35Platform, ArtyA7_100Platform, ArtyA7Top, CLASS_COLOURS
from nanomamba_hw import protocol as P
from nanomamba_hw.hw.accel_if import DummyAccelerator, dummy_result
from nanomamba_hw.hw.i2s import AUDIO_CLK_FREQ
from nanomamba_hw.hw.sim_util import (i2s_source, run_sim, stream_get, stream_put_all, uart_recv,
                                      uart_send)

# 4 clock cycles per bit keep a 160-sample clip at ~13k cycles (about a second of simulation)
CLK, BAUD, CPB = 4e6, 1e6, 4
IDLE = 100e-6                  # the board's idle timeout: 100 bit times here
CLIP = 160


def make_top(*, clip_len=CLIP, audio="uart", pcm_stall=0, clk_freq=CLK, baud=BAUD):
    return ArtyA7Top(DummyAccelerator(clip_len=clip_len, pcm_stall=pcm_stall), clk_freq=clk_freq,
                     baud=baud, audio=audio, idle_timeout=IDLE, debounce=2e-6)


class Host:
    """A scripted host on the simulated UART: ``send`` bytes, ``expect`` n more packets, ``idle``.

    A background monitor decodes every byte the board sends, so packets nobody asked for are
    caught too (:attr:`packets` holds everything received)."""

    def __init__(self, top, clip_len=CLIP, cpb=CPB):
        self.top, self.clip_len, self.cpb = top, clip_len, cpb
        self.rx_bytes = bytearray()
        self.steps = []

    @property
    def packets(self):
        return P.PacketParser(clip_len=self.clip_len).feed(bytes(self.rx_bytes))

    def send(self, data):
        async def step(ctx):
            await uart_send(ctx, self.top.rx, data, cycles_per_bit=self.cpb)
        self.steps.append(step)
        return self

    def expect(self, n_total):
        async def step(ctx):
            while len(self.packets) < n_total:
                await ctx.tick().repeat(10 * self.cpb)
        self.steps.append(step)
        return self

    def idle(self, seconds):
        async def step(ctx):
            await ctx.delay(seconds)
        self.steps.append(step)
        return self

    def then(self, fn):
        self.steps.append(fn)
        return self

    def run(self, *, deadline, background=(), clocks=None):
        async def monitor(ctx):
            while True:
                self.rx_bytes += await uart_recv(ctx, self.top.tx, 1, cycles_per_bit=self.cpb)

        async def script(ctx):
            await ctx.tick().repeat(5)
            for step in self.steps:
                await step(ctx)
            await ctx.delay(50 * 10 / BAUD)        # let anything unexpected arrive

        run_sim(self.top, [script], background=[monitor, *background],
                clocks=clocks or {"sync": 1 / CLK}, deadline=deadline)
        return self.packets


def random_clip(seed, n=CLIP):
    rng = random.Random(seed)
    return [rng.randint(-32768, 32767) for _ in range(n)]


def expected_result(pcm):
    want = dummy_result(pcm)
    return want.index, tuple(want.logits)


def check_result(packet, pcm, *, pcm_stall=0):
    assert isinstance(packet, P.Result), packet
    assert (packet.index, packet.logits) == expected_result(pcm)
    # cycles: from the first sample to the decision, paced by the UART (20 bits per sample)
    # or by a slow accelerator
    per_sample = max(20 * CPB, pcm_stall + 1)
    assert 20 * CPB * (len(pcm) - 1) <= packet.cycles <= per_sample * len(pcm) + 200


@pytest.mark.parametrize("pcm_stall", [0, 90], ids=["fast-accel", "slow-accel"])
def test_clip_gives_the_dummy_result(pcm_stall):
    """With pcm_stall=90 the accelerator takes a sample only every ~90 cycles while the UART
    delivers one every 80: the sample FIFO absorbs the backlog."""
    top = make_top(pcm_stall=pcm_stall)
    pcm = random_clip(1)
    seen = {}

    async def leds(ctx):
        seen["led"] = ctx.get(top.led)
        # RGB LED 0 shows the class colour as PWM duty out of 256
        duty = [0, 0, 0]
        for _ in range(256):
            rgb = ctx.get(top.rgb)
            for c in range(3):
                duty[c] += (rgb >> c) & 1
            await ctx.tick()
        seen["duty"] = tuple(duty)

    host = Host(top).then(lambda ctx: leds_off(ctx, top)).send(P.encode_clip(pcm)).expect(1)
    host.then(leds)
    packets = host.run(deadline=0.02)
    assert len(packets) == 1
    check_result(packets[0], pcm, pcm_stall=pcm_stall)
    assert seen["led"] == packets[0].index
    assert seen["duty"] == CLASS_COLOURS[packets[0].index]


async def leds_off(ctx, top):
    assert ctx.get(top.led) == 0          # nothing shown before the first result


def test_extreme_samples():
    pcm = [-32768] * (CLIP // 2) + [32767] * (CLIP // 2)
    packets = Host(make_top()).send(P.encode_clip(pcm)).expect(1).run(deadline=0.02)
    check_result(packets[0], pcm)


def test_bad_checksum_gives_error_then_next_clip_works():
    bad = bytearray(P.encode_clip(random_clip(2)))
    bad[-2] ^= 0x01
    pcm = random_clip(3)
    host = Host(make_top()).send(bytes(bad)).expect(1).send(P.encode_clip(pcm)).expect(2)
    packets = host.run(deadline=0.03)
    assert packets[0] == P.Error(P.ErrorCode.CHECKSUM)
    # the bad clip's result was dropped, not sent in place of this one
    check_result(packets[1], pcm)
    assert len(packets) == 2


def test_register_round_trip():
    values = {1: 0x0CCC_CCCD, 2: 0xFFFF_FFFF, 3: 0, 4: 0x8000_0000, 5: 0x1234_5678}
    host = Host(make_top())
    n = 0
    for addr, value in values.items():
        host.send(P.encode_write_reg(addr, value)).expect(n := n + 1)
    for addr in [*values, 0, 9, 200]:
        host.send(P.encode_read_reg(addr)).expect(n := n + 1)
    host.send(P.encode_write_reg(0, 3)).expect(n := n + 1)      # status is read-only
    host.send(P.encode_read_reg(0)).expect(n := n + 1)
    packets = host.run(deadline=0.02)
    assert packets == ([P.Ack(a) for a in values] +
                       [P.Reg(a, v) for a, v in values.items()] +
                       [P.Reg(0, 0), P.Reg(9, 0), P.Reg(200, 0), P.Ack(0), P.Reg(0, 0)])


def test_bad_checksum_on_register_write_changes_nothing():
    bad = bytearray(P.encode_write_reg(2, 77))
    bad[-1] ^= 0x80
    packets = (Host(make_top()).send(bytes(bad)).expect(1).send(P.encode_read_reg(2)).expect(2)
               .run(deadline=0.01))
    assert packets == [P.Error(P.ErrorCode.CHECKSUM), P.Reg(2, 0)]


def test_unknown_command_then_recovery_after_idle():
    host = (Host(make_top()).send(b"NM\x42" + bytes(range(20))).expect(1)
            .idle(2 * IDLE).send(P.encode_read_reg(1)).expect(2))
    assert host.run(deadline=0.01) == [P.Error(P.ErrorCode.UNKNOWN_COMMAND), P.Reg(1, 0)]


def test_garbage_and_abandoned_packet_are_ignored():
    """Noise before a packet is skipped; a packet cut off by silence is dropped without an
    answer, and the next packet is understood."""
    garbage = bytes(random.Random(4).choice(b"xyzM\x00\xff") for _ in range(30))
    host = (Host(make_top()).send(garbage + P.encode_write_reg(3, 9)).expect(1)
            .send(P.encode_clip(random_clip(5))[:101]).idle(2 * IDLE)
            .send(b"N" + P.encode_read_reg(3)).expect(2))
    assert host.run(deadline=0.01) == [P.Ack(3), P.Reg(3, 9)]


def test_framing_error_inside_packet():
    top = make_top()

    async def bad_frame(ctx):
        # a byte whose stop bit is low, then the line goes idle again
        for bit in [0, 1, 0, 1, 0, 1, 0, 1, 0, 0]:
            ctx.set(top.rx, bit)
            await ctx.tick().repeat(CPB)
        ctx.set(top.rx, 1)

    host = (Host(top).send(b"NM\x02\x01").then(bad_frame).expect(1).idle(2 * IDLE)
            .send(P.encode_read_reg(1)).expect(2))
    assert host.run(deadline=0.01) == [P.Error(P.ErrorCode.FRAMING), P.Reg(1, 0)]


def test_two_clips_back_to_back():
    a, b = random_clip(6), random_clip(7)
    packets = (Host(make_top()).send(P.encode_clip(a)).expect(1).send(P.encode_clip(b)).expect(2)
               .run(deadline=0.03))
    check_result(packets[0], a)
    check_result(packets[1], b)


def test_i2s2_button_records_a_clip():
    """audio="i2s2": BTN0 starts a recording of clip_len samples from the simulated Pmod I2S2;
    the RESULT goes out over the UART. The UART CLIP path keeps working in this mode."""
    clip_len = 24
    top = make_top(clip_len=clip_len, audio="i2s2")
    rng = random.Random(8)
    left = [rng.randint(-(1 << 23), (1 << 23) - 1) for _ in range(200)]
    right = [rng.randint(-(1 << 23), (1 << 23) - 1) for _ in range(200)]
    pcm = random_clip(9, clip_len)

    async def adc(ctx):
        await i2s_source(ctx, sclk=top.i2s_sclk, lrck=top.i2s_lrck, sdout=top.i2s_sdout,
                         left=left, right=right, rng=rng)

    async def press(ctx):
        await ctx.delay(2 * IDLE)            # the abandoned packet times out first
        ctx.set(top.button, 1)
        await ctx.delay(20e-6)
        ctx.set(top.button, 0)

    # a UART clip abandoned half-way leaves a partial clip in the accelerator: the press must
    # start a fresh one
    host = (Host(top, clip_len=clip_len).send(P.encode_clip(random_clip(11, clip_len))[:31])
            .then(press).expect(1).send(P.encode_clip(pcm)).expect(2))
    packets = host.run(deadline=0.02, background=[adc],
                       clocks={"sync": 1 / CLK, "audio": 1 / AUDIO_CLK_FREQ})
    assert len(packets) == 2
    res = packets[0]
    assert isinstance(res, P.Result)
    # the recording is clip_len consecutive left samples (top 16 bits) starting around the press
    samples = [w >> 8 for w in left]
    starts = [k for k in range(len(samples) - clip_len)
              if expected_result(samples[k:k + clip_len]) == (res.index, res.logits)]
    # pressed ~511 µs after the start: sample 8 (62.5 µs each) is the first one complete after
    assert starts and 7 <= starts[0] <= 10, starts
    assert 0 < res.cycles < (clip_len + 1) * CLK / 16000
    assert P.Result(*expected_result(pcm), packets[1].cycles) == packets[1]


# --- the stand-in accelerator the board tests rely on --------------------------------------------

@pytest.mark.parametrize("n_classes, logit_bits, pcm_stall", [(12, 32, 0), (10, 16, 3)])
def test_dummy_accelerator_with_backpressure(n_classes, logit_bits, pcm_stall):
    """Random stalls on both streams; a clip_start in the middle of a clip abandons it; logits
    wrap to logit_bits like dummy_result says."""
    clip_len = 37
    dut = DummyAccelerator(clip_len=clip_len, n_classes=n_classes, logit_bits=logit_bits,
                           pcm_stall=pcm_stall)
    rng = random.Random(n_classes)
    clips = [random_clip(s, clip_len) for s in range(3)] + [[-32768] * clip_len]

    async def producer(ctx):
        for i, clip in enumerate(clips):
            if i == 1:                       # 10 samples of a clip that is then abandoned
                await stream_put_all(ctx, dut.pcm, random_clip(99, 10), stall=0.3, rng=rng)
                ctx.set(dut.clip_start, 1)
                await ctx.tick()
                ctx.set(dut.clip_start, 0)
            await stream_put_all(ctx, dut.pcm, clip, stall=0.3, rng=rng)

    async def consumer(ctx):
        for clip in clips:
            await ctx.tick().repeat(rng.randint(0, 50))    # hold the result a while
            res = await stream_get(ctx, dut.result)
            want = dummy_result(clip, n_classes=n_classes, logit_bits=logit_bits)
            assert (res["index"], res["logits"]) == (want.index, want.logits)
            assert res["cycles"] >= clip_len * (pcm_stall + 1) - pcm_stall

    run_sim(dut, [producer, consumer], deadline=1e-2)


def test_dummy_registers_and_status():
    dut = DummyAccelerator(clip_len=4)

    async def tb(ctx):
        async def read(addr):
            ctx.set(dut.reg_addr, addr)
            return ctx.get(dut.reg_rdata)

        for addr in range(1, 6):
            ctx.set(dut.reg_addr, addr)
            ctx.set(dut.reg_wdata, 0x1000_0000 * addr + 7)
            ctx.set(dut.reg_we, 1)
            await ctx.tick()
        ctx.set(dut.reg_addr, 0)                 # status is read-only
        ctx.set(dut.reg_wdata, 3)
        await ctx.tick()
        ctx.set(dut.reg_we, 0)
        assert [await read(a) for a in range(16)] == [0] + [0x1000_0000 * a + 7
                                                           for a in range(1, 6)] + [0] * 10
        await stream_put_all(ctx, dut.pcm, [1, 2])
        assert await read(0) == 0b01             # busy
        await stream_put_all(ctx, dut.pcm, [3, 4])
        await ctx.tick().until(dut.result.valid)
        assert await read(0) == 0b11             # busy, result valid
        await stream_get(ctx, dut.result)
        await ctx.tick()
        assert await read(0) == 0

    run_sim(dut, [tb], deadline=1e-3)


def test_accelerator_signature():
    from nanomamba_hw.hw.accel_if import AcceleratorSignature, result_layout
    assert AcceleratorSignature() == AcceleratorSignature(12, 32)
    assert AcceleratorSignature(10) != AcceleratorSignature(12)
    layout = result_layout()
    assert layout.size == 4 + 12 * 32 + 32
    assert set(AcceleratorSignature().members) == {
        "pcm", "result", "clip_start", "reg_addr", "reg_wdata", "reg_we", "reg_rdata", "busy"}
    with pytest.raises(ValueError, match="n_classes"):
        result_layout(n_classes=17)
    assert dummy_result([1, 2, 3], n_classes=2) == (0, [4, 2])
    assert dummy_result([-5], n_classes=12).index == 7          # Python modulo
    assert dummy_result([30000, 30000], n_classes=1, logit_bits=16).logits == [60000 - 65536]


@pytest.mark.slow
def test_full_length_clip():
    """A real 16,000-sample clip through the UART (1.3 M cycles; about three minutes)."""
    top = ArtyA7Top(DummyAccelerator(), clk_freq=CLK, baud=BAUD, idle_timeout=IDLE)
    pcm = random_clip(10, 16000)
    packets = Host(top, clip_len=16000).send(P.encode_clip(pcm)).expect(1).run(deadline=0.5)
    assert len(packets) == 1
    check_result(packets[0], pcm)


def test_constructor_checks():
    def unused_dummy():
        accel = DummyAccelerator()
        accel._MustUse__silence = True      # never elaborated here, on purpose
        return accel
    with pytest.raises(ValueError, match="audio"):
        ArtyA7Top(unused_dummy(), audio="spdif")
    with pytest.raises(TypeError, match="AcceleratorSignature"):
        ArtyA7Top(object())
    with pytest.raises(ValueError, match="cannot be made"):
        ArtyA7Top(unused_dummy(), clk_freq=1e6, baud=230400)


@pytest.mark.parametrize("platform, audio", [(ArtyA7_35Platform, "uart"),
                                             (ArtyA7_35Platform, "i2s2"),
                                             (ArtyA7_100Platform, "uart")])
def test_vivado_build_plan(platform, audio, tmp_path):
    plan = platform().build(ArtyA7Top(DummyAccelerator(), audio=audio), do_build=False)
    plan.extract(tmp_path)
    verilog = (tmp_path / "top.v").read_text()
    xdc = (tmp_path / "top.xdc").read_text()
    tcl = (tmp_path / "top.tcl").read_text()
    assert "module top(" in verilog
    assert f"-part {platform.device}{platform.package}-{platform.speed}" in tcl
    for pin in ("E3", "C2", "A9", "D10", "H5", "J5", "T9", "T10", "G6", "K2"):
        assert f"LOC {pin} " in xdc, pin
    assert "create_clock -name clk100_0__io -period 10.0" in xdc
    if audio == "i2s2":
        for pin in ("D13", "B18", "A18", "K16", "D9"):   # JA 7..10, BTN0
            assert f"LOC {pin} " in xdc, pin
        assert "MMCME2_BASE" in verilog and "CLKOUT0_DIVIDE_F(78.125)" in verilog
        assert "nanomamba_audio_clock.xdc" in tcl
        assert "set_clock_groups -asynchronous" in (tmp_path /
                                                     "nanomamba_audio_clock.xdc").read_text()
    else:
        assert "MMCME2_BASE" not in verilog and "pmod_i2s2" not in xdc
