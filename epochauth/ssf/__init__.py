"""Shared Signals Framework 1.0 (CAEP, RISC): Security Event Tokens received from and sent to peers."""
