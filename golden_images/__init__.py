"""The golden image library: validated import, copy-on-write OS volumes, capture and export."""
