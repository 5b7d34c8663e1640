"""Amaranth hardware: the accelerator stages, its interface, and the board-side UART and I2S."""
