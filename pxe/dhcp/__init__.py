"""DHCPv4: sans-I/O codec (``codec``); policy and the asyncio server come later."""
