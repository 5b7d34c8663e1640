"""I2S receiver (Pmod I2S2 / CS5343 line-in) in the Amaranth simulator: a behavioural I2S ADC in
the ``audio`` domain answers the receiver's own SCLK/LRCK, and the ``sync``-domain stream must
deliver the left channel's top 16 bits in order, across two unrelated clocks."""

import random

import pytest

from nanomamba_hw.hw.i2s import AUDIO_CLK_FREQ, AUDIO_CLK_PER_SAMPLE, I2SReceiver
from nanomamba_hw.hw.sim_util import i2s_source, run_sim, stream_get_n

AUDIO_PERIOD = 1 / AUDIO_CLK_FREQ


def _words(rng, n):
    extremes = [(1 << 23) - 1, -(1 << 23), -1, 0, 255, 256, -256, -257]
    return extremes + [rng.randint(-(1 << 23), (1 << 23) - 1) for _ in range(n)]


# sync faster than audio, and slower than audio; neither a rational multiple of the other
@pytest.mark.parametrize("sync_freq", [13.37e6, 2.9e6])
@pytest.mark.parametrize("channel", ["left", "right"])
def test_samples_cross_into_sync_in_order(sync_freq, channel):
    rng = random.Random(int(sync_freq) ^ len(channel))
    left, right = _words(rng, 24), _words(rng, 24)[::-1]
    want = [w >> 8 for w in (left if channel == "left" else right)]   # top 16 bits, floor
    dut = I2SReceiver(channel=channel, fifo_depth=8)

    async def adc(ctx):
        await i2s_source(ctx, sclk=dut.sclk, lrck=dut.lrck, sdout=dut.sdout, left=left,
                         right=right, rng=rng)

    async def consumer(ctx):
        # stalls of up to ~3 sample periods: the FIFO (8 deep) absorbs them
        three_samples = int(3 * AUDIO_CLK_PER_SAMPLE * sync_freq / AUDIO_CLK_FREQ)
        got = await stream_get_n(ctx, dut.o, len(want), stall=0.2, max_stall=three_samples,
                                 rng=rng)
        assert got == want
        assert ctx.get(dut.overflow) == 0

    run_sim(dut, [consumer], background=[adc],
            clocks={"sync": 1 / sync_freq, "audio": AUDIO_PERIOD},
            deadline=(len(want) + 8) / 16000)


def test_clock_ratios_and_phases():
    """MCLK = audio/2 (256·Fs), SCLK = audio/8 (64·Fs), LRCK = audio/512 (Fs), LRCK changes
    only while SCLK falls, as I2S requires."""
    dut = I2SReceiver()
    edges = {"mclk": [], "sclk": [], "lrck": []}

    async def watch(ctx):
        cycle = 0
        prev = None
        lrck_on_sclk_fall = []
        async for _, _, mclk, sclk, lrck in ctx.tick("audio").sample(dut.mclk, dut.sclk,
                                                                     dut.lrck):
            now = {"mclk": mclk, "sclk": sclk, "lrck": lrck}
            if prev is not None:
                for k in now:
                    if now[k] and not prev[k]:
                        edges[k].append(cycle)
                if now["lrck"] != prev["lrck"]:
                    lrck_on_sclk_fall.append(prev["sclk"] == 1 and now["sclk"] == 0)
            prev = now
            cycle += 1
            if cycle > 3 * AUDIO_CLK_PER_SAMPLE:
                break
        assert lrck_on_sclk_fall and all(lrck_on_sclk_fall)

    run_sim(dut, [watch], clocks={"sync": 1e-7, "audio": AUDIO_PERIOD})
    for name, period in (("mclk", 2), ("sclk", 8), ("lrck", AUDIO_CLK_PER_SAMPLE)):
        gaps = {b - a for a, b in zip(edges[name], edges[name][1:])}
        assert gaps == {period}, (name, gaps)
    assert AUDIO_CLK_FREQ / 2 == 256 * 16000


def test_overflow_when_consumer_stalls():
    rng = random.Random(3)
    left = _words(rng, 30)
    dut = I2SReceiver(fifo_depth=4)

    async def adc(ctx):
        await i2s_source(ctx, sclk=dut.sclk, lrck=dut.lrck, sdout=dut.sdout, left=left, rng=rng)

    async def consumer(ctx):
        await ctx.delay(10 / 16000)          # 10 samples arrive, only 4 fit
        assert ctx.get(dut.overflow) == 1
        got = await stream_get_n(ctx, dut.o, 4)
        assert got == [w >> 8 for w in left[:4]]   # the oldest ones were kept, in order

    run_sim(dut, [consumer], background=[adc], clocks={"sync": 1 / 5e6, "audio": AUDIO_PERIOD},
            deadline=20 / 16000)


def test_bad_channel():
    with pytest.raises(ValueError, match="channel"):
        I2SReceiver(channel="mid")
