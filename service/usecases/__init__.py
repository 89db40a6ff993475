"""Use cases: each ties the pure core to the store for one job of the product (decide, contact rules, value, profiles)."""
