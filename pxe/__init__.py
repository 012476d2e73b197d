"""Network boot services: DHCP, TFTP, HTTP/iPXE boot and DNS.

Protocol code here is sans-I/O; servers are thin asyncio transports, and everything they need to
know about a machine comes through the narrow protocols in ``pxe.backend`` (built by the network
boot issue). This package never imports the database or ``appliance``.
"""
