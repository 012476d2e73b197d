"""SQL lives here and only here: one repository per aggregate."""
