"""Drivers: small interfaces to the outside world (BMCs today; switches and hypervisors later).

``types`` holds the values every driver speaks, ``base`` the interface and the policy it enforces
(retries, verification, per-BMC pacing, circuit breaker), ``loader`` finds implementations through
the ``appliance.power`` entry-point group.
"""
