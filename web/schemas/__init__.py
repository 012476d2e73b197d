"""Request models (strict: unknown fields are errors) and response shapes, one module per aggregate."""
