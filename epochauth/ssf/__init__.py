"""Shared Signals Framework 1.0 (SSF) and CAEP 1.0: the transmitter and the receiver."""
