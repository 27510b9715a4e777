"""BingX USDT-M perpetual swaps: the adapter (REST + websockets) and a simulator of the same protocol."""
