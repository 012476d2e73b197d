"""Power drivers: one module per BMC technology, each the only place its vendor library is imported."""
