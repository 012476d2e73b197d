"""The active/standby appliance pair: leader lease, replication, fencing and takeover."""
