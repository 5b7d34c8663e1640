"""Board tops for the NanoMamba accelerator: one module per board (platform, clocks, UART, LEDs,
microphone), each wrapping any component with :class:`nanomamba_hw.hw.accel_if.AcceleratorSignature`.
"""
