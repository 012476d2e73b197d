"""Plan scripts, OS build plans, deployment plans, custom attributes and answer-file rendering."""
