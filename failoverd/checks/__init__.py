"""Health checks that judge the node by what a user of the site would see.

Each check type has one module (http, postgres, squid, command) with a ``probe()`` that does one
measurement within its budget and says what it saw; ``runner`` runs them concurrently with
rise/fall hysteresis so that one hung or flapping check neither stalls the daemon nor flaps the
node's health.
"""
