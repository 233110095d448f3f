"""Shared Signals Framework 1.0 (CAEP 1.0, RISC): Security Event Tokens received and sent."""
