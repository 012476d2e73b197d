"""Business rules, one service per aggregate. Services raise appliance.errors, never HTTP errors."""
