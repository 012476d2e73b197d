"""The agent that runs on a target machine: heartbeat, inventory, image streaming."""
