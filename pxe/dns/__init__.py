"""DNS for provisioned servers and the appliance: authoritative for one domain, forwarding the rest.

- ``zone``: ``Record`` and ``Zone`` - the validated record set, reverse zones and synthesized PTRs;
  ``Zone.replace`` swaps the whole set atomically.
- ``resolver``: sans-I/O ``answer(query_bytes, zone)`` -> a ready ``Reply``, a ``Forward`` verdict
  for names outside the zone, or ``None`` to drop. dnslib is the wire codec.
- ``server``: ``DnsServer``, the asyncio UDP/TCP transport and the upstream forwarder.
"""
