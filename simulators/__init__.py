"""Test doubles of exchanges: simulators that speak an exchange's wire protocol on loopback (not used by production
code; the application embeds one for the demo)."""
