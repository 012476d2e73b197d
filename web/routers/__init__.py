"""Thin routers: parse, call a service, shape the response. One module per aggregate."""
