"""DHCPv4: the sans-I/O codec (``codec``), the pure reply policy (``policy``) and the asyncio server
bound to one interface (``server``)."""
