"""Bit-accurate integer model of the accelerator: the specification the hardware must match."""
