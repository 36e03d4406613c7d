"""The reference workload generator (the functional model) and its lowering."""
